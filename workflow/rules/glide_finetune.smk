# glide_finetune: GLIDE's base model with classifier-free guidance and its x4 upsampler (projects/glide_finetune).
#
#   tiny:  random tiny GLIDE-architecture networks trained a few steps on the digits; one chained sample (base ->
#          upsampler), evaluated and tabled (joins `smoke`)
#   toy:   a base (8 px) and an upsampler (8 -> 32 px) trained from scratch on the digits, a fine-tune on the
#          magenta digits; tables: guidance sweep, samplers x steps, fine-tune, upsampler vs bicubic, uncond_p
#   paper: the released GLIDE (filtered) base + upsampler sampled on COCO-30k prompts, FID at 256 px; a fine-tune
#          of the released base on LAION-style shards in data/paper/glide/laion/ when that folder exists
# Target: glide (at config["scale"]).
#
# CONTRACT with dmd2.smk (included before this file): downloads/dmd2/coco30k/{prompts.txt,images/} and
# downloads/dmd2/inception/ (the COCO-30k evaluation set and clean-fid's Inception) are reused, not re-downloaded.

from projects.glide_finetune.download import DOWNLOADS as GLIDE_DOWNLOADS

GLIDE = "projects/glide_finetune"
GLIDE_PAPER_FID = 12.24  # GLIDE paper, Table 2: zero-shot MS-COCO FID of the 3.5B model (not the released one)

# training runs (config.yaml: glide_runs): what each trains and from what; args on top of train.py's scale preset
GLIDE_RUNS = config["glide_runs"]
# the tiny/toy tables (config.yaml: glide_tables): table -> title and rows (sample folders)
GLIDE_TABLES = config["glide_tables"]
GLIDE_PAPER = config["glide_paper"]  # COCO-30k sampling and the LAION fine-tune
GLIDE_LAION = GLIDE_PAPER["laion_dir"]  # LAION-style WebDataset shards (img2dataset output), staged by the user
# what a sample folder's <model> part names: a trained run, the base chained with the x4 upsampler or with bicubic
# x4, or the test images downsampled to 8 px and upsampled (the *_heldout rows); _glide_sample_inputs reads them
GLIDE_SAMPLE_MODELS = [r for r in GLIDE_RUNS if r != "upsample"] + ["base_x4", "base_bicubic", "up_heldout",
                                                                   "bicubic_heldout"]
# the prompt files prepare.py writes (data/<scale>/glide/<name>_prompts.txt); "test" = the held-out test images
GLIDE_PROMPT_SETS = ["eval", "finetune", "rest", "test"]
# GLIDE's samplers: projects/glide_finetune/sampling.py SAMPLERS (not imported here: that module loads torch,
# which every dry run would then wait for; tests/test_workflow_registries.py checks the two lists agree)
GLIDE_SAMPLERS = ["plms", "ddim", "euler", "euler_a", "dpm++", "ddpm", "glide", "glide_ddim"]


wildcard_constraints:
    glide_run=one_of(GLIDE_RUNS),
    glide_model=one_of(GLIDE_SAMPLE_MODELS),
    glide_prompts=one_of(GLIDE_PROMPT_SETS),
    glide_sampler=one_of(GLIDE_SAMPLERS),


rule glide_prepare:
    input:
        "data/{scale}/digits",
    output:
        directory("data/{scale}/glide"),
    log:
        "logs/{scale}/glide_prepare.log",
    wildcard_constraints:
        scale="tiny|toy",
    conda:
        conda_env("glide_finetune")
    shell:
        step(f"{GLIDE}/prepare.py scale={{wildcards.scale}} digits={{input}} out_dir={{output}}")


def _glide_train_inputs(w):
    run = GLIDE_RUNS[w.glide_run]
    out = {"prepared": f"data/{w.scale}/glide", "digits": f"data/{w.scale}/digits"}
    if "init" in run:
        out["init"] = f"results/{w.scale}/glide/runs/{run['init']}/model.safetensors"
    return out


def _glide_train_args(w):
    run = GLIDE_RUNS[w.glide_run]
    data = f"data/{w.scale}/digits/train" if run["data"] == "digits" else f"data/{w.scale}/glide/finetune"
    args = f"data_dir={data} tokenizer=data/{w.scale}/glide/tokenizer " + run["args"]
    if "init" in run:
        args += f" init=results/{w.scale}/glide/runs/{run['init']}"
    if w.scale == "toy" and run.get("toy_args"):
        args += " " + run["toy_args"]
    return args


rule glide_train:
    input:
        unpack(_glide_train_inputs),
    output:
        "results/{scale}/glide/runs/{glide_run}/model.safetensors",
        **provenance("results/{scale}/glide/runs/{glide_run}", "glide_finetune", "glide_train {glide_run}"),
    log:
        "logs/{scale}/glide_train_{glide_run}.log",
    wildcard_constraints:
        scale="tiny|toy",
    threads: train_threads
    resources:
        **heavy(gpus=1, cpus_per_task=train_threads, mem_mb=6000, runtime=120),
    conda:
        conda_env("glide_finetune")
    params:
        args=_glide_train_args,
    shell:
        launch(f"{GLIDE}/train.py scale={{wildcards.scale}} {{params.args}} "
               f"run_dir=results/{{wildcards.scale}}/glide/runs/{{wildcards.glide_run}} threads=1")


# sample folders: <model>__<prompts>__<sampler>_<steps>_g<guidance>. base_x4 = base chained with the upsampler,
# base_bicubic = base + bicubic x4; *_heldout (prompts "test") upsample the real test images downsampled to 8 px
# (the sampler/steps are the upsampler's), so evaluate.py pairs them with the originals for PSNR.
def _glide_sample_inputs(w):
    out = {"prepared": f"data/{w.scale}/glide", "digits": f"data/{w.scale}/digits"}
    if not w.glide_model.endswith("_heldout"):
        base = w.glide_model if w.glide_model in GLIDE_RUNS else "base"  # base_x4 / base_bicubic: the base
        out["base"] = f"results/{w.scale}/glide/runs/{base}/model.safetensors"
    if w.glide_model in ("base_x4", "up_heldout"):
        out["up"] = f"results/{w.scale}/glide/runs/upsample/model.safetensors"
    return out


def _glide_sample_args(w, input):
    up = f"upsampler={os.path.dirname(input.up)}" if "up" in input.keys() else ""
    if w.glide_model.endswith("_heldout"):
        if w.glide_prompts != "test":
            raise ValueError(f"{w.glide_model} upsamples the test images: use prompts 'test'")
        return (f"{up or 'upsampler=bicubic:4'} low_res_images={input.digits}/test upsample_sampler={w.glide_sampler} "
                f"upsample_steps={w.steps}")
    args = f"base={os.path.dirname(input.base)} {up}"
    if w.glide_model == "base_bicubic":
        args += " upsampler=bicubic:4"
    return args + f" prompts=data/{w.scale}/glide/{w.glide_prompts}_prompts.txt"


rule glide_sample:
    input:
        unpack(_glide_sample_inputs),
    output:
        "results/{scale}/glide/samples/{glide_model}__{glide_prompts}__{glide_sampler}_{steps}_g{guidance}/samples.json",
    log:
        "logs/{scale}/glide_sample_{glide_model}__{glide_prompts}__{glide_sampler}_{steps}_g{guidance}.log",
    wildcard_constraints:
        scale="tiny|toy", steps=r"\d+", guidance=r"[\d.]+",
    threads: step_threads
    resources:
        **heavy(gpus=1, mem_mb=4000, runtime=60),
    conda:
        conda_env("glide_finetune")
    params:
        args=_glide_sample_args,
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        launch(f"{GLIDE}/sample.py scale={{wildcards.scale}} {{params.args}} sampler={{wildcards.glide_sampler}} "
               f"steps={{wildcards.steps}} guidance_scale={{wildcards.guidance}} out_dir={{params.out}} threads=1")


rule glide_evaluate:
    input:
        samples="results/{scale}/glide/samples/{name}/samples.json",
        digits="data/{scale}/digits",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        "results/{scale}/glide/eval/{name}.json",
    log:
        "logs/{scale}/glide_evaluate_{name}.log",
    wildcard_constraints:
        scale="tiny|toy",
    threads: step_threads
    resources:
        **heavy(mem_mb=4000, runtime=30),
    conda:
        conda_env("glide_finetune")
    params:
        images=lambda w, input: os.path.dirname(input.samples),
        metrics=lambda w: "[fd,prompt_accuracy,psnr]" if "_heldout__" in w.name else "[fd,prompt_accuracy]",
    shell:
        launch(f"{GLIDE}/evaluate.py scale={{wildcards.scale}} images={{params.images}} reference={{input.digits}}/test "
               f"extractor=digits:{{input.features}} metrics={{params.metrics}} experiment={{wildcards.name}} "
               f"out={{output}} threads=1")


rule glide_winrate:
    input:
        a="results/{scale}/glide/samples/finetune__{glide_prompts}__glide_27_g3.0/samples.json",
        b="results/{scale}/glide/samples/base__{glide_prompts}__glide_27_g3.0/samples.json",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        "results/{scale}/glide/eval/winrate_finetune__{glide_prompts}.json",
    log:
        "logs/{scale}/glide_winrate_{glide_prompts}.log",
    wildcard_constraints:
        scale="tiny|toy",
    threads: step_threads
    resources:
        **heavy(mem_mb=4000, runtime=30),
    conda:
        conda_env("glide_finetune")
    params:
        a=lambda w, input: os.path.dirname(input.a),
        b=lambda w, input: os.path.dirname(input.b),
    shell:
        launch(f"{GLIDE}/winrate.py scale={{wildcards.scale}} a={{params.a}} b={{params.b}} "
               f"scorer=digits:{{input.features}} experiment=winrate_finetune_vs_base__{{wildcards.glide_prompts}} "
               f"out={{output}}")


# toy tables: rows are sample folders (model__prompts__sampler_steps_gGUIDANCE), config.yaml glide_tables ------------
def _glide_tables(scale):
    return GLIDE_TABLES["tiny" if scale == "tiny" else "toy"]


rule glide_table:
    input:
        lambda w: [f"results/{w.scale}/glide/eval/{r}.json" for r in _glide_tables(w.scale)[w.which]["rows"]],
    output:
        md="results/{scale}/tables/glide_{which}.md",
        csv="results/{scale}/tables/glide_{which}.csv",
        html=reported("results/{scale}/tables/glide_{which}.html", "glide_finetune", "Tables", "glide_{which}",
                      "project_table"),
    log:
        "logs/{scale}/glide_table_{which}.log",
    wildcard_constraints:
        scale="tiny|toy", which=one_of(dict.fromkeys(t for tables in GLIDE_TABLES.values() for t in tables)),
    conda:
        conda_env("glide_finetune")
    params:
        inputs=lambda w, input: "[" + ",".join(input) + "]",
        title=lambda w: _glide_tables(w.scale)[w.which]["title"],
    shell:
        step("shared/tables.py scale={wildcards.scale} inputs='{params.inputs}' title='{params.title}' "
             "out_md={output.md} out_csv={output.csv}")


rule glide_compare_samplers:
    input:
        base="results/{scale}/glide/runs/base/model.safetensors",
        features="results/{scale}/digits_features/features.safetensors",
        digits="data/{scale}/digits",
        prepared="data/{scale}/glide",
    output:
        grid=reported("results/{scale}/glide/compare/grid.png", "glide_finetune", "Samples", "samplers x steps grid",
                      "glide_compare"),
        table="results/{scale}/glide/compare/results.md",
    log:
        "logs/{scale}/glide_compare_samplers.log",
    wildcard_constraints:
        scale="tiny|toy",
    threads: step_threads
    resources:
        **heavy(gpus=1, mem_mb=4000, runtime=60),
    conda:
        conda_env("glide_finetune")
    shell:
        launch(f"{GLIDE}/compare_samplers.py scale={{wildcards.scale}} model=results/{{wildcards.scale}}/glide/runs/base "
               f"prompts={{input.prepared}}/eval_prompts.txt features={{input.features}} "
               f"reference_dir={{input.digits}}/test output_dir=results/{{wildcards.scale}}/glide/compare threads=1")


# paper scale -------------------------------------------------------------------------------------------------------
rule glide_download:
    output:
        "downloads/glide/{item}/download.json",
    wildcard_constraints:
        item=one_of(GLIDE_DOWNLOADS),
    log:
        "logs/paper/glide_download_{item}.log",
    conda:
        conda_env("glide_finetune")
    shell:
        step(f"{GLIDE}/download.py scale=paper item={{wildcards.item}} out_dir=downloads/glide/{{wildcards.item}}")


rule glide_paper_finetune:
    input:
        base="downloads/glide/base/download.json",
        tokenizer="downloads/glide/gpt2_tokenizer/download.json",
    output:
        "results/paper/glide/runs/finetune_laion/model.safetensors",
    log:
        "logs/paper/glide_paper_finetune.log",
    resources:
        **heavy(gpus=8, mem_mb=200000, runtime=1440, nproc_per_node=8),
    conda:
        conda_env("glide_finetune")
    shell:
        launch(f"{GLIDE}/train.py scale=paper {GLIDE_PAPER['finetune_args']} data_dir={GLIDE_LAION} "
               f"tokenizer=downloads/glide/gpt2_tokenizer run_dir=results/paper/glide/runs/finetune_laion")


def _glide_paper_base(w):
    if w.model == "released":
        return "downloads/glide/base/download.json"
    return f"results/paper/glide/runs/{w.model}/model.safetensors"


rule glide_paper_sample:
    input:
        base=_glide_paper_base,
        up="downloads/glide/upsample/download.json",
        tokenizer="downloads/glide/gpt2_tokenizer/download.json",
        prompts="downloads/dmd2/coco30k/prompts.txt",
    output:
        "results/paper/glide/samples/{model}__coco30k/samples.json",
    wildcard_constraints:
        model="released|finetune_laion",
    log:
        "logs/paper/glide_paper_sample_{model}.log",
    resources:
        **heavy(gpus=8, mem_mb=200000, runtime=720, nproc_per_node=8),
    conda:
        conda_env("glide_finetune")
    params:
        base=lambda w: "released" if w.model == "released" else f"results/paper/glide/runs/{w.model}",
        sampling=" ".join(f"{k}={v}" for k, v in GLIDE_PAPER["sample"].items()),
    shell:
        launch(f"{GLIDE}/sample.py scale=paper base={{params.base}} upsampler=released prompts={{input.prompts}} "
               f"{{params.sampling}} out_dir=results/paper/glide/samples/{{wildcards.model}}__coco30k")


rule glide_paper_evaluate:
    input:
        samples="results/paper/glide/samples/{model}__coco30k/samples.json",
        reference="downloads/dmd2/coco30k/images",
        inception="downloads/dmd2/inception/download.json",
        clip="downloads/glide/clip_vit_b16/download.json",
    output:
        "results/paper/glide/eval/{model}__coco30k.json",
    log:
        "logs/paper/glide_paper_evaluate_{model}.log",
    resources:
        **heavy(gpus=1, mem_mb=64000, runtime=240),
    conda:
        conda_env("glide_finetune")
    shell:
        launch(f"{GLIDE}/evaluate.py scale=paper images=results/paper/glide/samples/{{wildcards.model}}__coco30k "
               f"reference={{input.reference}} extractor=inception:downloads/dmd2/inception/inception-2015-12-05.pt "
               f"clip=downloads/glide/clip_vit_b16 experiment=glide_{{wildcards.model}}_coco30k "
               f"checkpoint={{wildcards.model}} out={{output}}")


def _glide_paper_rows():
    rows = ["released"]
    if os.path.isdir(os.path.join(REPO, GLIDE_LAION)):
        rows.append("finetune_laion")
    return rows


rule glide_paper_table:
    input:
        lambda w: [f"results/paper/glide/eval/{m}__coco30k.json" for m in _glide_paper_rows()],
    output:
        md="results/paper/tables/glide_coco30k.md",
        csv="results/paper/tables/glide_coco30k.csv",
    log:
        "logs/paper/glide_paper_table.log",
    conda:
        conda_env("glide_finetune")
    params:
        inputs=lambda w, input: "[" + ",".join(input) + "]",
        paper="{glide_released_coco30k: {fid: " + str(GLIDE_PAPER_FID) + "}}",
    shell:
        step("shared/tables.py scale=paper inputs='{params.inputs}' "
             "title='GLIDE zero-shot MS-COCO 30k at 256 px (paper column: the 3.5B model; released: filtered 300M)' "
             "paper='{params.paper}' out_md={output.md} out_csv={output.csv}")


def glide_targets(scale):
    if scale == "paper":
        return ["results/paper/tables/glide_coco30k.md"]
    tables = [f"results/{scale}/tables/glide_{w}.md" for w in _glide_tables(scale)]
    if scale == "toy":
        tables.append(f"results/{scale}/glide/compare/grid.png")
    return tables


rule glide:
    input:
        glide_targets(config["scale"]),


@register_targets(in_default=False)
def glide_all(scale):
    # in_default=False: the tiny chain joins `smoke` and the toy chain joins `toy`, never the default target
    return glide_targets(scale)
