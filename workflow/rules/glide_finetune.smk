# glide_finetune: GLIDE's base model with classifier-free guidance and its x4 upsampler (projects/glide_finetune).
#
#   tiny:  random tiny GLIDE-architecture networks trained a few steps on the digits; one chained sample (base ->
#          upsampler), evaluated and tabled (joins `smoke`)
#   toy:   a base (8 px) trained from scratch on the digits of every colour but magenta, an upsampler (8 -> 32 px)
#          on all digits, a fine-tune of the base on the magenta digits; tables: guidance sweep, fine-tune (gain on
#          magenta, drift on the rest), upsampler vs bicubic, uncond_p, and compare_samplers.py's samplers x steps
#   paper: the released GLIDE (filtered) base + upsampler sampled on COCO-30k prompts, FID at 256 px, unguided and
#          guided by the released noised CLIP (glide_paper.clip_sample); a fine-tune of the released base on
#          LAION-style shards in data/paper/glide/laion/ when that folder exists
#   tiny/toy also: a noised CLIP trained on the digits (train_clip.py) guiding the base (toy table `clip`: CLIP
#          guidance vs classifier-free guidance) and adding its loss to a second fine-tune (finetune_clip, train.py
#          clip_loss=; rows in the fine-tune tables); tiny only: an inpainting run + inpainted test images, and the
#          base's samples upscaled x4 by upscale.py (bicubic; SwinIR with random tiny weights: no SwinIR weights
#          exist at toy scale, so no toy table shows one)
# Targets: glide (at config["scale"]); glide_downloads (every released file, for staging a mirror).
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
GLIDE_MIRROR = config["glide_mirror"]  # '' = the released files' own URLs; else a staging folder or URL prefix


def _glide_is_inpaint(run):
    """Whether a glide_runs entry trains an inpainting model (train.py inpaint=true in its args)."""
    return any(a.lower() in ("inpaint=true", "inpaint=1", "inpaint=yes") for a in GLIDE_RUNS[run]["args"].split())


# inpainting runs sample through glide_inpaint (they fill the test images), not glide_sample
GLIDE_INPAINT_RUNS = [r for r in GLIDE_RUNS if _glide_is_inpaint(r)]
# what a sample folder's <model> part names: a trained run, the base chained with the x4 upsampler or with bicubic
# x4, or the test images downsampled to 8 px and upsampled (the *_heldout rows); _glide_sample_inputs reads them
GLIDE_SAMPLE_MODELS = [r for r in GLIDE_RUNS if r != "upsample" and r not in GLIDE_INPAINT_RUNS] + [
    "base_x4", "base_bicubic", "up_heldout", "bicubic_heldout"]
# upscale.py's methods (its METHODS; tests/test_glide_download.py checks the copy); swinir: random tiny weights at
# tiny, refused at toy (no SwinIR weights there)
GLIDE_UPSCALERS = ["swinir", "bicubic"]
# the prompt files prepare.py writes (data/<scale>/glide/<name>_prompts.txt); "test" = the held-out test images
# (eval: the base's colours, also the fine-tune's drift set; finetune: the fine-tune colour)
GLIDE_PROMPT_SETS = ["eval", "finetune", "test"]
# a glide_runs entry's `data`: the training image folder (prepare.py writes base/ and finetune/)
GLIDE_DATA = {"digits": "data/{scale}/digits/train", "base": "data/{scale}/glide/base",
              "finetune": "data/{scale}/glide/finetune"}
# GLIDE's samplers: projects/glide_finetune/sampling.py SAMPLERS (not imported here: that module loads torch,
# which every dry run would then wait for; tests/test_workflow_registries.py checks the two lists agree)
GLIDE_SAMPLERS = ["plms", "ddim", "euler", "euler_a", "dpm++", "ddpm", "glide", "glide_ddim"]
# seeds (issue 18), config.yaml glide_seeds: a run marked `seeded` is trained once per seed (seed N > 0: the run
# <run>_seed<N>, train.py seed=N: data order, noise, guidance dropout); a row that a table's claim names and whose
# run is not seeded (the base: one trained model) is sampled once per seed (<model>_seed<N>: sample.py
# seed=N*10**7, clear of seed 0's base and upsampler seeds i and i + 10**6). Seed 0 is the bare name; the evaluation
# moves the suffix to the end of the experiment name, where shared/tables.py joins the seeds as one row.
GLIDE_SEEDS = config["glide_seeds"]
GLIDE_SAMPLING_SEED_STRIDE = 10**7


def glide_seeded(run):
    return GLIDE_RUNS.get(run, {}).get("seeded", False)


def glide_experiment(name):
    """An evaluation's experiment name: 'finetune_seed1__eval__glide_27_g3.0' -> 'finetune__eval__glide_27_g3.0_seed1'
    (winrate_<run>_seed<N>__<prompts> likewise), so tables.py groups the seeds."""
    head, sep, rest = name.partition("__")
    stem, seed = split_seed(head)
    return f"{stem}{sep}{rest}_seed{seed}" if seed else name


wildcard_constraints:
    glide_run=f"({one_of(GLIDE_RUNS)}){SEED_SUFFIX}",
    glide_model=f"({one_of(GLIDE_SAMPLE_MODELS)}){SEED_SUFFIX}",
    glide_prompts=one_of(GLIDE_PROMPT_SETS),
    glide_sampler=one_of(GLIDE_SAMPLERS),
    glide_upscaler=one_of(GLIDE_UPSCALERS),


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


def _glide_train_run(w):
    name, seed = split_seed(w.glide_run)
    if seed and not glide_seeded(name):
        raise ValueError(f"glide run '{w.glide_run}': '{name}' is not `seeded` in config.yaml glide_runs")
    return GLIDE_RUNS[name], seed


def _glide_train_inputs(w):
    run, _ = _glide_train_run(w)
    out = {"prepared": f"data/{w.scale}/glide", "digits": f"data/{w.scale}/digits"}
    if "init" in run:
        out["init"] = f"results/{w.scale}/glide/runs/{run['init']}/model.safetensors"
    if "clip_loss" in run:
        out["clip"] = f"results/{w.scale}/glide/clip/clip.json"
    return out


def _glide_train_args(w):
    run, seed = _glide_train_run(w)
    data = GLIDE_DATA[run["data"]].format(scale=w.scale)
    args = f"data_dir={data} tokenizer=data/{w.scale}/glide/tokenizer " + run["args"]
    if "init" in run:
        args += f" init=results/{w.scale}/glide/runs/{run['init']}"
    if "clip_loss" in run:  # + weight * (1 - cos) of the scale's noised CLIP (train_clip.py) on the x0 prediction
        args += f" clip_loss={run['clip_loss']}@results/{w.scale}/glide/clip"
    if w.scale == "toy" and run.get("toy_args"):
        args += " " + run["toy_args"]
    return args + (f" seed={seed}" if seed else "")


rule glide_train:
    input:
        unpack(_glide_train_inputs),
    output:
        "results/{scale}/glide/runs/{glide_run}/model.safetensors",
        **provenance("results/{scale}/glide/runs/{glide_run}", "glide_finetune", "glide_train {glide_run}"),
        **curves("results/{scale}/glide/runs/{glide_run}", "glide_finetune", "glide_train {glide_run}"),
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
def _glide_sample_model(w):
    """(model, sampling seed): a seeded run's replica samples its own weights with seed 0's noise; any other
    <model>_seed<N> samples the model with noise seed N * GLIDE_SAMPLING_SEED_STRIDE."""
    model, seed = split_seed(w.glide_model)
    if glide_seeded(model):
        return w.glide_model, 0
    return model, seed * GLIDE_SAMPLING_SEED_STRIDE


def _glide_sample_inputs(w):
    out = {"prepared": f"data/{w.scale}/glide", "digits": f"data/{w.scale}/digits"}
    model, _ = _glide_sample_model(w)
    if not model.endswith("_heldout"):
        base = model if split_seed(model)[0] in GLIDE_RUNS else "base"  # base_x4 / base_bicubic: the base
        out["base"] = f"results/{w.scale}/glide/runs/{base}/model.safetensors"
    if model in ("base_x4", "up_heldout"):
        out["up"] = f"results/{w.scale}/glide/runs/upsample/model.safetensors"
    return out


def _glide_sample_args(w, input):
    model, seed = _glide_sample_model(w)
    return _glide_sample_source(w, model, input) + (f" seed={seed}" if seed else "")


def _glide_sample_source(w, model, input):
    up = f"upsampler={os.path.dirname(input.up)}" if "up" in input.keys() else ""
    if model.endswith("_heldout"):
        if w.glide_prompts != "test":
            raise ValueError(f"{w.glide_model} upsamples the test images: use prompts 'test'")
        return (f"{up or 'upsampler=bicubic:4'} low_res_images={input.digits}/test upsample_sampler={w.glide_sampler} "
                f"upsample_steps={w.steps}")
    args = f"base={os.path.dirname(input.base)} {up}"
    if model == "base_bicubic":
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


# the noised CLIP trained on the digits (train_clip.py preset: toy 800 steps, ~4 min of CPU on one thread; tiny 60)
rule glide_train_clip:
    input:
        prepared="data/{scale}/glide",
        digits="data/{scale}/digits",
    output:
        "results/{scale}/glide/clip/clip.json",
        "results/{scale}/glide/clip/eval.json",
        **provenance("results/{scale}/glide/clip", "glide_finetune", "glide_train_clip"),
        **curves("results/{scale}/glide/clip", "glide_finetune", "glide_train_clip"),
    log:
        "logs/{scale}/glide_train_clip.log",
    wildcard_constraints:
        scale="tiny|toy",
    threads: train_threads
    resources:
        **heavy(gpus=1, cpus_per_task=train_threads, mem_mb=4000, runtime=60),
    conda:
        conda_env("glide_finetune")
    shell:
        launch(f"{GLIDE}/train_clip.py scale={{wildcards.scale}} data_dir={{input.digits}} "
               f"tokenizer={{input.prepared}}/tokenizer run_dir=results/{{wildcards.scale}}/glide/clip threads=1")


# <run>_clip<scale>: the run's samples guided by that noised CLIP's gradient at that scale (sample.py clip_model=),
# on top of classifier-free guidance g (g1.0 = none: CLIP guidance alone, as GLIDE's CLIP-guided notebook samples)
rule glide_sample_clip:
    input:
        base="results/{scale}/glide/runs/{glide_run}/model.safetensors",
        clip="results/{scale}/glide/clip/clip.json",
        prepared="data/{scale}/glide",
    output:
        "results/{scale}/glide/samples/{glide_run}_clip{clip_scale}__{glide_prompts}__{glide_sampler}_{steps}_g{guidance}"
        "/samples.json",
    log:
        "logs/{scale}/glide_sample_clip_{glide_run}_clip{clip_scale}__{glide_prompts}__{glide_sampler}_{steps}"
        "_g{guidance}.log",
    wildcard_constraints:
        scale="tiny|toy", steps=r"\d+", guidance=r"[\d.]+", clip_scale=r"[\d.]+",
    threads: step_threads
    resources:
        **heavy(gpus=1, mem_mb=4000, runtime=60),
    conda:
        conda_env("glide_finetune")
    params:
        base=lambda w, input: os.path.dirname(input.base),
        clip=lambda w, input: os.path.dirname(input.clip),
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        launch(f"{GLIDE}/sample.py scale={{wildcards.scale}} base={{params.base}} clip_model={{params.clip}} "
               f"clip_guidance_scale={{wildcards.clip_scale}} prompts={{input.prepared}}/{{wildcards.glide_prompts}}"
               f"_prompts.txt sampler={{wildcards.glide_sampler}} steps={{wildcards.steps}} "
               f"guidance_scale={{wildcards.guidance}} out_dir={{params.out}} threads=1")


# an inpainting run fills the centre of the test images (their captions as prompts; known pixels kept exactly,
# so evaluate adds PSNR against the originals); outputs keep the test images' names
rule glide_inpaint:
    input:
        base="results/{scale}/glide/runs/{glide_inpaint_run}/model.safetensors",
        digits="data/{scale}/digits",
    output:
        "results/{scale}/glide/samples/{glide_inpaint_run}__test__{glide_sampler}_{steps}_g{guidance}/samples.json",
    log:
        "logs/{scale}/glide_inpaint_{glide_inpaint_run}__test__{glide_sampler}_{steps}_g{guidance}.log",
    wildcard_constraints:
        scale="tiny|toy", steps=r"\d+", guidance=r"[\d.]+", glide_inpaint_run=one_of(GLIDE_INPAINT_RUNS),
        glide_sampler="glide|glide_ddim",  # sample.py INPAINT_SAMPLERS: the samplers that keep the known pixels
    threads: step_threads
    resources:
        **heavy(gpus=1, mem_mb=4000, runtime=60),
    conda:
        conda_env("glide_finetune")
    params:
        base=lambda w, input: os.path.dirname(input.base),
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        launch(f"{GLIDE}/sample.py scale={{wildcards.scale}} base={{params.base}} inpaint_images={{input.digits}}/test "
               f"inpaint_mask=center sampler={{wildcards.glide_sampler}} steps={{wildcards.steps}} "
               f"guidance_scale={{wildcards.guidance}} out_dir={{params.out}} threads=1")


# <sample folder>__<method>_x<factor>: upscale.py over a sample folder (bicubic, or SwinIR: scale=tiny builds a
# random tiny SwinIR; at toy there are no SwinIR weights and upscale.py refuses it)
rule glide_upscale:
    input:
        "results/{scale}/glide/samples/{source}/samples.json",
    output:
        "results/{scale}/glide/samples/{source}__{glide_upscaler}_x{factor}/upscale.json",
    log:
        "logs/{scale}/glide_upscale_{source}__{glide_upscaler}_x{factor}.log",
    wildcard_constraints:
        scale="tiny|toy", factor="2|3|4|8",
    threads: step_threads
    resources:
        **heavy(gpus=1, mem_mb=4000, runtime=30),
    conda:
        conda_env("glide_finetune")
    params:
        src=lambda w, input: os.path.dirname(input[0]),
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        launch(f"{GLIDE}/upscale.py scale={{wildcards.scale}} in_dir={{params.src}} out_dir={{params.out}} "
               f"method={{wildcards.glide_upscaler}} factor={{wildcards.factor}} threads=1")


_GLIDE_UPSCALED = re.compile(r"__(" + one_of(GLIDE_UPSCALERS) + r")_x\d+$")  # an upscale.py folder's name


def _glide_eval_record(w):
    """The record of the evaluated folder: upscale.py's upscale.json or sample.py's samples.json."""
    record = "upscale.json" if _GLIDE_UPSCALED.search(w.name) else "samples.json"
    return f"results/{w.scale}/glide/samples/{w.name}/{record}"


def _glide_eval_metrics(w):
    """PSNR where the images have same-named originals: upsampled held-out images, inpainted test images."""
    paired = "_heldout__" in w.name or w.name.split("__")[0] in GLIDE_INPAINT_RUNS
    return "[fd,prompt_accuracy,psnr]" if paired else "[fd,prompt_accuracy]"


def _glide_eval_reference(w):
    """FD against real images of the prompts sampled, seen by neither model: the eval prompts (the base's colours)
    against those test images; the fine-tune colour's against prepare.py's finetune_reference (its test images and
    train images held out of the fine-tune: the 44 magenta test images alone are fewer than the 64-d digits
    features need for a covariance); the held-out rows (prompts "test") against every test image."""
    prompts = w.name.split("__")[1]
    if prompts == "finetune":
        return f"reference=data/{w.scale}/glide/finetune_reference"
    if prompts == "eval":
        return f"reference=data/{w.scale}/digits/test reference_captions=data/{w.scale}/glide/eval_prompts.txt"
    return f"reference=data/{w.scale}/digits/test"


rule glide_evaluate:
    input:
        samples=_glide_eval_record,
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
        metrics=_glide_eval_metrics,
        reference=_glide_eval_reference,
        experiment=lambda w: glide_experiment(w.name),
    shell:
        launch(f"{GLIDE}/evaluate.py scale={{wildcards.scale}} images={{params.images}} {{params.reference}} "
               f"extractor=digits:{{input.features}} metrics={{params.metrics}} experiment={{params.experiment}} "
               f"out={{output}} threads=1")


# win rate of a trained run against the base, per prompt, on the same prompts and seeds (winrate.py)
rule glide_winrate:
    input:
        a="results/{scale}/glide/samples/{glide_run}__{glide_prompts}__glide_27_g3.0/samples.json",
        b="results/{scale}/glide/samples/base__{glide_prompts}__glide_27_g3.0/samples.json",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        "results/{scale}/glide/eval/winrate_{glide_run}__{glide_prompts}.json",
    log:
        "logs/{scale}/glide_winrate_{glide_run}__{glide_prompts}.log",
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
        # a seed replica against the base's seed-0 samples (the same noise), its seed at the end of the name
        experiment=lambda w: glide_experiment(f"{w.glide_run}__{w.glide_prompts}").replace(
            "__", "_vs_base__", 1),
    shell:
        launch(f"{GLIDE}/winrate.py scale={{wildcards.scale}} a={{params.a}} b={{params.b}} "
               f"scorer=digits:{{input.features}} opponent=base__glide_27_g3.0 "
               f"experiment=winrate_{{params.experiment}} "
               f"out={{output}}")


# toy tables: rows are sample folders (model__prompts__sampler_steps_gGUIDANCE), config.yaml glide_tables ------------
def _glide_tables(scale):
    return GLIDE_TABLES["tiny" if scale == "tiny" else "toy"]


def _glide_table_evals(scale, which):
    """The evaluations behind a table: a seeded run's row once per training seed, a row a claim names (of a model
    trained once) once per sampling seed, any other row once."""
    table = _glide_tables(scale)[which]
    claimed = {r for pair in table.get("claims", []) for r in pair}
    out = []
    for row in table["rows"]:
        winrate = row.startswith("winrate_")
        model, sep, rest = row.removeprefix("winrate_").partition("__")
        seeds = GLIDE_SEEDS[scale] if glide_seeded(model) or (row in claimed and not winrate) else [0]
        out += [("winrate_" if winrate else "") + (f"{model}_seed{s}" if s else model) + sep + rest for s in seeds]
    return out


def _glide_claims(scale, which):
    table = _glide_tables(scale)[which]
    for pair in table.get("claims", []):
        for r in pair:
            if r not in table["rows"]:
                raise ValueError(f"config glide_tables.{scale}.{which}.claims: row '{r}' is not one of its rows")
    return table.get("claims", [])


for _scale in GLIDE_TABLES:
    for _which in GLIDE_TABLES[_scale]:
        _glide_claims(_scale, _which)  # a claim naming a row the table lacks fails before any job runs


rule glide_table:
    input:
        lambda w: [f"results/{w.scale}/glide/eval/{r}.json" for r in _glide_table_evals(w.scale, w.which)],
    output:
        md="results/{scale}/tables/glide_{which}.md",
        csv="results/{scale}/tables/glide_{which}.csv",
        claims="results/{scale}/tables/glide_{which}.claims.json",
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
        claims=lambda w: "[" + ",".join(f"[{a},{b}]" for a, b in _glide_claims(w.scale, w.which)) + "]",
        notes=lambda w: "seeds of a fine-tune row are training seeds, of a base row sampling seeds (config.yaml "
                        "glide_seeds)" if _glide_claims(w.scale, w.which) else "",
    shell:
        step("shared/tables.py scale={wildcards.scale} inputs='{params.inputs}' title='{params.title}' "
             "claims='{params.claims}' notes='{params.notes}' out_md={output.md} out_csv={output.csv} "
             "out_claims={output.claims}")


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
               f"reference_dir={{input.digits}}/test reference_captions={{input.prepared}}/eval_prompts.txt "
               f"output_dir=results/{{wildcards.scale}}/glide/compare threads=1")


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
    params:
        mirror=f"mirror={GLIDE_MIRROR}" if GLIDE_MIRROR else "",  # config glide_mirror: staged plain-URL files
    shell:
        step(f"{GLIDE}/download.py scale=paper item={{wildcards.item}} out_dir=downloads/glide/{{wildcards.item}} "
             f"{{params.mirror}}")


# every released file (GLIDE, its noised CLIP, GPT-2's tokenizer, CLIP ViT-B/16, SwinIR x4): what a cluster without
# internet stages first (`snakemake glide_downloads --config glide_mirror=/staging/glide` on a machine that has it)
rule glide_downloads:
    input:
        [f"downloads/glide/{item}/download.json" for item in GLIDE_DOWNLOADS],


rule glide_paper_finetune:
    input:
        base="downloads/glide/base/download.json",
        tokenizer="downloads/glide/gpt2_tokenizer/download.json",
    output:
        "results/paper/glide/runs/finetune_laion/model.safetensors",
        **curves("results/paper/glide/runs/finetune_laion", "glide_finetune", "glide_paper_finetune"),
    log:
        "logs/paper/glide_paper_finetune.log",
    resources:
        **heavy(gpus=8, mem_mb=200000, runtime=1440, nproc_per_node=8),
    conda:
        conda_env("glide_finetune")
    shell:
        launch(f"{GLIDE}/train.py scale=paper {GLIDE_PAPER['finetune_args']} data_dir={GLIDE_LAION} "
               f"tokenizer=downloads/glide/gpt2_tokenizer run_dir=results/paper/glide/runs/finetune_laion")


GLIDE_PAPER_CLIP = GLIDE_PAPER.get("clip_sample")  # the released_clip row's sample.py options; none = no such row


def _glide_paper_inputs(w):
    out = {"up": "downloads/glide/upsample/download.json", "tokenizer": "downloads/glide/gpt2_tokenizer/download.json",
           "prompts": "downloads/dmd2/coco30k/prompts.txt"}
    if w.model.startswith("released"):
        out["base"] = "downloads/glide/base/download.json"
    else:
        out["base"] = f"results/paper/glide/runs/{w.model}/model.safetensors"
    if w.model == "released_clip":  # noised_clip.load_clip("released") reads these two folders
        out["clip_image"] = "downloads/glide/clip_image_enc/download.json"
        out["clip_text"] = "downloads/glide/clip_text_enc/download.json"
    return out


def _glide_paper_sampling(w):
    options = dict(GLIDE_PAPER["sample"])
    if w.model == "released_clip":
        options.update(GLIDE_PAPER_CLIP, clip_model="released")
    return " ".join(f"{k}={v}" for k, v in options.items())


# released_clip: the released base guided by the released noised CLIP (glide_paper.clip_sample), then upsampled
rule glide_paper_sample:
    input:
        unpack(_glide_paper_inputs),
    output:
        "results/paper/glide/samples/{model}__coco30k/samples.json",
    wildcard_constraints:
        model="released|released_clip|finetune_laion",
    log:
        "logs/paper/glide_paper_sample_{model}.log",
    resources:
        **heavy(gpus=8, mem_mb=200000, runtime=720, nproc_per_node=8),
    conda:
        conda_env("glide_finetune")
    params:
        base=lambda w: "released" if w.model.startswith("released") else f"results/paper/glide/runs/{w.model}",
        sampling=_glide_paper_sampling,
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
    rows = ["released"] + (["released_clip"] if GLIDE_PAPER_CLIP else [])
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
             "title='GLIDE zero-shot MS-COCO 30k at 256 px (paper column: the 3.5B model with classifier-free "
             "guidance; released: filtered 300M; released_clip: guided by the released noised CLIP)' "
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
