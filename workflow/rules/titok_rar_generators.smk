# titok_rar generators (projects/titok_rar: train_generator.py, sample.py, generator_eval.py): MaskGIT on TiTok
# tokens, RAR on MaskGIT-VQGAN tokens (order ablation: raster / random / annealed), MaskGen on captioned tokens.
#   tiny:  random tiny tokenizers and models (generator_tokens.py), the whole chain in seconds (smoke)
#   toy:   the tokenizer project's pretokenized digits (data/toy/titok_rar/tokens/<name>, issue 11), 80 classes;
#          MaskGen on the TA-TiTok's tokens (tatitok_k<K>), decoded with its text guidance
#   paper: released RAR-B..XXL / MaskGIT-on-TiTok weights, 50 x 1000 class samples, gFID vs ADM's reference batch;
#          MaskGen-VQ-L trained by its recipe on our TA-TiTok's DataComp tokens, FID on MJHQ-30K's 30k prompts
# Targets: eval_rar, eval_maskgit, eval_maskgen (at config["scale"]); the tiny chain joins `smoke`.

import re

TRG = "projects/titok_rar"
TRG_RECIPES = f"{REPO}/{TRG}/configs/generator"  # absolute: steps may run in another --directory
# gFID reported by the papers: RAR (arXiv:2411.00776, Table 3 / README_RAR.md); TiTok with MaskGIT (arXiv:2406.07550,
# Table 2: TiTok-L-32 2.77, B-64 2.48, S-128 1.97)
TRG_PAPER_FID = {"rar_b": 1.95, "rar_l": 1.70, "rar_xl": 1.50, "rar_xxl": 1.48,
                 "maskgit_titok_l32": 2.77, "maskgit_titok_b64": 2.48, "maskgit_titok_s128": 1.97}
# which token folder each generator kind trains on (config.yaml titok_gen_tokens); toy/paper folders come from the
# tokenizer project's pretokenize rule
TRG_TOKENS = config["titok_gen_tokens"]
# the tiny/toy tables (config.yaml titok_gen_tables): table -> title and rows <run>__<variant>
TRG_TABLES = config["titok_gen_tables"]
# runs: those the tables name. rar_<order> on the VQGAN tokens (the order ablation), rar_annealed_k<K> on the TiTok
# tokens k<K> (RAR vs MaskGIT, K = MaskGIT's); the kind (maskgit | rar | maskgen) is the part before the first "_"
TRG_RUNS = one_of(dict.fromkeys(row.split("__")[0] for t in TRG_TABLES.values() for row in t["rows"]))


def trg_kind(run):
    return run.split("_")[0]


def trg_tokens(scale, kind, run=""):
    """meta.json of the token folder a generator trains on: a run named <...>_k<K> trains on k<K>, the others on
    config titok_gen_tokens[kind]. Tiny: random tiny tokenizers' folders (generator_tokens.py), except a TA-TiTok's
    (tatitok_k<K>), which the tokenizer project's tiny chain trains, so that MaskGen's decoding with its text
    guidance runs in smoke too; toy: the tokenizer project's folders."""
    m = re.fullmatch(r".*_(k\d+)", run)
    name = m.group(1) if m else TRG_TOKENS[kind]
    if scale == "tiny" and not name.startswith("tatitok_"):
        return f"data/tiny/titok_rar/gen_tokens/{name}/meta.json"
    return f"data/{scale}/titok_rar/tokens/{name}/meta.json"


def trg_toy_ready(scale):
    """Toy chains need the tokenizer project's token folders; plan them only once some rule makes those."""
    if scale == "tiny":
        return True
    wanted = [trg_tokens(scale, k) for k in TRG_TOKENS]
    return all(any(r.is_producer(p) for r in workflow.rules) for p in wanted)


rule titok_rar_gen_tiny_tokens:
    input:
        "data/tiny/digits",
    output:
        "data/tiny/titok_rar/gen_tokens/{name}/meta.json",
    wildcard_constraints:
        name=r"vqgan|k\d+",
    log:
        "logs/tiny/titok_rar_gen_tiny_tokens_{name}.log",
    conda:
        conda_env("titok_rar")
    shell:
        step(f"{TRG}/generator_tokens.py scale=tiny images={{input}}/train out=data/tiny/titok_rar/gen_tokens/{{wildcards.name}} "
             f"tokenizer_out=results/tiny/titok_rar/gen_tokenizers/{{wildcards.name}}")


rule titok_rar_gen_train:
    input:
        tokens=lambda w: trg_tokens(w.scale, trg_kind(w.run), w.run),
    output:
        "results/{scale}/titok_rar/gen/runs/{run}/final/generator.yaml",
        **provenance("results/{scale}/titok_rar/gen/runs/{run}", "titok_rar", "titok_rar_gen_train {run}"),
        **curves("results/{scale}/titok_rar/gen/runs/{run}", "titok_rar", "titok_rar_gen_train {run}"),
    wildcard_constraints:
        scale="tiny|toy", run=TRG_RUNS,
    log:
        "logs/{scale}/titok_rar_gen_train_{run}.log",
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=240),
    conda:
        conda_env("titok_rar")
    params:
        tokens=lambda w, input: os.path.dirname(input.tokens),
        kind=lambda w: trg_kind(w.run),
        order=lambda w: f"order={w.run.split('_')[1]}" if w.run.startswith("rar_") else "",
    shell:
        launch(f"{TRG}/train_generator.py {TRG_RECIPES}/{{wildcards.scale}}_{{params.kind}}.yaml scale={{wildcards.scale}} "
               f"{{params.order}} dataset.params.pretokenization={{params.tokens}} progress=false "
               f"experiment.output_dir=results/{{wildcards.scale}}/titok_rar/gen/runs/{{wildcards.run}}")


# guidance schedules at the recipe's scale (variant sched_<name>), as each sampler spells them: RAR has one family,
# (g-1)(1-cos((i/N)^p pi))/2 + 1, constant at p = 0 (README_RAR.md's "guidance_scale_pow=0.0 # constant cfg");
# MaskGIT's guidance_decay constant | linear | power-cosine (maskgit.GUIDANCE_DECAYS); MaskGen's none | linear | cosine
TRG_SCHEDULES = {
    "rar": {"constant": "model.generator.guidance_scale_pow=0.0",
            "pow": "model.generator.guidance_scale_pow={p}"},
    "maskgit": {"constant": "model.generator.guidance_decay=constant",
                "linear": "model.generator.guidance_decay=linear",
                "pow": "model.generator.guidance_decay=power-cosine model.generator.guidance_scale_pow={p}"},
    "maskgen": {"constant": "model.maskgen.guidance_decay=none", "linear": "model.maskgen.guidance_decay=linear",
                "pow": "model.maskgen.guidance_decay=cosine model.maskgen.guidance_decay_scale_pow={p}"},
}


def trg_variant(run, variant):
    """Sampling overrides of a variant: default (the recipe's), g<scale> (guidance), nokv (RAR without KV cache),
    sched_constant | sched_linear | sched_pow<p> (the guidance schedule at the recipe's scale, TRG_SCHEDULES)."""
    if variant == "default":
        return ""
    if variant == "nokv":
        return "kv_cache=false"
    if variant.startswith("sched_"):
        kind, sched = trg_kind(run), variant[len("sched_"):]
        name, p = ("pow", sched[len("pow"):]) if sched.startswith("pow") else (sched, "")
        if name not in TRG_SCHEDULES[kind]:
            raise ValueError(f"config titok_gen_tables: {run}__{variant}: {kind}'s sampler has no {name!r} guidance "
                             f"schedule; it has sched_{', sched_'.join(TRG_SCHEDULES[kind])}")
        return TRG_SCHEDULES[kind][name].format(p=p)
    key = "model.maskgen.cfg" if trg_kind(run) == "maskgen" else "model.generator.guidance_scale"
    return f"{key}={variant[1:]}"


for _table in TRG_TABLES.values():  # a schedule a sampler lacks fails here, naming the row, not in a job
    for _row in _table["rows"]:
        trg_variant(*_row.split("__"))


rule titok_rar_gen_sample:
    input:
        "results/{scale}/titok_rar/gen/runs/{run}/final/generator.yaml",
    output:
        "results/{scale}/titok_rar/gen/samples/{run}__{variant}/samples.json",
    wildcard_constraints:
        scale="tiny|toy", run=TRG_RUNS, variant=r"default|nokv|g[\d.]+|sched_(constant|linear|pow[\d.]+)",
    log:
        "logs/{scale}/titok_rar_gen_sample_{run}__{variant}.log",
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=8000, runtime=120),
    conda:
        conda_env("titok_rar")
    params:
        kind=lambda w: trg_kind(w.run),
        extra=lambda w: trg_variant(w.run, w.variant),
        per_class=lambda w: config["titok_gen_per_class"][w.scale],
    shell:
        launch(f"{TRG}/sample.py {TRG_RECIPES}/{{wildcards.scale}}_{{params.kind}}.yaml scale={{wildcards.scale}} "
               f"checkpoint=results/{{wildcards.scale}}/titok_rar/gen/runs/{{wildcards.run}} per_class={{params.per_class}} "
               f"{{params.extra}} out_dir=results/{{wildcards.scale}}/titok_rar/gen/samples/{{wildcards.run}}__{{wildcards.variant}}")


rule titok_rar_gen_evaluate:
    input:
        samples="results/{scale}/titok_rar/gen/samples/{run}__{variant}/samples.json",
        digits="data/{scale}/digits",
        features="results/{scale}/digits_features/features.safetensors",
    output:
        "results/{scale}/titok_rar/gen/eval/{run}__{variant}.json",
    wildcard_constraints:
        scale="tiny|toy", run=TRG_RUNS,
    log:
        "logs/{scale}/titok_rar_gen_evaluate_{run}__{variant}.log",
    threads: config["local_threads"]
    resources:
        **heavy(mem_mb=4000, runtime=30),
    conda:
        conda_env("titok_rar")
    shell:
        launch(f"{TRG}/generator_eval.py scale={{wildcards.scale}} images=results/{{wildcards.scale}}/titok_rar/gen/samples/{{wildcards.run}}__{{wildcards.variant}} "
               f"reference={{input.digits}}/train extractor=digits:{{input.features}} metrics=[fd,prompt_accuracy] "
               f"experiment={{wildcards.run}} checkpoint={{wildcards.run}} sampler={{wildcards.variant}} threads=1 out={{output}}")


# toy tables: (title, rows as run__variant), config.yaml titok_gen_tables ------------------------------------------
# The paper's numbers beside the toy run that plays the paper model's part (shared/tables.py keys the paper column by
# run, so every row of that run shows it), per table: RAR-B gFID 1.95 for the annealed RAR (README_RAR.md model zoo;
# RAR arXiv:2411.00776), MaskGIT on TiTok-L-32 (32 tokens, as the toy K = 32 tokens) gFID 2.77 (README_TiTok.md;
# TiTok arXiv:2406.07550 Table 2), MaskGen-L (VQ) MJHQ-30K FID 7.74 (README_MaskGen.md; arXiv:2501.07730). The
# other tables (KV cache, guidance sweep) measure no number the papers report. Each number is ImageNet-256 (or
# MJHQ-30K) with Inception, beside a digits-CNN FD: for orientation only, as the table's caption says.
TRG_TOY_PAPER = {
    "rar_order": ({"rar_annealed": {"fid": 1.95}}, "fid (paper) - RAR-B on ImageNet-256 (README_RAR.md) beside the "
                                                   "annealed order (the recipe of the paper)"),
    "rar_vs_maskgit": ({"maskgit": {"fid": 2.77}}, "fid (paper) - MaskGIT on TiTok-L-32 tokens, ImageNet-256 "
                                                   "(README_TiTok.md); the paper has no RAR on TiTok tokens"),
    "maskgen": ({"maskgen": {"fid": 7.74}}, "fid (paper) - MaskGen-L VQ on MJHQ-30K (README_MaskGen.md) at its own "
                                            "sampling (guidance 12, 16 steps), shown on every maskgen row"),
}


def trg_paper_opts(which):
    """paper='{...}' notes='...' of a toy table (TRG_TOY_PAPER), or nothing."""
    if which not in TRG_TOY_PAPER:
        return ""
    paper, note = TRG_TOY_PAPER[which]
    mapping = "{" + ", ".join(f"{r}: {{" + ", ".join(f"{m}: {v}" for m, v in ms.items()) + "}"
                              for r, ms in paper.items()) + "}"
    return f"paper='{mapping}' notes='{note}'"


rule titok_rar_gen_table:
    input:
        lambda w: [f"results/{w.scale}/titok_rar/gen/eval/{r}.json" for r in TRG_TABLES[w.which]["rows"]],
    output:
        md="results/{scale}/tables/titok_rar_gen_{which}.md",
        csv="results/{scale}/tables/titok_rar_gen_{which}.csv",
        html=reported("results/{scale}/tables/titok_rar_gen_{which}.html", "titok_rar", "Tables",
                      "titok_rar_gen_{which}", "project_table"),
        # FD per row as bars (the RAR order ablation's plot; + _prompt_accuracy_bars.png where rows have it)
        fd_bars=reported("results/{scale}/tables/titok_rar_gen_{which}_fd_bars.png", "titok_rar", "Plots",
                         "titok_rar_gen_{which} FD", "project_table"),
    wildcard_constraints:
        scale="tiny|toy", which=one_of(TRG_TABLES),
    log:
        "logs/{scale}/titok_rar_gen_table_{which}.log",
    conda:
        conda_env("titok_rar")
    params:
        inputs=lambda w, input: "[" + ",".join(input) + "]",
        title=lambda w: TRG_TABLES[w.which]["title"],
        paper=lambda w: trg_paper_opts(w.which),
    shell:
        step("shared/tables.py scale={wildcards.scale} inputs='{params.inputs}' title='{params.title}' "
             "{params.paper} plots=[bars] out_md={output.md} out_csv={output.csv}")


def trg_label(row):
    """rar_annealed__g2.0 -> 'rar annealed (guidance 2.0)'."""
    run, variant = row.split("__")
    if variant.startswith("sched_"):
        what = f"{variant[len('sched_'):].replace('pow', 'power-cosine pow ')} guidance schedule"
    else:
        what = {"default": "recipe settings", "nokv": "no KV cache"}.get(variant, f"guidance {variant[1:]}")
    return f"{run.replace('_', ' ')} ({what})"  # no commas: the labels travel as a YAML list


rule titok_rar_gen_grid:
    input:
        lambda w: [f"results/{w.scale}/titok_rar/gen/samples/{r}/samples.json" for r in TRG_TABLES[w.which]["rows"]],
    output:
        reported("results/{scale}/titok_rar/gen/grids/{which}.png", "titok_rar", "Generator samples", "{which}",
                 "titok_gen_grid"),
    wildcard_constraints:
        scale="tiny|toy", which=one_of(TRG_TABLES),
    log:
        "logs/{scale}/titok_rar_gen_grid_{which}.log",
    conda:
        conda_env("titok_rar")
    params:
        folders=lambda w, input: "[" + ",".join(os.path.dirname(p) for p in input) + "]",
        labels=lambda w: "[" + ",".join(trg_label(r) for r in TRG_TABLES[w.which]["rows"]) + "]",
    shell:
        # the same sample indices (= classes / prompts and seeds) in every row; stride 9 walks digit+1, colour+1
        step("projects/dmd2/compare.py scale={wildcards.scale} folders='{params.folders}' labels='{params.labels}' "
             "n=8 stride=9 out={output}")


# paper scale -----------------------------------------------------------------------------------------------------
rule titok_rar_gen_download:
    output:
        "downloads/titok_rar/generators/{item}/download.json",
    wildcard_constraints:
        item="rar_b|rar_l|rar_xl|rar_xxl|maskgit_vqgan|generator_titok_l32|generator_titok_b64|generator_titok_s128|"
             "tokenizer_titok_l32|tokenizer_titok_b64|tokenizer_titok_s128",
    log:
        "logs/paper/titok_rar_gen_download_{item}.log",
    conda:
        conda_env("titok_rar")
    shell:
        step(f"{TRG}/download.py scale=paper item={{wildcards.item}} "
             f"out_dir=downloads/titok_rar/generators/{{wildcards.item}}")


rule titok_rar_gen_download_adm:
    input:
        "downloads/dmd2/inception/download.json",
    output:
        "downloads/titok_rar/generators/adm_imagenet256/reference_stats.npz",
    log:
        "logs/paper/titok_rar_gen_download_adm.log",
    conda:
        conda_env("titok_rar")
    shell:
        step(f"{TRG}/download.py scale=paper item=adm_imagenet256 "
             f"out_dir=downloads/titok_rar/generators/adm_imagenet256 inception=downloads/dmd2/inception")


def trg_paper_sample_args(name):
    """sample.py options for a released generator (`released=` fills in its architecture and sampling values)."""
    d = "downloads/titok_rar/generators"
    if name.startswith("rar_"):
        return (f"config={TRG_RECIPES}/rar.yaml released={name} experiment.generator_checkpoint={d}/{name}/{name}.bin "
                f"experiment.tokenizer_checkpoint={d}/maskgit_vqgan/maskgit-vqgan-imagenet-f16-256.bin")
    key = name[len("maskgit_"):]
    return (f"config={TRG_RECIPES}/maskgit.yaml released={key} "
            f"experiment.generator_checkpoint={d}/generator_{key}/model.safetensors "
            f"experiment.tokenizer_checkpoint={d}/tokenizer_{key}")


def trg_paper_downloads(name):
    d = "downloads/titok_rar/generators"
    if name.startswith("rar_"):
        return [f"{d}/{name}/download.json", f"{d}/maskgit_vqgan/download.json"]
    key = name[len("maskgit_"):]
    return [f"{d}/generator_{key}/download.json", f"{d}/tokenizer_{key}/download.json"]


TRG_PAPER_NAMES = one_of(TRG_PAPER_FID)  # the released generators the paper tables name
TRG_PAPER_SAMPLE = config["titok_gen_paper_sample"]  # per class x classes (ImageNet: 50 x 1000)


rule titok_rar_gen_paper_sample:
    input:
        lambda w: trg_paper_downloads(w.name),
    output:
        "results/paper/titok_rar/gen/samples/released_{name}/samples.json",
    wildcard_constraints:
        name=TRG_PAPER_NAMES,
    log:
        "logs/paper/titok_rar_gen_paper_sample_{name}.log",
    resources:
        **heavy(gpus=8, mem_mb=200000, runtime=480, nproc_per_node=8),
    conda:
        conda_env("titok_rar")
    params:
        args=lambda w: trg_paper_sample_args(w.name),
    shell:
        # 50 per class x 1000 ImageNet classes, as sample_imagenet_rar.py; shards = the 8 ranks
        launch(f"{TRG}/sample.py scale=paper {{params.args}} per_class={TRG_PAPER_SAMPLE['per_class']} "
               f"num_classes={TRG_PAPER_SAMPLE['num_classes']} device=auto "
               f"out_dir=results/paper/titok_rar/gen/samples/released_{{wildcards.name}}")


rule titok_rar_gen_paper_evaluate:
    input:
        samples="results/paper/titok_rar/gen/samples/released_{name}/samples.json",
        stats="downloads/titok_rar/generators/adm_imagenet256/reference_stats.npz",
    output:
        "results/paper/titok_rar/gen/eval/released_{name}.json",
    wildcard_constraints:
        name=TRG_PAPER_NAMES,
    log:
        "logs/paper/titok_rar_gen_paper_evaluate_{name}.log",
    resources:
        **heavy(gpus=1, mem_mb=64000, runtime=240),
    conda:
        conda_env("titok_rar")
    shell:
        launch(f"{TRG}/generator_eval.py scale=paper images=results/paper/titok_rar/gen/samples/released_{{wildcards.name}} "
               f"reference={{input.stats}} metrics=[fid,inception_score] "
               f"extractor=inception_inside:downloads/dmd2/inception/inception-2015-12-05.pt "
               f"experiment={{wildcards.name}} checkpoint=released device=cuda out={{output}}")


TRG_PAPER_TABLES = config["titok_gen_paper_tables"]  # table -> title and rows (released generators)
for _table in TRG_PAPER_TABLES.values():
    for _name in _table["rows"]:
        if _name not in TRG_PAPER_FID:
            raise ValueError(f"config titok_gen_paper_tables: {_name!r} has no published gFID here; expected one of "
                             f"{list(TRG_PAPER_FID)}")


rule titok_rar_gen_paper_table:
    input:
        lambda w: [f"results/paper/titok_rar/gen/eval/released_{n}.json" for n in TRG_PAPER_TABLES[w.which]["rows"]],
    output:
        md="results/paper/tables/titok_rar_gen_{which}.md",
        csv="results/paper/tables/titok_rar_gen_{which}.csv",
    wildcard_constraints:
        which=one_of(TRG_PAPER_TABLES),
    log:
        "logs/paper/titok_rar_gen_paper_table_{which}.log",
    conda:
        conda_env("titok_rar")
    params:
        inputs=lambda w, input: "[" + ",".join(input) + "]",
        paper=lambda w: "{" + ", ".join(f"{n}: {{fid: {TRG_PAPER_FID[n]}}}" for n in TRG_PAPER_TABLES[w.which]["rows"])
                        + "}",
        title=lambda w: TRG_PAPER_TABLES[w.which]["title"],
    shell:
        step("shared/tables.py scale=paper inputs='{params.inputs}' title='{params.title}' paper='{params.paper}' "
             "out_md={output.md} out_csv={output.csv}")


# paper-scale MaskGen: our training of its recipe (no released MaskGen weights are loaded here: their names are not
# in the reference file), on the tokens of our paper-scale TA-TiTok, FID over MJHQ-30K's 30k prompts (one sample
# each) against its images. MJHQ-30K FID reported: MaskGen-L VQ 7.74, MaskGen-XL VQ 7.51 (README_MaskGen.md model
# zoo; arXiv:2501.07730), after the original's second, high-aesthetics stage, which our recipe (stage 1) lacks.
TRG_MASKGEN_PAPER_FID = {"maskgen_vq_l": 7.74, "maskgen_vq_xl": 7.51}
TRG_MASKGEN = config["titok_maskgen_paper_recipe"]
_maskgen_recipe = f"{TRG_RECIPES}/{TRG_MASKGEN}.yaml"
if not os.path.isfile(_maskgen_recipe) or TRG_MASKGEN not in TRG_MASKGEN_PAPER_FID:
    raise ValueError(f"config titok_maskgen_paper_recipe: {TRG_MASKGEN!r} needs {_maskgen_recipe} and an MJHQ-30K FID "
                     f"in the paper; expected one of {[n for n in TRG_MASKGEN_PAPER_FID if os.path.isfile(f'{TRG_RECIPES}/{n}.yaml')]}")
with open(_maskgen_recipe) as _f:
    # its token folder (data/paper/titok_rar/tokens/<TA-TiTok recipe>, titok_paper_pretokenize_tatitok)
    TRG_MASKGEN_TOKENS = yaml.safe_load(_f)["dataset"]["params"]["pretokenization"]
TRG_MASKGEN_TATITOK = os.path.basename(TRG_MASKGEN_TOKENS)
TRG_MJHQ = "downloads/titok_rar/mjhq30k"  # titok_download item=mjhq30k: meta_data.json, mjhq30k_imgs/, prompts.txt


rule titok_rar_gen_paper_train_maskgen:
    input:
        tokens=f"{TRG_MASKGEN_TOKENS}/meta.json",
        clip="downloads/titok_rar/open_clip_vit_l14_336/download.json",
    output:
        "results/paper/titok_rar/gen/runs/{name}/final/generator.yaml",
    wildcard_constraints:
        name=TRG_MASKGEN,
    log:
        "logs/paper/titok_rar_gen_paper_train_maskgen_{name}.log",
    resources:
        # one node (README_MaskGen.md launches its training on 4 machines: raise nodes or the batch to match it)
        **heavy(gpus=TT_PAPER_GPUS, nproc_per_node=TT_PAPER_GPUS, cpus_per_task=96, mem_mb=480000, runtime=60 * 72),
    conda:
        conda_env("titok_rar")
    shell:
        launch(f"{TRG}/train_generator.py {TRG_RECIPES}/{{wildcards.name}}.yaml scale=paper progress=false "
               f"experiment.output_dir=results/paper/titok_rar/gen/runs/{{wildcards.name}}")


rule titok_rar_gen_paper_sample_maskgen:
    input:
        generator="results/paper/titok_rar/gen/runs/{name}/final/generator.yaml",
        tokenizer=f"results/paper/titok_rar/{TRG_MASKGEN_TATITOK}/final/config.json",
        mjhq=f"{TRG_MJHQ}/download.json",
    output:
        "results/paper/titok_rar/gen/samples/{name}/samples.json",
    wildcard_constraints:
        name=TRG_MASKGEN,
    log:
        "logs/paper/titok_rar_gen_paper_sample_maskgen_{name}.log",
    resources:
        **heavy(gpus=8, mem_mb=200000, runtime=480, nproc_per_node=8),
    conda:
        conda_env("titok_rar")
    params:
        tokenizer=lambda w, input: os.path.dirname(input.tokenizer),
    shell:
        # one sample per MJHQ-30K prompt; decoded with the TA-TiTok's own text guidance (its final/text_encoder.json)
        launch(f"{TRG}/sample.py {TRG_RECIPES}/{{wildcards.name}}.yaml scale=paper "
               f"checkpoint=results/paper/titok_rar/gen/runs/{{wildcards.name}} tokenizer={{params.tokenizer}} "
               f"prompts={TRG_MJHQ}/prompts.txt per_class=1 device=auto "
               f"out_dir=results/paper/titok_rar/gen/samples/{{wildcards.name}}")


rule titok_rar_gen_paper_evaluate_maskgen:
    input:
        samples="results/paper/titok_rar/gen/samples/{name}/samples.json",
        mjhq=f"{TRG_MJHQ}/download.json",
        inception="downloads/titok_rar/inception/download.json",
    output:
        "results/paper/titok_rar/gen/eval/{name}.json",
    wildcard_constraints:
        name=TRG_MASKGEN,
    log:
        "logs/paper/titok_rar_gen_paper_evaluate_maskgen_{name}.log",
    resources:
        **heavy(gpus=1, mem_mb=64000, runtime=240),
    conda:
        conda_env("titok_rar")
    shell:
        # MJHQ-30K's images are 1024 px, the samples 256 px: both resized by the Inception extractor (check off)
        launch(f"{TRG}/generator_eval.py scale=paper images=results/paper/titok_rar/gen/samples/{{wildcards.name}} "
               f"reference={TRG_MJHQ}/mjhq30k_imgs check_resolution=false metrics=[fid] "
               f"extractor=inception:downloads/titok_rar/inception/inception-2015-12-05.pt "
               f"experiment={{wildcards.name}} checkpoint=ours device=cuda out={{output}}")


rule titok_rar_gen_paper_table_maskgen:
    input:
        f"results/paper/titok_rar/gen/eval/{TRG_MASKGEN}.json",
    output:
        md="results/paper/tables/titok_rar_gen_maskgen.md",
        csv="results/paper/tables/titok_rar_gen_maskgen.csv",
    log:
        "logs/paper/titok_rar_gen_paper_table_maskgen.log",
    conda:
        conda_env("titok_rar")
    params:
        paper=f"{{{TRG_MASKGEN}: {{fid: {TRG_MASKGEN_PAPER_FID[TRG_MASKGEN]}}}}}",
    shell:
        step("shared/tables.py scale=paper inputs=[{input}] "
             "title='MaskGen (our training of the recipe) on MJHQ-30K, 30k prompts, FID' paper='{params.paper}' "
             "notes='fid (paper) - README_MaskGen.md, after the original second high-aesthetics stage' "
             "out_md={output.md} out_csv={output.csv}")


def trg_targets(scale, which):
    if scale == "paper":
        return {"rar": ["results/paper/tables/titok_rar_gen_rar.md"],
                "maskgit": ["results/paper/tables/titok_rar_gen_maskgit.md"],
                "maskgen": ["results/paper/tables/titok_rar_gen_maskgen.md"]}[which]
    tables = {"rar": ["rar_order", "kv_cache", "cfg_sweep"], "maskgit": ["rar_vs_maskgit", "cfg_sweep"],
              "maskgen": ["maskgen"]}[which]
    return [p for t in tables for p in (f"results/{scale}/tables/titok_rar_gen_{t}.md",
                                        f"results/{scale}/titok_rar/gen/grids/{t}.png")]


def trg_target_inputs(which):
    def inputs(w):
        scale = config["scale"]
        if scale != "paper" and not trg_toy_ready(scale):
            print(f"eval_{which} at scale={scale}: the token folders data/{scale}/titok_rar/tokens/"
                  f"{{{','.join(sorted(set(TRG_TOKENS.values())))}}} come from the tokenizer project's pretokenize "
                  f"rule, which this workflow does not define yet; nothing planned", file=sys.stderr)
            return []
        return trg_targets(scale, which)
    return inputs


rule eval_rar:
    input:
        trg_target_inputs("rar"),


rule eval_maskgit:
    input:
        trg_target_inputs("maskgit"),


rule eval_maskgen:
    input:
        trg_target_inputs("maskgen"),


@register_targets(in_default=False)
def titok_rar_generators_all(scale):
    # in_default=False: toy generator chains are long: eval_rar/eval_maskgit/eval_maskgen and `toy`, never `all`
    if scale != "tiny":
        return [p for which in ("rar", "maskgit", "maskgen") for p in trg_targets(scale, which)]
    return ["results/tiny/tables/titok_rar_gen_smoke.md", "results/tiny/titok_rar/gen/grids/smoke.png"]
