# The toy digits slice every project's toy-scale metrics stand on: dataset, feature CNN, real-vs-real table.


rule prepare_digits:
    output:
        directory("data/{scale}/digits"),
    log:
        "logs/{scale}/prepare_digits.log",
    conda:
        conda_env("shared")
    shell:
        step("shared/toy/prepare.py scale={wildcards.scale} out_dir={output}")


rule train_digits_features:
    input:
        "data/{scale}/digits",
    conda:
        conda_env("shared")
    output:
        weights="results/{scale}/digits_features/features.safetensors",
        metrics="results/{scale}/digits_features/metrics.json",
        **provenance("results/{scale}/digits_features", "digits", "train_digits_features"),
        **curves("results/{scale}/digits_features", "digits", "train_digits_features"),
    log:
        "logs/{scale}/train_digits_features.log",
    threads: train_threads
    resources:
        **heavy(gpus=1, cpus_per_task=train_threads, mem_mb=4000, runtime=30),
    shell:
        launch("shared/toy/train_features.py scale={wildcards.scale} data_dir={input} "
               "out_dir=results/{wildcards.scale}/digits_features")


rule evaluate_digits_real:
    input:
        data="data/{scale}/digits",
        features="results/{scale}/digits_features/features.safetensors",
    conda:
        conda_env("shared")
    output:
        "results/{scale}/metrics/digits/real_test_vs_train.json",
    log:
        "logs/{scale}/evaluate_digits_real.log",
    threads: step_threads
    resources:
        **heavy(mem_mb=4000, runtime=30),
    shell:
        launch("shared/evaluate.py scale={wildcards.scale} images={input.data}/test reference={input.data}/train "
               "extractor=digits:{input.features} metrics=[fd,kid,prompt_accuracy] "
               "experiment=real_test_vs_train checkpoint=none sampler=none steps=0 out={output} "
               "method='real test images (no model)' project=digits")


rule table_digits:
    input:
        metrics="results/{scale}/metrics/digits/real_test_vs_train.json",
    conda:
        conda_env("shared")
    output:
        md="results/{scale}/tables/digits.md",
        csv="results/{scale}/tables/digits.csv",
        html=reported("results/{scale}/tables/digits.html", "digits", "Tables", "real test vs train", "digits_table"),
    log:
        "logs/{scale}/table_digits.log",
    shell:
        step("shared/tables.py scale={wildcards.scale} inputs=[{input.metrics}] "
             "title='Toy digits: real test split vs train split' out_md={output.md} out_csv={output.csv}")


@register_targets
def digits_targets(scale):
    return [f"results/{scale}/tables/digits.md"]
