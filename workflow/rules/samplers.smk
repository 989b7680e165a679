# Sampler comparison (shared.samplers): quality vs NFE per sampler on a small class-conditional digits model.


rule train_digits_diffusion:
    input:
        "data/{scale}/digits",
    output:
        "results/{scale}/digits_diffusion/metrics.json",
    log:
        "logs/{scale}/train_digits_diffusion.log",
    conda:
        conda_env("shared")
    threads: train_threads
    resources:
        **heavy(gpus=1, cpus_per_task=train_threads, mem_mb=4000, runtime=60),
    shell:
        launch("shared/digits/train_diffusion.py scale={wildcards.scale} data_dir={input} "
               "out_dir=results/{wildcards.scale}/digits_diffusion")


rule compare_samplers:
    input:
        model="results/{scale}/digits_diffusion/metrics.json",
        features="results/{scale}/digits_features/features.safetensors",
        data="data/{scale}/digits",
    output:
        grid="results/{scale}/sampler_compare/grid.png",
        table="results/{scale}/sampler_compare/results.md",
    log:
        "logs/{scale}/compare_samplers.log",
    conda:
        conda_env("shared")
    threads: step_threads
    resources:
        **heavy(gpus=1, mem_mb=4000, runtime=60),
    shell:
        launch("shared/samplers/compare.py scale={wildcards.scale} model_dir=results/{wildcards.scale}/digits_diffusion/model "
               "features={input.features} reference_dir={input.data}/test out_dir=results/{wildcards.scale}/sampler_compare")


@register_targets
def sampler_targets(scale):
    return [f"results/{scale}/sampler_compare/grid.png", f"results/{scale}/sampler_compare/results.md"]
