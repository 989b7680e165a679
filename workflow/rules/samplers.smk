# Sampler comparison (shared.samplers): quality vs NFE per sampler on a small class-conditional digits model.
DD = "results/{scale}/digits_diffusion"
SC = "results/{scale}/sampler_compare"


rule train_digits_diffusion:
    input:
        "data/{scale}/digits",
    output:
        metrics=f"{DD}/metrics.json",
        **curves(DD, "samplers", "digits diffusion"),
        **provenance(DD, "samplers", "train_digits_diffusion"),
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
    return reported(f"{SC}/{name}.png", "samplers", "Plots", what, "sampler_plots")


rule compare_samplers:
    input:
        model=rules.train_digits_diffusion.output.metrics,
        features=rules.train_digits_features.output.weights,
        data="data/{scale}/digits",
    output:
        grid=reported(f"{SC}/grid.png", "samplers", "Samples", "sampler x steps grid", "sampler_grid"),
        table=f"{SC}/results.md",
        csv=f"{SC}/results.csv",
        html=reported(f"{SC}/results.html", "samplers", "Tables", "samplers x steps", "sampler_table"),
        fd_nfe=_sc_plot("fd_vs_nfe", "FD vs NFE"),
        acc_nfe=_sc_plot("accuracy_vs_nfe", "prompt accuracy vs NFE"),
        fd_guidance=_sc_plot("fd_vs_guidance", "FD vs guidance"),
        acc_guidance=_sc_plot("accuracy_vs_guidance", "prompt accuracy vs guidance"),
        config=reported(f"{SC}/config.yaml", "samplers", "Provenance", "compare_samplers config.yaml", "provenance"),
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
