# DMD2: distil diffusion teachers into 1-4 step generators (projects/dmd2).
#   toy/tiny: an EDM teacher trained on the digits (ImageNet-64 analogue) and sd_flux_lab's SD1.5/SDXL teachers
#   paper:    released weights (SDXL base + DMD2's SDXL 4-step UNet), COCO prompts, FID at 512 px
# Targets: eval_imagenet64, eval_sdxl, eval_sd15 (at config["scale"]); tiny versions join `smoke`.
# Seeds (issue 18): a distilled row of a tiny/toy table is trained once per seed of config["dmd2_seeds"]; seed 0 is
# the run named by the recipe (rule dmd2_train, its command as before, so existing runs stay valid), seed N the
# replica <recipe>_seed<N> (rule dmd2_train_seed, train.py's seed=N: data order, noise, GAN head init). Sampling
# and evaluation treat a replica as one more run; the table (shared/tables.py) merges them into mean ± std.
# A teacher row that a claim names is sampled once per seed of config["dmd2_sampling_seeds"] (the same teacher;
# <row>_seed<N> by rule dmd2_sample_teacher_seed), so its row too is a mean ± std.

from projects.dmd2.recipes import TOY_RECIPES as DMD2_TOY_RECIPES

DMD2 = "projects/dmd2"
DMD2_SD_RECIPES = {"sd15": "toy_sd15_1step", "sdxl": "toy_sdxl_4step"}
DMD2_PAPER = {"sdxl": 19.32, "sd15": 8.35, "imagenet64": 1.28}  # FIDs reported in the DMD2 paper


def dmd2_teacher_pipeline(scale, arch):
    """The contract with sd_flux_lab: complete diffusers pipeline folders produced by rules
    sd_flux_lab_base_sd15 / sd_flux_lab_base_sdxl."""
    return f"results/{scale}/sd_flux_lab/base_{arch}/pipeline"


rule dmd2_prepare_digits:
    input:
        "data/{scale}/digits",
    output:
        directory("data/{scale}/dmd2/digits"),
    log:
        "logs/{scale}/dmd2_prepare_digits.log",
    conda:
        conda_env("dmd2")
    shell:
        step(f"{DMD2}/prepare.py scale={{wildcards.scale}} kind=edm images={{input}}/train "
             f"eval_images={{input}}/test out_dir={{output}}")


rule dmd2_prepare_sd:
    input:
        digits="data/{scale}/digits",
        pipe=lambda w: dmd2_teacher_pipeline(w.scale, w.arch) + "/model_index.json",
    output:
        directory("data/{scale}/dmd2/{arch}"),
    log:
        "logs/{scale}/dmd2_prepare_sd.{arch}.log",
    wildcard_constraints:
        arch="sd15|sdxl",
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=60),
    conda:
        conda_env("dmd2")
    shell:
        launch(f"{DMD2}/prepare.py scale={{wildcards.scale}} kind=sd "
               f"teacher=results/{{wildcards.scale}}/sd_flux_lab/base_{{wildcards.arch}}/pipeline "
               f"images={{input.digits}}/train eval_images={{input.digits}}/test out_dir={{output}}")


rule dmd2_teacher:
    input:
        "data/{scale}/dmd2/digits",
    output:
        "results/{scale}/dmd2/teacher/model.safetensors",
        **provenance("results/{scale}/dmd2/teacher", "dmd2", "dmd2_teacher"),
        **curves("results/{scale}/dmd2/teacher", "dmd2", "dmd2_teacher"),
    log:
        "logs/{scale}/dmd2_teacher.log",
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=4000, runtime=240),
    conda:
        conda_env("dmd2")
    shell:
        launch(f"{DMD2}/train_teacher.py scale={{wildcards.scale}} data={{input}}/real.lmdb "
               f"run_dir=results/{{wildcards.scale}}/dmd2/teacher threads=1")


def _dmd2_train_inputs(w):
    if w.recipe.startswith("digits"):
        return {"teacher": f"results/{w.scale}/dmd2/teacher/model.safetensors", "data": f"data/{w.scale}/dmd2/digits"}
    arch = "sdxl" if "sdxl" in w.recipe else "sd15"
    return {"teacher": dmd2_teacher_pipeline(w.scale, arch) + "/model_index.json", "data": f"data/{w.scale}/dmd2/{arch}"}


DMD2_SEED_SUFFIX = r"_seed[1-9][0-9]*"  # seed 0 has no suffix: it is the recipe's own run


def dmd2_run(name, seed):
    """The run (and sample/eval folder) name of a distilled row trained with `seed`."""
    return name if seed == 0 else f"{name}_seed{seed}"


rule dmd2_train:
    input:
        unpack(_dmd2_train_inputs),
    output:
        "results/{scale}/dmd2/runs/{recipe}/generator.safetensors",
        **provenance("results/{scale}/dmd2/runs/{recipe}", "dmd2", "dmd2_train {recipe}"),
        **curves("results/{scale}/dmd2/runs/{recipe}", "dmd2", "dmd2_train {recipe}"),
    log:
        "logs/{scale}/dmd2_train.{recipe}.log",
    wildcard_constraints:
        recipe=one_of(DMD2_TOY_RECIPES),
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=600),
    conda:
        conda_env("dmd2")
    params:
        teacher=lambda w, input: os.path.dirname(input.teacher),
    shell:
        launch(f"{DMD2}/train.py scale={{wildcards.scale}} recipe={{wildcards.recipe}} teacher={{params.teacher}} "
               f"data={{input.data}}/real.lmdb run_dir=results/{{wildcards.scale}}/dmd2/runs/{{wildcards.recipe}} threads=1")


# a seed replica: the same command with the replica's run_dir and seed=N
rule dmd2_train_seed:
    input:
        unpack(_dmd2_train_inputs),
    output:
        "results/{scale}/dmd2/runs/{recipe}_seed{seed}/generator.safetensors",
        **provenance("results/{scale}/dmd2/runs/{recipe}_seed{seed}", "dmd2", "dmd2_train {recipe}_seed{seed}"),
        **curves("results/{scale}/dmd2/runs/{recipe}_seed{seed}", "dmd2", "dmd2_train {recipe}_seed{seed}"),
    log:
        "logs/{scale}/dmd2_train.{recipe}_seed{seed}.log",
    wildcard_constraints:
        recipe=one_of(DMD2_TOY_RECIPES), seed=r"[1-9][0-9]*",
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=600),
    conda:
        conda_env("dmd2")
    params:
        teacher=lambda w, input: os.path.dirname(input.teacher),
    shell:
        launch(f"{DMD2}/train.py scale={{wildcards.scale}} recipe={{wildcards.recipe}} teacher={{params.teacher}} "
               f"data={{input.data}}/real.lmdb "
               f"run_dir=results/{{wildcards.scale}}/dmd2/runs/{{wildcards.recipe}}_seed{{wildcards.seed}} "
               f"threads=1 seed={{wildcards.seed}}")


def _dmd2_prompts(w):
    name = w.get("name") or f"teacher_{w.family}"
    arch = "digits" if name.startswith(("digits", "teacher_edm")) else ("sdxl" if "sdxl" in name else "sd15")
    return f"data/{w.scale}/dmd2/{arch}"


rule dmd2_sample_generator:
    input:
        gen="results/{scale}/dmd2/runs/{name}/generator.safetensors",
        data=_dmd2_prompts,
    output:
        "results/{scale}/dmd2/samples/{name}/samples.json",
    log:
        "logs/{scale}/dmd2_sample_generator.{name}.log",
    wildcard_constraints:
        name=f"({one_of(DMD2_TOY_RECIPES)})({DMD2_SEED_SUFFIX})?",
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=120),
    conda:
        conda_env("dmd2")
    shell:
        launch(f"{DMD2}/sample.py scale={{wildcards.scale}} checkpoint=results/{{wildcards.scale}}/dmd2/runs/{{wildcards.name}} "
               f"prompts={{input.data}}/eval_prompts.txt out_dir=results/{{wildcards.scale}}/dmd2/samples/{{wildcards.name}} threads=1")


# teacher baselines: teacher_<edm|sd15|sdxl>_<sampler>_<steps>_g<guidance>
rule dmd2_sample_teacher:
    input:
        teacher=lambda w: (f"results/{w.scale}/dmd2/teacher/model.safetensors" if w.family == "edm"
                           else dmd2_teacher_pipeline(w.scale, w.family) + "/model_index.json"),
        data=_dmd2_prompts,
    output:
        "results/{scale}/dmd2/samples/teacher_{family}_{sampler}_{steps}_g{guidance}/samples.json",
    log:
        "logs/{scale}/dmd2_sample_teacher.{family}.{sampler}.{steps}.{guidance}.log",
    wildcard_constraints:
        family="edm|sd15|sdxl", sampler="[a-z_+]+", steps=r"\d+", guidance=r"[\d.]+",
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=120),
    conda:
        conda_env("dmd2")
    params:
        backbone=lambda w: "edm" if w.family == "edm" else "sd",
        teacher=lambda w, input: os.path.dirname(input.teacher),
    shell:
        launch(f"{DMD2}/sample.py scale={{wildcards.scale}} mode=teacher backbone={{params.backbone}} "
               f"teacher={{params.teacher}} sampler={{wildcards.sampler}} steps={{wildcards.steps}} "
               f"guidance_scale={{wildcards.guidance}} prompts={{input.data}}/eval_prompts.txt threads=1 "
               f"out_dir=results/{{wildcards.scale}}/dmd2/samples/teacher_{{wildcards.family}}_{{wildcards.sampler}}_{{wildcards.steps}}_g{{wildcards.guidance}}")


# a teacher baseline's sampling-seed replica: sample i uses seed N*1000000 + i (seed 0's noise is i)
rule dmd2_sample_teacher_seed:
    input:
        teacher=lambda w: (f"results/{w.scale}/dmd2/teacher/model.safetensors" if w.family == "edm"
                           else dmd2_teacher_pipeline(w.scale, w.family) + "/model_index.json"),
        data=_dmd2_prompts,
    output:
        "results/{scale}/dmd2/samples/teacher_{family}_{sampler}_{steps}_g{guidance}_seed{seed}/samples.json",
    log:
        "logs/{scale}/dmd2_sample_teacher.{family}.{sampler}.{steps}.{guidance}.seed{seed}.log",
    wildcard_constraints:
        family="edm|sd15|sdxl", sampler="[a-z_+]+", steps=r"\d+", guidance=r"[\d.]+", seed=r"[1-9][0-9]*",
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=120),
    conda:
        conda_env("dmd2")
    params:
        backbone=lambda w: "edm" if w.family == "edm" else "sd",
        teacher=lambda w, input: os.path.dirname(input.teacher),
        seed=lambda w: int(w.seed) * 1_000_000,
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        launch(f"{DMD2}/sample.py scale={{wildcards.scale}} mode=teacher backbone={{params.backbone}} "
               f"teacher={{params.teacher}} sampler={{wildcards.sampler}} steps={{wildcards.steps}} "
               f"guidance_scale={{wildcards.guidance}} prompts={{input.data}}/eval_prompts.txt threads=1 "
               f"seed={{params.seed}} out_dir={{params.out}}")


rule dmd2_evaluate_toy:
    input:
        samples="results/{scale}/dmd2/samples/{name}/samples.json",
        digits="data/{scale}/digits",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        "results/{scale}/dmd2/eval/{name}.json",
    log:
        "logs/{scale}/dmd2_evaluate_toy.{name}.log",
    wildcard_constraints:
        scale="tiny|toy",
    threads: config["local_threads"]
    resources:
        **heavy(mem_mb=4000, runtime=30),
    conda:
        conda_env("dmd2")
    shell:
        launch(f"{DMD2}/evaluate.py scale={{wildcards.scale}} images=results/{{wildcards.scale}}/dmd2/samples/{{wildcards.name}} "
               f"reference={{input.digits}}/train extractor=digits:{{input.features}} metrics=[fd,prompt_accuracy] "
               f"experiment={{wildcards.name}} checkpoint={{wildcards.name}} out={{output}}")


# toy tables ------------------------------------------------------------------------------------------------------
# the tables' rows per scale (config.yaml: dmd2_rows), the distilled rows' training seeds (dmd2_seeds) and the
# claims each table judges against the spread (dmd2_claims)
DMD2_TOY_ROWS = config["dmd2_rows"]["toy"]
DMD2_TINY_ROWS = config["dmd2_rows"]["tiny"]


def _dmd2_scale_key(scale):
    return "tiny" if scale == "tiny" else "toy"


def _dmd2_rows(scale, which):
    """The table's rows, one per model (what the comparison grid shows)."""
    return (DMD2_TINY_ROWS if scale == "tiny" else DMD2_TOY_ROWS)[which]


def _dmd2_table_runs(scale, which):
    """The evaluations behind the table: a distilled row once per training seed; a teacher row (one trained teacher)
    once per sampling seed where a claim names it, else once. Every one has the bootstrap interval of its samples."""
    key = _dmd2_scale_key(scale)
    claimed = {r for pair in _dmd2_claims(scale, which) for r in pair}

    def seeds(row):  # a config without the seed lists: one run, as before them
        if not row.startswith("teacher_"):
            return config.get("dmd2_seeds", {}).get(key, [0])
        return config.get("dmd2_sampling_seeds", {}).get(key, [0]) if row in claimed else [0]

    return [dmd2_run(r, s) for r in _dmd2_rows(scale, which) for s in seeds(r)]


def _dmd2_claims(scale, which):
    claims = config.get("dmd2_claims", {}).get(_dmd2_scale_key(scale), {}).get(which, [])
    rows = _dmd2_rows(scale, which)
    for a, b in claims:
        for r in (a, b):
            if r not in rows:
                raise ValueError(f"config dmd2_claims.{_dmd2_scale_key(scale)}.{which}: row '{r}' is not one of "
                                 f"dmd2_rows.{_dmd2_scale_key(scale)}.{which} ({', '.join(rows)})")
    return claims


for _scale in ("tiny", "toy"):
    for _which in config["dmd2_rows"][_scale]:
        _dmd2_claims(_scale, _which)  # a claim naming a row the table lacks fails before any job runs


rule dmd2_table_toy:
    input:
        lambda w: [f"results/{w.scale}/dmd2/eval/{r}.json" for r in _dmd2_table_runs(w.scale, w.which)],
    output:
        md="results/{scale}/tables/dmd2_{which}.md",
        csv="results/{scale}/tables/dmd2_{which}.csv",
        html=reported("results/{scale}/tables/dmd2_{which}.html", "dmd2", "Tables", "dmd2_{which}", "dmd2_table"),
        claims="results/{scale}/tables/dmd2_{which}.claims.json",
        # student points on the teacher's quality-vs-NFE curves (shared/table_plots.py; + _prompt_accuracy_vs_nfe)
        fd_plot=reported("results/{scale}/tables/dmd2_{which}_fd_vs_nfe.png", "dmd2", "Plots",
                         "dmd2_{which} FD vs NFE", "dmd2_table"),
    log:
        "logs/{scale}/dmd2_table_toy.{which}.log",
    wildcard_constraints:
        scale="tiny|toy", which=one_of(DMD2_TOY_ROWS),
    conda:
        conda_env("dmd2")
    params:
        inputs=lambda w, input: "[" + ",".join(input) + "]",
        paper=lambda w: "{" + {"imagenet64": "digits_1step_gan", "sdxl": "toy_sdxl_4step", "sd15": "toy_sd15_1step"}[w.which]
                        + ": {fid: " + str(DMD2_PAPER[w.which]) + "}}",
        claims=lambda w: "[" + ",".join(f"[{a},{b}]" for a, b in _dmd2_claims(w.scale, w.which)) + "]",
        # (no ': ' in it: the option's value is read as YAML)
        notes="the seeds of a DMD2 row are training seeds (each sampled with sampling seed 0), those of a teacher row "
              "sampling seeds",
    shell:
        step(f"shared/tables.py scale={{wildcards.scale}} inputs='{{params.inputs}}' "
             f"title='DMD2 {{wildcards.which}} analogue' paper='{{params.paper}}' claims='{{params.claims}}' "
             f"notes='{{params.notes}}' "
             f"plots=[nfe] out_md={{output.md}} out_csv={{output.csv}} out_claims={{output.claims}}")


def _dmd2_label(name):
    """teacher_sdxl_dpm++_25_g4.0 -> 'teacher dpm++ 25-step cfg 4.0'; a recipe name gets a 'DMD2' prefix."""
    if not name.startswith("teacher_"):
        return f"DMD2 {name}"
    sampler, steps, guidance = name.split("_", 2)[2].rsplit("_", 2)
    return f"teacher {sampler} {steps}-step cfg {guidance[1:]}"


rule dmd2_grid_toy:
    input:
        lambda w: [f"results/{w.scale}/dmd2/samples/{r}/samples.json" for r in _dmd2_rows(w.scale, w.which)],
    output:
        reported("results/{scale}/dmd2/grids/{which}.png", "dmd2", "Samples", "{which}", "dmd2_grid"),
    log:
        "logs/{scale}/dmd2_grid_toy.{which}.log",
    wildcard_constraints:
        scale="tiny|toy", which=one_of(DMD2_TOY_ROWS),
    conda:
        conda_env("dmd2")
    params:
        folders=lambda w, input: "[" + ",".join(os.path.dirname(p) for p in input) + "]",
        labels=lambda w: "[" + ",".join(_dmd2_label(r) for r in _dmd2_rows(w.scale, w.which)) + "]",
    shell:
        step(f"{DMD2}/compare.py scale={{wildcards.scale}} folders='{{params.folders}}' labels='{{params.labels}}' "
             f"out={{output}}")


# paper scale -----------------------------------------------------------------------------------------------------
rule dmd2_download:
    output:
        "downloads/dmd2/{item}/download.json",
    log:
        "logs/dmd2_download.{item}.log",
    wildcard_constraints:
        item="dmd2_sdxl_4step|dmd2_sdxl_1step|dmd2_sd15_1step|dmd2_imagenet64|inception|clip_vit_g14",
    conda:
        conda_env("dmd2")
    shell:
        step(f"{DMD2}/download.py scale=paper item={{wildcards.item}} out_dir=downloads/dmd2/{{wildcards.item}}")


# DMD2's own COCO evaluation sets: its caption list and reference images (coco10k for SDXL, val2014 for SD1.5)
rule dmd2_download_coco:
    output:
        prompts="downloads/dmd2/coco{n}k/prompts.txt",
        images=directory("downloads/dmd2/coco{n}k/images"),
    log:
        "logs/dmd2_download_coco.{n}.log",
    wildcard_constraints:
        n="10|30",
    conda:
        conda_env("dmd2")
    shell:
        step(f"{DMD2}/download.py scale=paper item=coco{{wildcards.n}}k out_dir=downloads/dmd2/coco{{wildcards.n}}k")


# The released DMD2 generators at paper scale: teacher pipeline (sd_flux_lab's download), evaluation protocol
DMD2_PAPER_SD = {
    "sdxl": dict(name="dmd2_sdxl_4step", weights="dmd2_sdxl_4step_unet_fp16.bin", coco=10, steps=4, timestep=999,
                 resolution=512, title="DMD2 SDXL 4-step, COCO-10k, 512 px"),
    "sd15": dict(name="dmd2_sd15_1step", weights="pytorch_model.bin", coco=30, steps=1, timestep=999,
                 resolution=256, title="DMD2 SD1.5 1-step, COCO-30k, 256 px"),
}


rule dmd2_paper_sample_sd:
    input:
        base=lambda w: dmd2_teacher_pipeline("paper", w.arch) + "/model_index.json",
        unet=lambda w: f"downloads/dmd2/{DMD2_PAPER_SD[w.arch]['name']}/download.json",
        prompts=lambda w: f"downloads/dmd2/coco{DMD2_PAPER_SD[w.arch]['coco']}k/prompts.txt",
    output:
        "results/paper/dmd2/samples/released_{arch}/samples.json",
    log:
        "logs/dmd2_paper_sample_sd.{arch}.log",
    wildcard_constraints:
        arch="sdxl|sd15",
    resources:
        **heavy(gpus=8, mem_mb=200000, runtime=240, nproc_per_node=8),
    conda:
        conda_env("dmd2")
    params:
        teacher=lambda w, input: os.path.dirname(input.base),
        weights=lambda w: f"downloads/dmd2/{DMD2_PAPER_SD[w.arch]['name']}/{DMD2_PAPER_SD[w.arch]['weights']}",
        n=lambda w: DMD2_PAPER_SD[w.arch]["coco"] * 1000,
        steps=lambda w: DMD2_PAPER_SD[w.arch]["steps"],
        timestep=lambda w: DMD2_PAPER_SD[w.arch]["timestep"],
    shell:
        launch(f"{DMD2}/sample.py scale=paper checkpoint={{params.weights}} teacher={{params.teacher}} "
               f"prompts={{input.prompts}} num_images={{params.n}} num_step={{params.steps}} "
               f"conditioning_timestep={{params.timestep}} out_dir=results/paper/dmd2/samples/released_{{wildcards.arch}}")


rule dmd2_paper_evaluate_sd:
    input:
        samples="results/paper/dmd2/samples/released_{arch}/samples.json",
        reference=lambda w: f"downloads/dmd2/coco{DMD2_PAPER_SD[w.arch]['coco']}k/images",
        inception="downloads/dmd2/inception/download.json",
        clip="downloads/dmd2/clip_vit_g14/download.json",
    output:
        "results/paper/dmd2/eval/released_{arch}.json",
    log:
        "logs/dmd2_paper_evaluate_sd.{arch}.log",
    wildcard_constraints:
        arch="sdxl|sd15",
    resources:
        **heavy(gpus=1, mem_mb=64000, runtime=240),
    conda:
        conda_env("dmd2")
    params:
        resolution=lambda w: DMD2_PAPER_SD[w.arch]["resolution"],
        name=lambda w: DMD2_PAPER_SD[w.arch]["name"],
    shell:
        launch(f"{DMD2}/evaluate.py scale=paper images=results/paper/dmd2/samples/released_{{wildcards.arch}} "
               f"reference={{input.reference}} resolution={{params.resolution}} metrics=[fid,clip_score] "
               f"extractor=inception:downloads/dmd2/inception/inception-2015-12-05.pt clip=downloads/dmd2/clip_vit_g14 "
               f"clip_prefix='A photo depicts ' experiment={{params.name}} checkpoint=released device=cuda out={{output}}")


rule dmd2_paper_table_sd:
    input:
        "results/paper/dmd2/eval/released_{arch}.json",
    output:
        md="results/paper/tables/dmd2_{arch}.md",
        csv="results/paper/tables/dmd2_{arch}.csv",
    log:
        "logs/dmd2_paper_table_sd.{arch}.log",
    wildcard_constraints:
        arch="sdxl|sd15",
    conda:
        conda_env("dmd2")
    params:
        title=lambda w: DMD2_PAPER_SD[w.arch]["title"],
        paper=lambda w: "{" + DMD2_PAPER_SD[w.arch]["name"] + ": {fid: " + str(DMD2_PAPER[w.arch]) + "}}",
    shell:
        step("shared/tables.py scale=paper inputs=[{input}] title='{params.title}' paper='{params.paper}' "
             "out_md={output.md} out_csv={output.csv}")


# ImageNet-64: EDM's published reference statistics, under the extractor they were computed with
rule dmd2_download_edm_refs:
    input:
        "downloads/dmd2/inception/download.json",
    output:
        stats="downloads/dmd2/imagenet64_edm/reference_stats.npz",
        prompts="downloads/dmd2/imagenet64_edm/eval_prompts.txt",
    log:
        "logs/dmd2_download_edm_refs.log",
    conda:
        conda_env("dmd2")
    shell:
        step(f"{DMD2}/download.py scale=paper item=imagenet64_edm out_dir=downloads/dmd2/imagenet64_edm "
             f"inception=downloads/dmd2/inception")


rule dmd2_paper_sample_imagenet64:
    input:
        gen="downloads/dmd2/dmd2_imagenet64/download.json",
        prompts="downloads/dmd2/imagenet64_edm/eval_prompts.txt",
    output:
        "results/paper/dmd2/samples/released_imagenet64/samples.json",
    log:
        "logs/dmd2_paper_sample_imagenet64.log",
    resources:
        **heavy(gpus=8, mem_mb=64000, runtime=120, nproc_per_node=8),
    conda:
        conda_env("dmd2")
    params:
        weights="downloads/dmd2/dmd2_imagenet64/pytorch_model.bin",
    shell:
        # the released file is also the architecture (teacher=): a 1-step EDM generator needs no teacher weights
        launch(f"{DMD2}/sample.py scale=paper checkpoint={{params.weights}} teacher={{params.weights}} "
               f"prompts={{input.prompts}} num_images=50000 out_dir=results/paper/dmd2/samples/released_imagenet64")


rule dmd2_paper_evaluate_imagenet64:
    input:
        samples="results/paper/dmd2/samples/released_imagenet64/samples.json",
        stats="downloads/dmd2/imagenet64_edm/reference_stats.npz",
    output:
        "results/paper/dmd2/eval/released_imagenet64.json",
    log:
        "logs/dmd2_paper_evaluate_imagenet64.log",
    resources:
        **heavy(gpus=1, mem_mb=32000, runtime=120),
    conda:
        conda_env("dmd2")
    shell:
        launch(f"{DMD2}/evaluate.py scale=paper images=results/paper/dmd2/samples/released_imagenet64 "
               f"reference={{input.stats}} metrics=[fid] "
               f"extractor=inception_inside:downloads/dmd2/inception/inception-2015-12-05.pt "
               f"experiment=dmd2_imagenet64 checkpoint=released device=cuda out={{output}}")


rule dmd2_paper_table_imagenet64:
    input:
        "results/paper/dmd2/eval/released_imagenet64.json",
    output:
        md="results/paper/tables/dmd2_imagenet64.md",
        csv="results/paper/tables/dmd2_imagenet64.csv",
    log:
        "logs/dmd2_paper_table_imagenet64.log",
    conda:
        conda_env("dmd2")
    params:
        paper="{dmd2_imagenet64: {fid: " + str(DMD2_PAPER["imagenet64"]) + "}}",
    shell:
        step("shared/tables.py scale=paper inputs=[{input}] title='DMD2 ImageNet-64 1-step, 50k samples, EDM refs' "
             "paper='{params.paper}' out_md={output.md} out_csv={output.csv}")


def dmd2_targets(scale, which):
    if scale == "paper":
        return [f"results/paper/tables/dmd2_{which}.md"]
    return [f"results/{scale}/tables/dmd2_{which}.md", f"results/{scale}/dmd2/grids/{which}.png"]


rule eval_sdxl:
    input:
        dmd2_targets(config["scale"], "sdxl"),


rule eval_sd15:
    input:
        dmd2_targets(config["scale"], "sd15"),


rule eval_imagenet64:
    input:
        dmd2_targets(config["scale"], "imagenet64"),


@register_targets(in_default=False)
def dmd2_all(scale):
    # in_default=False: long at toy/paper scale, so `smoke` (tiny) and `toy` plan them, the default target does not;
    # the SD teachers come from sd_flux_lab's rules, which the Snakefile includes before this file
    return [p for w in ("imagenet64", "sdxl", "sd15") for p in dmd2_targets(scale, w)]
