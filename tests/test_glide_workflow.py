"""GLIDE in the workflow: the toy target and the tiny chain in `smoke` plan; `--profile slurm glide` plans the paper
chain (released weights + tokenizer through the download rule, COCO-30k, FID beside the paper's number)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dry_run(*args):
    # --rerun-incomplete: a half-written output of someone else's interrupted run must not stop the plan
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--rerun-incomplete", *args], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_toy_target_and_smoke_plan():
    out = dry_run("glide", "smoke", "--config", "scale=toy")
    for which in ("guidance", "samplers", "finetune", "upsampler", "uncond"):
        assert f"results/toy/tables/glide_{which}.md" in out, which
    assert "results/toy/glide/compare/grid.png" in out
    assert "results/tiny/tables/glide_chain.md" in out  # the tiny chain joins smoke
    assert "train_upsample=true uncond_p=0.0" in out and "upsampler=bicubic:4" in out
    assert "init=results/toy/glide/runs/base" in out  # the fine-tune starts from the toy base


def test_slurm_profile_plans_the_paper_chain():
    out = dry_run("--profile", "slurm", "glide")
    for needed in ("downloads/glide/base/download.json", "downloads/glide/upsample/download.json",
                   "downloads/glide/gpt2_tokenizer/download.json", "downloads/dmd2/coco30k/prompts.txt",
                   "results/paper/tables/glide_coco30k.md", "--backend slurm", "num_images=30000",
                   "upsampler=released", "upsample_steps=fast27", "{glide_released_coco30k: {fid: 12.24}}"):
        assert needed in out, needed
