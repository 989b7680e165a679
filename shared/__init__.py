"""The thin library every project uses: config, launching, data, training, samplers, metrics, tables."""
