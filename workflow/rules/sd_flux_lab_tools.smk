# sd_flux_lab tools: FLUX.2 pipelines, generation (txt2img / img2img / FLUX.2 editing) and FLUX.2 fine-tuning.
#
# tiny: a random FLUX.2 pipeline -> txt2img of 2 images -> FLUX.2 edit of those images (joins `smoke`, seconds).
# paper: released pipelines under downloads/ (downloads/flux2, downloads/sd15, downloads/sdxl_base):
#   snakemake --profile slurm results/paper/sd_flux_lab/generate/flux2
#   snakemake --profile slurm runs/paper/flux_ft/lora          (FLUX.2 LoRA on data/paper/flux_finetune)
# Paper prompts are read from data/paper/sd_flux_lab/prompts.txt (one per line).

SFL_DOWNLOADS = {"sd15": "downloads/sd15", "sdxl": "downloads/sdxl_base"}  # arch -> the hub pipeline's folder
FLUX_SMOKE_PROMPT = config["flux2_smoke"]["prompt"]  # txt2img, then FLUX_SMOKE_EDIT on those images
FLUX_SMOKE_EDIT = config["flux2_smoke"]["edit"]


rule flux2_random_pipeline:
    output:
        directory("models/{scale}/flux2"),
    log:
        "logs/{scale}/flux2_random_pipeline.log",
    wildcard_constraints:
        scale="tiny|toy",
    conda:
        conda_env("sd_flux_lab")
    shell:
        step("projects/sd_flux_lab/flux.py scale={wildcards.scale} out_dir={output}")


rule flux2_smoke_txt2img:
    input:
        "models/{scale}/flux2",
    output:
        reported(directory("results/{scale}/sd_flux_lab/generate/flux2_txt2img"), "sd_flux_lab", "Samples",
                 "FLUX.2 txt2img {image}", "flux2_smoke", patterns=["{image,[^/]+}.png"]),
    log:
        "logs/{scale}/flux2_smoke_txt2img.log",
    wildcard_constraints:
        scale="tiny|toy",
    conda:
        conda_env("sd_flux_lab")
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=4000, runtime=10),
    shell:
        # 64 px: FLUX.2 takes reference images of at least 64x64, and the edit rule below edits these
        launch(f"projects/sd_flux_lab/generate.py scale={{wildcards.scale}} pipeline={{input}} "
               f"'prompt={FLUX_SMOKE_PROMPT}' num_images=2 height=64 width=64 steps=2 out_dir={{output}}")


rule flux2_smoke_edit:
    input:
        pipeline="models/{scale}/flux2",
        images="results/{scale}/sd_flux_lab/generate/flux2_txt2img",
    output:
        reported(directory("results/{scale}/sd_flux_lab/generate/flux2_edit"), "sd_flux_lab", "Samples",
                 "FLUX.2 edit {image}", "flux2_smoke", patterns=["{image,[^/]+}.png"]),
    log:
        "logs/{scale}/flux2_smoke_edit.log",
    wildcard_constraints:
        scale="tiny|toy",
    conda:
        conda_env("sd_flux_lab")
    threads: config["local_threads"]
    resources:
        **heavy(gpus=1, mem_mb=4000, runtime=10),
    shell:
        launch(f"projects/sd_flux_lab/generate.py scale={{wildcards.scale}} pipeline={{input.pipeline}} "
               f"input_dir={{input.images}} 'prompt={FLUX_SMOKE_EDIT}' steps=2 out_dir={{output}}")


@register_targets(in_default=False)
def sd_flux_lab_tools_targets(scale):
    return [f"results/{scale}/sd_flux_lab/generate/flux2_edit"]


# ---- paper scale: released weights under downloads/ -------------------------------------------------------
rule generate_paper:
    input:
        pipeline="downloads/{model}/model_index.json",  # sd15/sdxl_base: rule sd_flux_lab_download; flux2: by hand
        prompts="data/paper/sd_flux_lab/prompts.txt",
    output:
        directory("results/paper/sd_flux_lab/generate/{model}"),
    log:
        "logs/generate_paper.{model}.log",
    wildcard_constraints:
        model=one_of([os.path.basename(d) for d in SFL_DOWNLOADS.values()] + ["flux2"]),
    conda:
        conda_env("sd_flux_lab")
    threads: 8
    resources:
        **heavy(gpus=1, cpus_per_task=8, mem_mb=64000, runtime=120),
    shell:
        launch("projects/sd_flux_lab/generate.py scale=paper pipeline=downloads/{wildcards.model} "
               "prompt_file={input.prompts} dtype=bf16 out_dir={output}")


rule train_flux_paper:
    """Fine-tune FLUX.2 (LoRA) on your own folder: put images (+ .cap/.txt captions) under data/paper/<name>/, then
    `snakemake --profile slurm runs/paper/flux_ft/<name>/lora`."""
    input:
        pipeline="downloads/flux2/model_index.json",  # put the FLUX.2 diffusers folder there by hand
        data="data/paper/{name}",
    output:
        directory("runs/paper/flux_ft/{name}/lora"),
        **curves("runs/paper/flux_ft/{name}", "sd_flux_lab", "train_flux_paper {name}"),
    log:
        "logs/train_flux_paper.{name}.log",
    conda:
        conda_env("sd_flux_lab")
    threads: 16
    resources:
        **heavy(gpus=1, cpus_per_task=16, mem_mb=200000, runtime=24 * 60),
    shell:
        launch("projects/sd_flux_lab/train_flux.py scale=paper pipeline=downloads/flux2 data_dir={input.data} "
               "run_dir=runs/paper/flux_ft/{wildcards.name} lora=true")
