# Sampler comparison (shared.samplers): quality vs NFE per sampler on a small class-conditional digits model.
DD = "results/{scale}/digits_diffusion"
SC = "results/{scale}/sampler_compare"


rule train_digits_diffusion:
    input:
        "data/{scale}/digits",
    output:
        metrics=f"{DD}/metrics.json",
        curves=report(f"{DD}/curves.png", caption="../report/training_curves.rst", category="Samplers",
                      subcategory="Training", labels={"name": "digits diffusion curves"}),
        config=report(f"{DD}/config.yaml", caption="../report/provenance.rst", category="Provenance",
                      labels={"name": "train_digits_diffusion config.yaml"}),
        run=report(f"{DD}/run.json", caption="../report/provenance.rst", category="Provenance",
                   labels={"name": "train_digits_diffusion run.json"}),
    log:
        "logs/{scale}/train_digits_diffusion.log",
    conda:
        conda_env("shared")
    threads: train_threads
    resources:
        **heavy(gpus=1, cpus_per_task=train_threads, mem_mb=4000, runtime=60),
    shell:
        launch("shared/toy/train_diffusion.py scale={wildcards.scale} data_dir={input} "
               "out_dir=results/{wildcards.scale}/digits_diffusion")


def _sc_plot(name, what):
    return report(f"{SC}/{name}.png", caption="../report/sampler_plots.rst", category="Samplers",
                  subcategory="Quality vs NFE and guidance", labels={"name": what})


rule compare_samplers:
    input:
        model=rules.train_digits_diffusion.output.metrics,
        features=rules.train_digits_features.output.weights,
        data="data/{scale}/digits",
    output:
        grid=report(f"{SC}/grid.png", caption="../report/sampler_grid.rst", category="Samplers",
                    subcategory="Samples", labels={"name": "sampler x steps grid"}),
        table=f"{SC}/results.md",
        csv=f"{SC}/results.csv",
        html=report(f"{SC}/results.html", caption="../report/sampler_table.rst", category="Samplers",
                    subcategory="Tables", labels={"name": "samplers x steps"}),
        fd_nfe=_sc_plot("fd_vs_nfe", "FD vs NFE"),
        acc_nfe=_sc_plot("accuracy_vs_nfe", "prompt accuracy vs NFE"),
        fd_guidance=_sc_plot("fd_vs_guidance", "FD vs guidance"),
        acc_guidance=_sc_plot("accuracy_vs_guidance", "prompt accuracy vs guidance"),
        config=report(f"{SC}/config.yaml", caption="../report/provenance.rst", category="Provenance",
                      labels={"name": "compare_samplers config.yaml"}),
    log:
        "logs/{scale}/compare_samplers.log",
    conda:
        conda_env("shared")
    threads: step_threads
    resources:
        **heavy(gpus=1, mem_mb=4000, runtime=60),
    shell:
        launch("shared/toy/sampler_compare.py scale={wildcards.scale} model_dir=results/{wildcards.scale}/digits_diffusion/model "
               "features={input.features} reference_dir={input.data}/test out_dir=results/{wildcards.scale}/sampler_compare")


@register_targets
def sampler_targets(scale):
    return [f"results/{scale}/sampler_compare/grid.png", f"results/{scale}/sampler_compare/results.md",
            f"results/{scale}/sampler_compare/results.csv"]
