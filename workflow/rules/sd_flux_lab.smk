# sd_flux_lab: base SD1.5/SDXL-architecture pipelines (what DMD2 distils) and a fine-tuning experiment.
#
#   tiny:  base pipelines are random tiny ones (built, not trained); every step runs for a few steps (smoke)
#   toy:   VAE and both UNets trained from scratch on the digits captions, then the SD1.5 one fine-tuned on the
#          blue digits only (a folder-structured subset); FD + prompt accuracy before/after, on blue and the rest
#   paper: base pipelines are the downloaded hub pipelines (downloads/sd15, downloads/sdxl_base)
#
# CONTRACT (DMD2 consumes these): results/{scale}/sd_flux_lab/base_sd15/pipeline/ (StableDiffusionPipeline) and
# results/{scale}/sd_flux_lab/base_sdxl/pipeline/ (StableDiffusionXLPipeline), from rules sd_flux_lab_base_sd15 /
# sd_flux_lab_base_sdxl whose declared output is .../pipeline/model_index.json.

SFL = "projects/sd_flux_lab"
SFL_FINETUNE = config["sd_flux_lab_finetune"]  # steps per scale, lr, validation prompts
# the before/after sample and metric sets: model -> the table's row label; split -> the prompts sampled and the
# reference images (data/<scale>/sd_flux_lab/reference/<split>) and the table's title
SFL_MODELS = {"base_sd15": "before (SD1.5 base)", "finetune_blue": "after (fine-tuned on blue)"}
SFL_SPLITS = {"subset": "sd_flux_lab: fine-tuning SD1.5 on blue digits, evaluated on blue prompts",
              "rest": "sd_flux_lab: fine-tuning SD1.5 on blue digits, evaluated on the other colours"}
# seeds (issue 18), config.yaml sd_flux_lab_seeds: the fine-tune is trained once per seed (seed N: the run
# finetune_blue_seed<N>, train_sd.py seed=N: data order, noise, caption dropout), the base (one trained model)
# sampled once per seed (base_sd15_seed<N>: make_samples.py seed_offset=N*1000000, noise disjoint from seed 0's);
# seed 0 is the bare name. The tables show mean ± std over the seeds and judge after vs before against that spread.
SFL_SEEDS = config["sd_flux_lab_seeds"]


def number(x):
    """A number as a command line option: 5e-05 -> 5e-5 (as the recipes write it)."""
    text = repr(x)
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if e else text


wildcard_constraints:
    sfl_arch=one_of(SFL_DOWNLOADS),
    sfl_model=f"({one_of(SFL_MODELS)}){SEED_SUFFIX}",
    sfl_split=one_of(SFL_SPLITS),


rule sd_flux_lab_download:
    output:
        "downloads/{name}/model_index.json",
    log:
        "logs/sd_flux_lab_download.{name}.log",
    wildcard_constraints:
        name=one_of(os.path.basename(d) for d in SFL_DOWNLOADS.values()),
    conda:
        conda_env("sd_flux_lab")
    params:
        arch=lambda w: "sdxl" if w.name == "sdxl_base" else "sd15",
    shell:
        step(SFL + "/download.py arch={params.arch} out_dir=downloads/{wildcards.name}")


rule sd_flux_lab_prepare:
    input:
        "data/{scale}/digits",
    output:
        directory("data/{scale}/sd_flux_lab"),
    log:
        "logs/{scale}/sd_flux_lab_prepare.log",
    conda:
        conda_env("sd_flux_lab")
    shell:
        step(SFL + "/prepare.py scale={wildcards.scale} digits_dir={input} out_dir={output} subset=blue")


rule sd_flux_lab_vae:
    input:
        "data/{scale}/sd_flux_lab",
    output:
        "results/{scale}/sd_flux_lab/vae/vae/config.json",
        **provenance("results/{scale}/sd_flux_lab/vae", "sd_flux_lab", "sd_flux_lab_vae"),
        **curves("results/{scale}/sd_flux_lab/vae", "sd_flux_lab", "sd_flux_lab_vae"),
    log:
        "logs/{scale}/sd_flux_lab_vae.log",
    conda:
        conda_env("sd_flux_lab")
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=120),
    shell:
        launch(SFL + "/train_vae.py scale={wildcards.scale} data_dir={input}/train "
               "run_dir=results/{wildcards.scale}/sd_flux_lab/vae")


# from-scratch training of a base UNet (toy): the VAE above, the preset's frozen random text encoders
rule sd_flux_lab_train_base:
    input:
        data="data/{scale}/sd_flux_lab",
        vae="results/{scale}/sd_flux_lab/vae/vae/config.json",
    output:
        "results/{scale}/sd_flux_lab/train_base_{sfl_arch}/pipeline/model_index.json",
        **provenance("results/{scale}/sd_flux_lab/train_base_{sfl_arch}", "sd_flux_lab",
                     "sd_flux_lab_train_base {sfl_arch}"),
        **curves("results/{scale}/sd_flux_lab/train_base_{sfl_arch}", "sd_flux_lab",
                 "sd_flux_lab_train_base {sfl_arch}"),
    log:
        "logs/{scale}/sd_flux_lab_train_base.{sfl_arch}.log",
    conda:
        conda_env("sd_flux_lab")
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=240),
    shell:
        launch(SFL + "/train_sd.py scale={wildcards.scale} base=preset arch={wildcards.sfl_arch} "
               "vae=results/{wildcards.scale}/sd_flux_lab/vae/vae data_dir={input.data}/train "
               "run_dir=results/{wildcards.scale}/sd_flux_lab/train_base_{wildcards.sfl_arch}")


def _sfl_base_source(arch, scale):
    if scale == "tiny":
        return "build"
    if scale == "paper":
        return SFL_DOWNLOADS[arch]
    return f"results/{scale}/sd_flux_lab/train_base_{arch}"


def _sfl_base_input(arch, scale):
    source = _sfl_base_source(arch, scale)
    if source == "build":
        return []
    return [source + "/model_index.json" if scale == "paper" else source + "/pipeline/model_index.json"]


rule sd_flux_lab_base_sd15:
    input:
        lambda w: _sfl_base_input("sd15", w.scale),
    output:
        "results/{scale}/sd_flux_lab/base_sd15/pipeline/model_index.json",
    log:
        "logs/{scale}/sd_flux_lab_base_sd15.log",
    conda:
        conda_env("sd_flux_lab")
    params:
        source=lambda w: _sfl_base_source("sd15", w.scale),
    shell:
        step(SFL + "/base.py scale={wildcards.scale} arch=sd15 source={params.source} "
             "out_dir=results/{wildcards.scale}/sd_flux_lab/base_sd15")


rule sd_flux_lab_base_sdxl:
    input:
        lambda w: _sfl_base_input("sdxl", w.scale),
    output:
        "results/{scale}/sd_flux_lab/base_sdxl/pipeline/model_index.json",
    log:
        "logs/{scale}/sd_flux_lab_base_sdxl.log",
    conda:
        conda_env("sd_flux_lab")
    params:
        source=lambda w: _sfl_base_source("sdxl", w.scale),
    shell:
        step(SFL + "/base.py scale={wildcards.scale} arch=sdxl source={params.source} "
             "out_dir=results/{wildcards.scale}/sd_flux_lab/base_sdxl")


# fine-tune the SD1.5 base on the blue digits only: data/<scale>/sd_flux_lab/train/_blue (prompts = folder names)
rule sd_flux_lab_finetune:
    input:
        data="data/{scale}/sd_flux_lab",
        base="results/{scale}/sd_flux_lab/base_sd15/pipeline/model_index.json",
    output:
        "results/{scale}/sd_flux_lab/{sfl_finetune}/pipeline/model_index.json",
        **provenance("results/{scale}/sd_flux_lab/{sfl_finetune}", "sd_flux_lab", "sd_flux_lab_finetune {sfl_finetune}"),
        **curves("results/{scale}/sd_flux_lab/{sfl_finetune}", "sd_flux_lab", "sd_flux_lab_finetune {sfl_finetune}"),
    log:
        "logs/{scale}/sd_flux_lab_finetune.{sfl_finetune}.log",
    wildcard_constraints:
        sfl_finetune=f"finetune_blue{SEED_SUFFIX}",
    conda:
        conda_env("sd_flux_lab")
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=120),
    params:
        steps=lambda w: SFL_FINETUNE["steps"][w.scale],
        seed=lambda w: split_seed(w.sfl_finetune)[1],
    shell:
        # lr (config.yaml sd_flux_lab_finetune): at 2e-4 the 400 steps on blue alone drifted the toy base
        launch(SFL + "/train_sd.py scale={wildcards.scale} base=results/{wildcards.scale}/sd_flux_lab/base_sd15 "
               f"data_dir={{input.data}}/train/_blue max_steps={{params.steps}} lr={number(SFL_FINETUNE['lr'])} "
               f"warmup_steps=0 validation_prompts='[{','.join(SFL_FINETUNE['validation_prompts'])}]' "
               "run_dir=results/{wildcards.scale}/sd_flux_lab/{wildcards.sfl_finetune} seed={params.seed}")


def _sfl_pipeline(w):
    """The pipeline a sample folder samples: a fine-tune seed's own run; the base's seed replicas the one base."""
    model, seed = split_seed(w.sfl_model)
    return f"results/{w.scale}/sd_flux_lab/{w.sfl_model if model == 'finetune_blue' else model}"


rule sd_flux_lab_samples:
    input:
        data="data/{scale}/sd_flux_lab",
        model=lambda w: _sfl_pipeline(w) + "/pipeline/model_index.json",
    output:
        # the grid (one row per prompt) in the report; {grid,grid}: a pattern needs a wildcard, this one matches once
        reported(directory("results/{scale}/sd_flux_lab/samples/{sfl_model}_{sfl_split}"), "sd_flux_lab", "Samples",
                 "{sfl_model} {sfl_split}", "sd_flux_lab_samples", patterns=["{grid,grid}.png"]),
    log:
        "logs/{scale}/sd_flux_lab_samples.{sfl_model}.{sfl_split}.log",
    conda:
        conda_env("sd_flux_lab")
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=60),
    params:
        prompts=lambda w: "train/_blue" if w.sfl_split == "subset" else "train exclude=blue",
        per_prompt=lambda w: config["sd_flux_lab_samples_per_prompt"][w.scale] // (1 if w.sfl_split == "subset" else 4),
        pipeline=_sfl_pipeline,
        # a fine-tune seed samples seed 0's noise (its own weights differ); a base seed replica new noise
        seed_offset=lambda w: 0 if w.sfl_model.startswith("finetune_blue") else split_seed(w.sfl_model)[1] * 1_000_000,
    shell:
        launch(SFL + "/make_samples.py scale={wildcards.scale} pipeline={params.pipeline} "
               "prompts_from={input.data}/{params.prompts} per_prompt={params.per_prompt} "
               "seed_offset={params.seed_offset} save_images=true out_dir={output}")


rule sd_flux_lab_evaluate:
    input:
        samples="results/{scale}/sd_flux_lab/samples/{sfl_model}_{sfl_split}",
        data="data/{scale}/sd_flux_lab",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        "results/{scale}/metrics/sd_flux_lab/{sfl_model}_{sfl_split}.json",
    log:
        "logs/{scale}/sd_flux_lab_evaluate.{sfl_model}.{sfl_split}.log",
    conda:
        conda_env("sd_flux_lab")
    threads: config["local_threads"]
    resources:
        **heavy(mem_mb=4000, runtime=30),
    params:
        # tables.py joins '<label>_seed<N>' rows with '<label>' as one row over the seeds
        experiment=lambda w: SFL_MODELS[split_seed(w.sfl_model)[0]]
                             + ("_seed%d" % split_seed(w.sfl_model)[1] if split_seed(w.sfl_model)[1] else ""),
    shell:
        launch("shared/evaluate.py scale={wildcards.scale} images={input.samples}/images "
               "reference={input.data}/reference/{wildcards.sfl_split} extractor=digits:{input.features} "
               "metrics=[fd,prompt_accuracy] experiment='{params.experiment}' checkpoint={wildcards.sfl_split} "
               "sampler=ddim steps=25 out={output}")


rule sd_flux_lab_table:
    input:
        before=lambda w: [f"results/{w.scale}/metrics/sd_flux_lab/{seeded_name('base_sd15', s)}_{w.sfl_split}.json"
                          for s in SFL_SEEDS[w.scale]],
        after=lambda w: [f"results/{w.scale}/metrics/sd_flux_lab/{seeded_name('finetune_blue', s)}_{w.sfl_split}.json"
                         for s in SFL_SEEDS[w.scale]],
    output:
        md="results/{scale}/tables/sd_flux_lab_{sfl_split}.md",
        csv="results/{scale}/tables/sd_flux_lab_{sfl_split}.csv",
        claims="results/{scale}/tables/sd_flux_lab_{sfl_split}.claims.json",
        html=reported("results/{scale}/tables/sd_flux_lab_{sfl_split}.html", "sd_flux_lab", "Tables",
                      "sd_flux_lab_{sfl_split}", "project_table"),
    log:
        "logs/{scale}/sd_flux_lab_table.{sfl_split}.log",
    conda:
        conda_env("sd_flux_lab")
    params:
        title=lambda w: SFL_SPLITS[w.sfl_split],
        inputs=lambda w, input: "[" + ",".join([*input.before, *input.after]) + "]",
        claims="[[" + SFL_MODELS["finetune_blue"] + "," + SFL_MODELS["base_sd15"] + "]]",
    shell:
        step("shared/tables.py scale={wildcards.scale} inputs={params.inputs} claims='{params.claims}' "
             "title='{params.title}' out_md={output.md} out_csv={output.csv} out_claims={output.claims} "
             "notes='[FD = Frechet distance of digits-CNN features to the train images of that split (lower is better),"
             "prompt_accuracy = the digits CNN sees the digit and colour the prompt asked for (higher is better),"
             "base = VAE + UNet trained from scratch on all toy digits (1200 steps on CPU); fine-tuned 400 steps on "
             "data/<scale>/sd_flux_lab/train/_blue,"
             "seeds = training seeds of the fine-tune and sampling seeds of the base (config.yaml sd_flux_lab_seeds),"
             "how to read these toy numbers (and how weakly the toy base uses the text) = "
             "projects/sd_flux_lab/README.md]'")


def sd_flux_lab_outputs(scale):
    return [*[f"results/{scale}/tables/sd_flux_lab_{s}.md" for s in SFL_SPLITS],
            *[f"results/{scale}/sd_flux_lab/samples/{m}_{s}" for m in SFL_MODELS for s in SFL_SPLITS],  # grid.png
            f"results/{scale}/sd_flux_lab/base_sd15/pipeline/model_index.json",
            f"results/{scale}/sd_flux_lab/base_sdxl/pipeline/model_index.json"]


@register_targets(in_default=False)
def sd_flux_lab_targets(scale):
    if scale == "tiny":  # smoke stays fast: the contract pipelines and one fine-tuning run, no sampling/eval
        return [f"results/{scale}/sd_flux_lab/{m}/pipeline/model_index.json"
                for m in ("base_sd15", "base_sdxl", "finetune_blue")]
    return sd_flux_lab_outputs(scale)


rule sd_flux_lab:
    input:
        sd_flux_lab_outputs(config["scale"]),
