# titok_rar, tokenizers (projects/titok_rar: prepare, train_tokenizer, evaluate, pretokenize, download).
#   tiny:  the whole chain with tiny models for a few steps (smoke): VQGAN teacher -> TiTok stage 1 -> stage 2,
#          a single-stage VAE, TA-TiTok, evaluation, pretokenization, tables
#   toy:   the digits (80 digit-colour classes): a toy VQGAN as the proxy-code teacher, TiTok with K = 4/8/16/32
#          through both stages, single-stage VQ and VAE at K = 16, TA-TiTok (caption-guided decoder) at K = 16;
#          tables rFID/PSNR vs K, stage 1 vs 1+2, VQ vs VAE, the VQGAN's own reconstruction beside TiTok's, TA-TiTok
#          vs TiTok, with the paper's rFID beside the rows of its token count (long on 2 CPU cores: target `titok`)
#   paper: the released tokenizers' rFID on ImageNet val beside the paper's, and the TiTok-B-64 recipe (stage 1,
#          stage 2) on 8-GPU nodes; ImageNet class folders must be at data/paper/imagenet/{train,val}
# Targets: titok (at config["scale"]); the tiny chain joins `smoke`. Token folders for the generators
# (titok_rar_generators.smk): data/<scale>/titok_rar/tokens/<name>/meta.json, name = vqgan | k<K> | tatitok_k<K> (toy),
# vqgan | titok_l32 | titok_b64 | titok_s128 (paper, the released tokenizers).

import glob
import re

from projects.titok_rar.download import DOWNLOADS as TT_DOWNLOADS

TT = "projects/titok_rar"
TT_CFG = os.path.join(REPO, TT, "configs")  # absolute: steps run in the working directory (--directory)
TT_K = config["titok_tokens"]  # the K sweep per scale (config.yaml)
TT_SINGLE_K = config["titok_single_tokens"]
# training seeds of the quantizer table's single-stage runs (seed N > 0: k<K>_<mode>_seed<N>, training.seed=N)
TT_SEEDS = config["titok_seeds"]
# rFID on ImageNet val 50k reported for the released tokenizers: TiTok paper (arXiv:2406.07550) Table 2 /
# README_TiTok.md of bytedance/1d-tokenizer
TT_PAPER_RFID = {"titok_l32": 2.21, "titok_b64": 1.70, "titok_s128": 1.71}
TT_PAPER_RECIPE = config["titok_paper_recipe"]  # reproduced at paper scale (configs/training/TiTok/stage{1,2}/)
TT_PAPER_GPUS = config["titok_paper_gpus"]  # one node


def tt_recipes(folder, prefix=""):
    """Names of the recipe YAMLs in configs/<folder>/ (<prefix><name>.yaml): the registry the wildcards follow."""
    paths = sorted(glob.glob(os.path.join(TT_CFG, folder, f"{prefix}*.yaml")))
    return [os.path.basename(p)[len(prefix):-len(".yaml")] for p in paths]


# paper-scale TiTok recipes with both stages; the single-stage quantizers of the toy comparison (titok_single_<mode>)
TT_PAPER_TRAIN = [n for n in tt_recipes("training/TiTok/stage1") if n in tt_recipes("training/TiTok/stage2")]
TT_SINGLE_MODES = tt_recipes("toy", "titok_single_")
if TT_PAPER_RECIPE not in TT_PAPER_TRAIN:
    raise ValueError(f"config titok_paper_recipe: {TT_PAPER_RECIPE!r} has no stage1+stage2 recipe in "
                     f"{TT_CFG}/training/TiTok; expected one of {TT_PAPER_TRAIN}")
# the released TiTok tokenizers (projects/titok_rar/download.py DOWNLOADS items titok_*)
TT_RELEASED = [n for n in TT_DOWNLOADS if n.startswith("titok_")]
TT_TABLES = ["tokens", "stages", "quantizer", "vqgan", "tatitok"]  # tt_tables() below: the toy tables, in target order

# tiny: the recipes' shapes with tiny widths, 3 steps of 8 images (config.yaml titok_tiny_overrides)
TT_TINY = " ".join(config["titok_tiny_overrides"])


def tt_scale_opts(scale):
    return TT_TINY if scale == "tiny" else ""


def tt_data(scale):
    return f"data/{scale}/titok_rar/digits"


def tt_final(scale, run):
    """config.json of a trained tokenizer; run = vqgan | k<K>/stage1 | k<K>/stage2 | k<K>_<vq|vae>/single |
    tatitok_k<K>/single."""
    return f"results/{scale}/titok_rar/{run}/final/config.json"


rule titok_prepare:
    input:
        "data/{scale}/digits",
    output:
        "data/{scale}/titok_rar/digits/config.yaml",
    wildcard_constraints:
        scale="tiny|toy",
    log:
        "logs/{scale}/titok_prepare.log",
    conda:
        conda_env("titok_rar")
    shell:
        step(f"{TT}/prepare.py scale={{wildcards.scale}} digits={{input}} out_dir=data/{{wildcards.scale}}/titok_rar/digits")


rule titok_train_vqgan:
    input:
        data="data/{scale}/titok_rar/digits/config.yaml",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        "results/{scale}/titok_rar/vqgan/final/config.json",
        **provenance("results/{scale}/titok_rar/vqgan", "titok_rar", "titok_train_vqgan"),
        **curves("results/{scale}/titok_rar/vqgan", "titok_rar", "titok_train_vqgan"),
    wildcard_constraints:
        scale="tiny|toy",
    log:
        "logs/{scale}/titok_train_vqgan.log",
    threads: train_threads
    resources:
        **heavy(gpus=1, cpus_per_task=train_threads, mem_mb=4000, runtime=120),
    conda:
        conda_env("titok_rar")
    params:
        extra=lambda w: tt_scale_opts(w.scale),
    shell:
        launch(f"{TT}/train_tokenizer.py {TT_CFG}/toy/vqgan_digits.yaml scale={{wildcards.scale}} threads=1 progress=false "
               f"dataset.params.train_shards_path_or_url=data/{{wildcards.scale}}/titok_rar/digits/shards/train "
               f"losses.perceptual_loss=digits:{{input.features}} training.enable_tf32=false "
               f"experiment.output_dir=results/{{wildcards.scale}}/titok_rar/vqgan {{params.extra}}")


rule titok_train_stage1:
    input:
        data="data/{scale}/titok_rar/digits/config.yaml",
        teacher="results/{scale}/titok_rar/vqgan/final/config.json",
    output:
        "results/{scale}/titok_rar/k{k}/stage1/final/config.json",
        **provenance("results/{scale}/titok_rar/k{k}/stage1", "titok_rar", "titok_train_stage1 K={k}"),
        **curves("results/{scale}/titok_rar/k{k}/stage1", "titok_rar", "titok_train_stage1 K={k}"),
    wildcard_constraints:
        scale="tiny|toy", k=r"\d+",
    log:
        "logs/{scale}/titok_train_stage1_k{k}.log",
    threads: train_threads
    resources:
        **heavy(gpus=1, cpus_per_task=train_threads, mem_mb=4000, runtime=120),
    conda:
        conda_env("titok_rar")
    params:
        extra=lambda w: tt_scale_opts(w.scale),
    shell:
        launch(f"{TT}/train_tokenizer.py {TT_CFG}/toy/titok_stage1.yaml scale={{wildcards.scale}} threads=1 progress=false "
               f"dataset.params.train_shards_path_or_url=data/{{wildcards.scale}}/titok_rar/digits/shards/train "
               f"model.vq_model.num_latent_tokens={{wildcards.k}} "
               f"model.vq_model.pretrained_tokenizer_weight=results/{{wildcards.scale}}/titok_rar/vqgan/final "
               f"experiment.output_dir=results/{{wildcards.scale}}/titok_rar/k{{wildcards.k}}/stage1 {{params.extra}}")


rule titok_train_stage2:
    input:
        data="data/{scale}/titok_rar/digits/config.yaml",
        teacher="results/{scale}/titok_rar/vqgan/final/config.json",
        stage1="results/{scale}/titok_rar/k{k}/stage1/final/config.json",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        "results/{scale}/titok_rar/k{k}/stage2/final/config.json",
        **provenance("results/{scale}/titok_rar/k{k}/stage2", "titok_rar", "titok_train_stage2 K={k}"),
        **curves("results/{scale}/titok_rar/k{k}/stage2", "titok_rar", "titok_train_stage2 K={k}"),
    wildcard_constraints:
        scale="tiny|toy", k=r"\d+",
    log:
        "logs/{scale}/titok_train_stage2_k{k}.log",
    threads: train_threads
    resources:
        **heavy(gpus=1, cpus_per_task=train_threads, mem_mb=4000, runtime=120),
    conda:
        conda_env("titok_rar")
    params:
        extra=lambda w: tt_scale_opts(w.scale),
    shell:
        launch(f"{TT}/train_tokenizer.py {TT_CFG}/toy/titok_stage2.yaml scale={{wildcards.scale}} threads=1 progress=false "
               f"dataset.params.train_shards_path_or_url=data/{{wildcards.scale}}/titok_rar/digits/shards/train "
               f"model.vq_model.num_latent_tokens={{wildcards.k}} losses.perceptual_loss=digits:{{input.features}} "
               f"model.vq_model.pretrained_tokenizer_weight=results/{{wildcards.scale}}/titok_rar/vqgan/final "
               f"experiment.init_weight=results/{{wildcards.scale}}/titok_rar/k{{wildcards.k}}/stage1/final "
               f"experiment.output_dir=results/{{wildcards.scale}}/titok_rar/k{{wildcards.k}}/stage2 {{params.extra}}")


rule titok_train_single:
    input:
        data="data/{scale}/titok_rar/digits/config.yaml",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        "results/{scale}/titok_rar/k{k}_{mode}{seed}/single/final/config.json",
        **provenance("results/{scale}/titok_rar/k{k}_{mode}{seed}/single", "titok_rar",
                     "titok_train_single K={k} {mode}{seed}"),
        **curves("results/{scale}/titok_rar/k{k}_{mode}{seed}/single", "titok_rar", "titok_train_single K={k} {mode}{seed}"),
    wildcard_constraints:
        scale="tiny|toy", k=r"\d+", mode=one_of(TT_SINGLE_MODES), seed=SEED_SUFFIX,
    log:
        "logs/{scale}/titok_train_single_k{k}_{mode}{seed}.log",
    threads: train_threads
    resources:
        **heavy(gpus=1, cpus_per_task=train_threads, mem_mb=4000, runtime=120),
    conda:
        conda_env("titok_rar")
    params:
        extra=lambda w: tt_scale_opts(w.scale),
        seed=lambda w: f" training.seed={w.seed[5:]}" if w.seed else "",
    shell:
        launch(f"{TT}/train_tokenizer.py {TT_CFG}/toy/titok_single_{{wildcards.mode}}.yaml scale={{wildcards.scale}} "
               f"threads=1 progress=false dataset.params.train_shards_path_or_url=data/{{wildcards.scale}}/titok_rar/digits/shards/train "
               f"model.vq_model.num_latent_tokens={{wildcards.k}} losses.perceptual_loss=digits:{{input.features}} "
               f"experiment.output_dir=results/{{wildcards.scale}}/titok_rar/k{{wildcards.k}}_{{wildcards.mode}}{{wildcards.seed}}/single "
               f"{{params.extra}}{{params.seed}}")


rule titok_train_tatitok:
    # TA-TiTok (configs/toy/tatitok.yaml): the single-stage VQ recipe of titok_train_single with the decoder attending
    # to each digit's caption through the frozen toy text encoder, which final/ keeps (text_encoder.json +
    # .safetensors) so that evaluation, pretokenization and MaskGen's sampling decode with the same guidance.
    # tatitok_k<K>_drop<P>: the same with P % of the training captions dropped (model.text_guidance_dropout, ours)
    input:
        data="data/{scale}/titok_rar/digits/config.yaml",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        "results/{scale}/titok_rar/tatitok_k{k}{drop}/single/final/config.json",
        **provenance("results/{scale}/titok_rar/tatitok_k{k}{drop}/single", "titok_rar",
                     "titok_train_tatitok K={k}{drop}"),
        **curves("results/{scale}/titok_rar/tatitok_k{k}{drop}/single", "titok_rar", "titok_train_tatitok K={k}{drop}"),
    wildcard_constraints:
        scale="tiny|toy", k=r"\d+", drop=r"(_drop\d\d?)?",
    log:
        "logs/{scale}/titok_train_tatitok_k{k}{drop}.log",
    threads: train_threads
    resources:
        **heavy(gpus=1, cpus_per_task=train_threads, mem_mb=4000, runtime=120),
    conda:
        conda_env("titok_rar")
    params:
        extra=lambda w: tt_scale_opts(w.scale),
        dropout=lambda w: f" model.text_guidance_dropout={int(w.drop[5:]) / 100}" if w.drop else "",
    shell:
        launch(f"{TT}/train_tokenizer.py {TT_CFG}/toy/tatitok.yaml scale={{wildcards.scale}} threads=1 progress=false "
               f"dataset.params.train_shards_path_or_url=data/{{wildcards.scale}}/titok_rar/digits/shards/train "
               f"model.vq_model.num_latent_tokens={{wildcards.k}} losses.perceptual_loss=digits:{{input.features}} "
               f"experiment.output_dir=results/{{wildcards.scale}}/titok_rar/tatitok_k{{wildcards.k}}{{wildcards.drop}}/single "
               f"{{params.extra}}{{params.dropout}}")


def tt_run_of(name):
    """Evaluation name -> run folder: vqgan, k16_stage1 -> k16/stage1, k16_vae_single -> k16_vae/single,
    k16_vae_seed1_single -> k16_vae_seed1/single,
    tatitok_k16_single -> tatitok_k16/single, tatitok_k16_drop50_single -> tatitok_k16_drop50/single."""
    if name == "vqgan":
        return "vqgan"
    head, _, tail = name.rpartition("_")
    return f"{head}/{tail}"


rule titok_evaluate:
    input:
        tok=lambda w: tt_final(w.scale, tt_run_of(w.name)),
        vqgan="results/{scale}/titok_rar/vqgan/final/config.json",
        data="data/{scale}/titok_rar/digits/config.yaml",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        json="results/{scale}/titok_rar/eval/{name}.json",
        grid=reported("results/{scale}/titok_rar/eval/{name}_grid.png", "titok_rar", "Tokenizer reconstructions",
                      "{name}", "titok_recon"),
    wildcard_constraints:
        scale="tiny|toy", name=rf"vqgan|k\d+_stage[12]|k\d+_({one_of(TT_SINGLE_MODES)}){SEED_SUFFIX}_single|tatitok_k\d+(_drop\d\d?)?_single",
    log:
        "logs/{scale}/titok_evaluate_{name}.log",
    threads: step_threads
    resources:
        **heavy(mem_mb=4000, runtime=30),
    conda:
        conda_env("titok_rar")
    params:
        tok=lambda w, input: os.path.dirname(input.tok),
        # a seeded run's row: k16_vq_seed1_single -> experiment and checkpoint k16_vq_single_seed1, seed 0's both
        # k16_vq_single (shared/tables.py joins the rows whose names differ by the seed suffix alone)
        experiment=lambda w: tt_experiment(w.name),
        checkpoint=lambda w: f" checkpoint={tt_experiment(w.name)}" if tt_single_run(w.name) else "",
    shell:
        launch(f"{TT}/evaluate.py scale={{wildcards.scale}} tokenizer={{params.tok}} experiment={{params.experiment}}{{params.checkpoint}} "
               f"vqgan=results/{{wildcards.scale}}/titok_rar/vqgan/final threads=1 "
               f"data=data/{{wildcards.scale}}/titok_rar/digits/shards/test extractor=digits:{{input.features}} "
               f"out={{output.json}}")


def tt_experiment(name):
    """An evaluation's experiment name, a seed moved to the end: k16_vq_seed1_single -> k16_vq_single_seed1."""
    m = re.fullmatch(r"(.+)_seed([1-9][0-9]*)_single", name)
    return f"{m.group(1)}_single_seed{m.group(2)}" if m else name


def tt_single_run(name):
    """Whether an evaluation is of a single-stage TiTok run (the runs trained with config titok_seeds)."""
    return re.fullmatch(rf"k\d+_({one_of(TT_SINGLE_MODES)}){SEED_SUFFIX}_single", name) is not None


def tt_seeded(scale, name):
    """k16_vq_single -> the evaluations of its training seeds (config titok_seeds)."""
    stem = name.removesuffix("_single")
    return [f"{stem}_seed{s}_single" if s else name for s in TT_SEEDS[scale]]


def tt_token_run(name):
    """Token folder name -> the tokenizer run it encodes with: vqgan, k<K> (two-stage TiTok), tatitok_k<K> (MaskGen's
    TA-TiTok: the folder keeps the captions and meta.json names its text guidance, pretokenize.py)."""
    if name == "vqgan":
        return "vqgan"
    return f"{name}/single" if name.startswith("tatitok_") else f"{name}/stage2"


rule titok_pretokenize:
    input:
        tok=lambda w: tt_final(w.scale, tt_token_run(w.name)),
        data="data/{scale}/titok_rar/digits/config.yaml",
    output:
        "data/{scale}/titok_rar/tokens/{name}/meta.json",
    wildcard_constraints:
        scale="tiny|toy", name=r"vqgan|k\d+|tatitok_k\d+(_drop\d\d?)?",
    log:
        "logs/{scale}/titok_pretokenize_{name}.log",
    threads: step_threads
    resources:
        **heavy(mem_mb=4000, runtime=30),
    conda:
        conda_env("titok_rar")
    params:
        tok=lambda w, input: os.path.dirname(input.tok),
    shell:
        launch(f"{TT}/pretokenize.py scale={{wildcards.scale}} tokenizer={{params.tok}} threads=1 "
               f"data=data/{{wildcards.scale}}/titok_rar/digits/shards/train "
               f"out_dir=data/{{wildcards.scale}}/titok_rar/tokens/{{wildcards.name}}")


# The paper's reconstruction numbers (ImageNet val 50k, 256 px) that stand beside a toy row of the same token count:
# TiTok-L-32 2.21 (README_TiTok.md model zoo; TiTok arXiv:2406.07550 Table 2) and the MaskGIT-VQGAN at its 256 tokens
# 2.28 (TiTok Table 2, its MaskGIT row). Other rows have no paper number at their K (the notes give the nearest).
TT_TOY_PAPER_RFID = {"k32_stage2": ("TiTok-L-32", 2.21), "vqgan": ("the MaskGIT-VQGAN at 256 tokens", 2.28)}
# (no ': ' and no quotes in the notes: each travels as a YAML string inside single quotes)
TT_NOTES_QUANTIZER = ("the paper at K=64 (README_TiTok.md, single stage) - TiTok-BL-64 VQ 8k codes rFID 2.06, "
                      "TiTok-BL-64 VAE 16 channels rFID 1.25 (no K=16 release)")
# TA-TiTok trained with this percentage of its captions dropped (tatitok_k<K>_drop<P>, ours): the toy caption says
# all the digits CNN sees, and the released recipe's decoder learns to draw it and ignore the tokens; dropped half
# the time, the caption cannot stand in for the tokens. 50 % is not tuned (the one value tried).
TT_TATITOK_DROP = 50
TT_NOTES_TATITOK = ("the rows share the single-stage VQ recipe and K (configs/toy/titok_single_vq.yaml vs tatitok.yaml); "
                    "TA-TiTok decodes each test image with its own caption; "
                    f"_drop{TT_TATITOK_DROP} = trained with {TT_TATITOK_DROP} % of the captions dropped "
                    f"(model.text_guidance_dropout={TT_TATITOK_DROP / 100}, ours). The paper (README_MaskGen.md) - TA-TiTok VQ "
                    "at 32/64/128 tokens rFID 3.95/2.43/1.53 on ImageNet val (no K=16 release)")


def tt_tatitok_k():
    """K of the toy TA-TiTok: the single-stage comparison's (config titok_single_tokens), so its row stands beside
    the single-stage VQ TiTok of the same recipe and K."""
    return TT_SINGLE_K


# the differences a table judges against the spread (training seeds, config titok_seeds; bootstrap intervals)
TT_CLAIMS = {"quantizer": [[f"k{TT_SINGLE_K}_vae_single", f"k{TT_SINGLE_K}_vq_single"]]}


# toy tables: which -> (title, evaluation names, paper column {name: {rfid: value}}, notes)
def tt_tables(scale):
    ks = TT_K[scale]
    k1 = TT_SINGLE_K if TT_SINGLE_K in ks else ks[-1]
    kt = tt_tatitok_k()

    def paper(names):
        return {n: {"rfid": TT_TOY_PAPER_RFID[n][1]} for n in names if n in TT_TOY_PAPER_RFID}

    def paper_note(names):
        rows = [f"{n} beside {TT_TOY_PAPER_RFID[n][0]} ({TT_TOY_PAPER_RFID[n][1]})" for n in names
                if n in TT_TOY_PAPER_RFID]
        return ("rfid (paper) is ImageNet val 50k at 256 px (TiTok paper Table 2, README_TiTok.md), for orientation "
                "only - " + " and ".join(rows)) if rows else ""

    tables = {
        "tokens": ("TiTok rFID and PSNR vs number of tokens K (stage 1 + 2)", [f"k{k}_stage2" for k in ks]),
        "stages": ("TiTok stage 1 only vs stage 1 + 2", [f"k{k}_stage{s}" for k in ks for s in (1, 2)]),
        "quantizer": (f"VQ vs VAE at K={k1} (single stage, pixel decoder)",
                      tt_seeded(scale, f"k{k1}_vq_single") + tt_seeded(scale, f"k{k1}_vae_single")),
        "vqgan": ("The VQGAN at its 64 codes beside TiTok at K tokens", ["vqgan"] + [f"k{k}_stage2" for k in ks]),
        "tatitok": (f"TA-TiTok (text-guided decoder) vs TiTok at K={kt} (single stage, VQ)",
                    [f"k{kt}_vq_single", f"tatitok_k{kt}_single", f"tatitok_k{kt}_drop{TT_TATITOK_DROP}_single"]),
    }
    notes = {"quantizer": TT_NOTES_QUANTIZER, "tatitok": TT_NOTES_TATITOK}
    return {w: (title, names, paper(names), notes.get(w, paper_note(names)))
            for w, (title, names) in tables.items()}


def tt_paper_arg(paper):
    """{name: {metric: value}} as the YAML mapping shared/tables.py reads from paper='...'."""
    return "{" + ", ".join(f"{n}: {{" + ", ".join(f"{m}: {v}" for m, v in ms.items()) + "}" for n, ms in paper.items()) + "}"


def tt_opt(key, value):
    """A quoted shared/tables.py option, or nothing when the value is empty."""
    return f"{key}='{value}'" if value else ""


rule titok_table:
    input:
        lambda w: [f"results/{w.scale}/titok_rar/eval/{n}.json" for n in tt_tables(w.scale)[w.which][1]],
    output:
        md="results/{scale}/tables/titok_{which}.md",
        csv="results/{scale}/tables/titok_{which}.csv",
        claims="results/{scale}/tables/titok_{which}.claims.json",
        html=reported("results/{scale}/tables/titok_{which}.html", "titok_rar", "Tables", "titok_{which}",
                      "project_table"),
    wildcard_constraints:
        scale="tiny|toy", which=one_of(TT_TABLES),
    log:
        "logs/{scale}/titok_table_{which}.log",
    conda:
        conda_env("titok_rar")
    params:
        inputs=lambda w, input: ",".join(input),
        title=lambda w: tt_tables(w.scale)[w.which][0],
        # paper='{...}' / notes='...' only where the table has them (an empty notes= would print an empty note)
        paper=lambda w: tt_opt("paper", tt_paper_arg(tt_tables(w.scale)[w.which][2])
                               if tt_tables(w.scale)[w.which][2] else ""),
        notes=lambda w: tt_opt("notes", tt_tables(w.scale)[w.which][3]),
        # rFID and PSNR against K beside the K table (titok_tokens_{{rfid,psnr}}_vs_tokens.png)
        plots=lambda w: "[tokens]" if w.which == "tokens" else "[]",
        claims=lambda w: "[" + ",".join(f"[{a},{b}]" for a, b in TT_CLAIMS.get(w.which, [])) + "]",
    shell:
        step("shared/tables.py scale={wildcards.scale} inputs=[{params.inputs}] title='{params.title}' "
             "plots={params.plots} {params.paper} {params.notes} claims='{params.claims}' out_claims={output.claims} "
             "metrics=[rfid,psnr,ssim,codebook_usage,token_swap_change,tokens_per_image,encode_images_per_sec,decode_images_per_sec] "
             "out_md={output.md} out_csv={output.csv}")


# paper scale ---------------------------------------------------------------------------------------------------
rule titok_download:
    output:
        "downloads/titok_rar/{item}/download.json",
    wildcard_constraints:
        item=one_of(TT_DOWNLOADS),
    log:
        "logs/paper/titok_download_{item}.log",
    conda:
        conda_env("titok_rar")
    shell:
        step(f"{TT}/download.py scale=paper item={{wildcards.item}} out_dir=downloads/titok_rar/{{wildcards.item}}")


rule titok_prepare_imagenet:
    # no input: ImageNet is not downloadable here; convert_to_wds fails naming the folder when it is missing
    output:
        "data/paper/titok_rar/shards/{split}/index.json",
    wildcard_constraints:
        split="train|val",
    log:
        "logs/paper/titok_prepare_imagenet_{split}.log",
    threads: config["local_threads"]
    resources:
        **heavy(cpus_per_task=16, mem_mb=32000, runtime=600),
    conda:
        conda_env("titok_rar")
    shell:
        launch(f"{TT}/convert_to_wds.py scale=paper src=data/paper/imagenet/{{wildcards.split}} "
               f"out_dir=data/paper/titok_rar/shards/{{wildcards.split}}")


rule titok_paper_evaluate_released:
    input:
        tok="downloads/titok_rar/{name}/download.json",
        vqgan="downloads/titok_rar/maskgit_vqgan/download.json",
        val="data/paper/titok_rar/shards/val/index.json",
        inception="downloads/titok_rar/inception/download.json",
    output:
        "results/paper/titok_rar/eval/released_{name}.json",
    wildcard_constraints:
        name=one_of(TT_RELEASED),
    log:
        "logs/paper/titok_paper_evaluate_released_{name}.log",
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=64000, runtime=240),
    conda:
        conda_env("titok_rar")
    shell:
        launch(f"{TT}/evaluate.py scale=paper tokenizer=downloads/titok_rar/{{wildcards.name}} device=cuda "
               f"experiment=released_{{wildcards.name}} data=data/paper/titok_rar/shards/val "
               f"extractor=inception:downloads/titok_rar/inception/inception-2015-12-05.pt out={{output}}")


rule titok_paper_train:
    input:
        train="data/paper/titok_rar/shards/train/index.json",
        vqgan="downloads/titok_rar/maskgit_vqgan/download.json",
        convnext="downloads/titok_rar/convnext_small/download.json",
        stage1=lambda w: ([] if w.stage == "1" else
                          f"results/paper/titok_rar/{w.name}/stage1/final/config.json"),
    output:
        "results/paper/titok_rar/{name}/stage{stage}/final/config.json",
    wildcard_constraints:
        name=one_of(TT_PAPER_TRAIN), stage="1|2",
    log:
        "logs/paper/titok_paper_train_{name}_stage{stage}.log",
    resources:
        **heavy(gpus=TT_PAPER_GPUS, nproc_per_node=TT_PAPER_GPUS, cpus_per_task=96, mem_mb=480000,
                runtime=60 * 72),
    conda:
        conda_env("titok_rar")
    shell:
        launch(f"{TT}/train_tokenizer.py {TT_CFG}/training/TiTok/stage{{wildcards.stage}}/{{wildcards.name}}.yaml "
               f"scale=paper experiment.output_dir=results/paper/titok_rar/{{wildcards.name}}/stage{{wildcards.stage}}")


rule titok_paper_evaluate_trained:
    input:
        tok="results/paper/titok_rar/{name}/stage2/final/config.json",
        val="data/paper/titok_rar/shards/val/index.json",
        inception="downloads/titok_rar/inception/download.json",
    output:
        "results/paper/titok_rar/eval/ours_{name}.json",
    log:
        "logs/paper/titok_paper_evaluate_trained_{name}.log",
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=64000, runtime=240),
    conda:
        conda_env("titok_rar")
    shell:
        launch(f"{TT}/evaluate.py scale=paper tokenizer=results/paper/titok_rar/{{wildcards.name}}/stage2/final "
               f"device=cuda experiment=ours_{{wildcards.name}} data=data/paper/titok_rar/shards/val "
               f"extractor=inception:downloads/titok_rar/inception/inception-2015-12-05.pt out={{output}}")


rule titok_paper_pretokenize:
    input:
        tok=lambda w: f"downloads/titok_rar/{'maskgit_vqgan' if w.name == 'vqgan' else w.name}/download.json",
        train="data/paper/titok_rar/shards/train/index.json",
    output:
        "data/paper/titok_rar/tokens/{name}/meta.json",
    wildcard_constraints:
        name=one_of(["vqgan", *TT_PAPER_RFID]),
    log:
        "logs/paper/titok_paper_pretokenize_{name}.log",
    resources:
        **heavy(gpus=1, mem_mb=64000, runtime=600),
    conda:
        conda_env("titok_rar")
    params:
        tok=lambda w: ("downloads/titok_rar/maskgit_vqgan/maskgit-vqgan-imagenet-f16-256.bin" if w.name == "vqgan"
                       else f"downloads/titok_rar/{w.name}"),
    shell:
        launch(f"{TT}/pretokenize.py scale=paper tokenizer={{params.tok}} device=cuda ten_crop=true "
               f"data=data/paper/titok_rar/shards/train out_dir=data/paper/titok_rar/tokens/{{wildcards.name}}")


# paper-scale single-stage TiTok (ImageNet) and TA-TiTok (DataComp) recipes, with the LPIPS + ConvNeXt perceptual
# loss and (TA-TiTok) the CLIP text encoder from projects/titok_rar/download.py (lpips_vgg, open_clip_vit_l14_336)
TT_PAPER_SINGLE = tt_recipes("training/TiTok/single_stage")  # titok_bl64_vq8k, titok_bl64_vae_c16
TT_PAPER_TATITOK = tt_recipes("training/TA-TiTok")  # tatitok_bl32_vq, tatitok_bl128_vq, tatitok_bl32_vae
TT_PERCEPTUAL_LPIPS = ["downloads/titok_rar/lpips_vgg/download.json",
                       "downloads/titok_rar/convnext_small/download.json"]  # "lpips-convnext_s-1.0-0.1:<both>"


rule titok_paper_train_single:
    input:
        train="data/paper/titok_rar/shards/train/index.json",
        perceptual=TT_PERCEPTUAL_LPIPS,
    output:
        "results/paper/titok_rar/{name}/single/final/config.json",
    wildcard_constraints:
        name=one_of(TT_PAPER_SINGLE),
    log:
        "logs/paper/titok_paper_train_single_{name}.log",
    resources:
        **heavy(gpus=TT_PAPER_GPUS, nproc_per_node=TT_PAPER_GPUS, cpus_per_task=96, mem_mb=480000,
                runtime=60 * 72),
    conda:
        conda_env("titok_rar")
    shell:
        launch(f"{TT}/train_tokenizer.py {TT_CFG}/training/TiTok/single_stage/{{wildcards.name}}.yaml scale=paper "
               f"experiment.output_dir=results/paper/titok_rar/{{wildcards.name}}/single")


rule titok_paper_train_tatitok:
    # DataComp shards (img2dataset layout) are not downloadable here: like ImageNet they must be at the config's
    # dataset.params.train_shards_path_or_url (data/paper/datacomp_sharded/train)
    input:
        perceptual=TT_PERCEPTUAL_LPIPS,
        clip="downloads/titok_rar/open_clip_vit_l14_336/download.json",
    output:
        "results/paper/titok_rar/{name}/final/config.json",
    wildcard_constraints:
        name=one_of(TT_PAPER_TATITOK),
    log:
        "logs/paper/titok_paper_train_tatitok_{name}.log",
    resources:
        **heavy(gpus=TT_PAPER_GPUS, nproc_per_node=TT_PAPER_GPUS, cpus_per_task=96, mem_mb=480000,
                runtime=60 * 72),
    conda:
        conda_env("titok_rar")
    shell:
        launch(f"{TT}/train_tokenizer.py {TT_CFG}/training/TA-TiTok/{{wildcards.name}}.yaml scale=paper "
               f"experiment.output_dir=results/paper/titok_rar/{{wildcards.name}}")


def tt_recipe(folder, name):
    path = os.path.join(TT_CFG, folder, f"{name}.yaml")
    with open(path) as f:
        return yaml.safe_load(f)


# the VQ TA-TiToks: their tokens are MaskGen-VQ's (pretokenize.py refuses a VAE's continuous tokens)
TT_PAPER_TATITOK_VQ = [n for n in TT_PAPER_TATITOK
                       if tt_recipe("training/TA-TiTok", n)["model"]["vq_model"]["quantize_mode"] == "vq"]


rule titok_paper_pretokenize_tatitok:
    # MaskGen's training tokens: the DataComp shards of the TA-TiTok's own recipe (dataset.params, staged by hand as
    # for its training) encoded by our trained TA-TiTok, captions kept; meta.json names its text guidance
    input:
        tok="results/paper/titok_rar/{name}/final/config.json",
    output:
        "data/paper/titok_rar/tokens/{name}/meta.json",
    wildcard_constraints:
        name=one_of(TT_PAPER_TATITOK_VQ),
    log:
        "logs/paper/titok_paper_pretokenize_tatitok_{name}.log",
    resources:
        **heavy(gpus=1, mem_mb=64000, runtime=600),
    conda:
        conda_env("titok_rar")
    params:
        # quoted in the command: the shard pattern's {000000..140089} must reach the loader, not bash's brace expansion
        data=lambda w: tt_recipe("training/TA-TiTok", w.name)["dataset"]["params"]["train_shards_path_or_url"],
        caption_key=lambda w: tt_recipe("training/TA-TiTok", w.name)["dataset"]["params"].get("caption_key", "txt"),
    shell:
        launch(f"{TT}/pretokenize.py scale=paper tokenizer=results/paper/titok_rar/{{wildcards.name}}/final device=cuda "
               f"data='{{params.data}}' caption_key={{params.caption_key}} "
               f"out_dir=data/paper/titok_rar/tokens/{{wildcards.name}}")


rule titok_paper_tokenizers:
    # paper scale only (not part of `titok`): the single-stage and TA-TiTok trainings
    input:
        [f"results/paper/titok_rar/{n}/single/final/config.json" for n in TT_PAPER_SINGLE]
        + [f"results/paper/titok_rar/{n}/final/config.json" for n in TT_PAPER_TATITOK],


rule titok_paper_table:
    input:
        [f"results/paper/titok_rar/eval/released_{n}.json" for n in TT_PAPER_RFID]
        + [f"results/paper/titok_rar/eval/ours_{TT_PAPER_RECIPE}.json"],
    output:
        md="results/paper/tables/titok_rfid.md",
        csv="results/paper/tables/titok_rfid.csv",
    log:
        "logs/paper/titok_paper_table.log",
    conda:
        conda_env("titok_rar")
    params:
        inputs=lambda w, input: ",".join(input),
        paper="{" + ", ".join(f"released_{n}: {{rfid: {v}}}" for n, v in TT_PAPER_RFID.items())
              + f", ours_{TT_PAPER_RECIPE}: {{rfid: {TT_PAPER_RFID[TT_PAPER_RECIPE]}}}" + "}",
    shell:
        step("shared/tables.py scale=paper inputs=[{params.inputs}] title='TiTok rFID on ImageNet val (50k, 256px)' "
             "paper='{params.paper}' metrics=[rfid,psnr,ssim,codebook_usage,token_swap_change,tokens_per_image] "
             "notes='Paper column: TiTok (arXiv:2406.07550) Table 2 / README_TiTok.md' "
             "out_md={output.md} out_csv={output.csv}")


def titok_targets(scale):
    if scale == "paper":
        return ["results/paper/tables/titok_rfid.md"]
    return [f"results/{scale}/tables/titok_{w}.md" for w in TT_TABLES] + [
        f"data/{scale}/titok_rar/tokens/{n}/meta.json"
        for n in ["vqgan"] + [f"k{k}" for k in TT_K[scale]] + [f"tatitok_k{tt_tatitok_k()}"]]


rule titok:
    input:
        titok_targets(config["scale"]),


@register_targets(in_default=False)
def titok_smoke(scale):
    # in_default=False: toy runs are long (about an hour of training on 2 cores): `titok` and `toy`, never `all`
    if scale != "tiny":
        return titok_targets(scale)
    # + the TA-TiTok table (its training, caption-guided evaluation) and its token folder (MaskGen's at tiny too)
    return ["results/tiny/tables/titok_tokens.md", "results/tiny/tables/titok_tatitok.md",
            "data/tiny/titok_rar/tokens/k8/meta.json", f"data/tiny/titok_rar/tokens/tatitok_k{tt_tatitok_k()}/meta.json"]
