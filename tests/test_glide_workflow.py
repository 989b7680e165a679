"""GLIDE in the workflow: the toy target and the tiny chain in `smoke` plan; `--profile slurm glide` plans the paper
chain (released weights + tokenizer through the download rule, COCO-30k, FID beside the paper's number, the
CLIP-guided row with the released noised CLIP); the tiny chain (CLIP training and guidance, inpainting, upscale.py)
leaves the tables and files it says (checked on the smoke run of tests/test_workflow.py)."""
import csv
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def dry_run(*args):
    # in an empty directory: outputs of a run in the repository (results/ is gitignored) must not hide planned jobs
    with tempfile.TemporaryDirectory() as work:
        r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--snakefile", str(REPO / "Snakefile"),
                            "--directory", work, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_toy_target_and_smoke_plan():
    out = dry_run("glide", "smoke", "--config", "scale=toy")
    for which in ("guidance", "finetune", "drift", "upsampler", "upsampler_heldout", "uncond", "clip"):
        assert f"results/toy/tables/glide_{which}.md" in out, which
    # shared/tables.py refuses a column of FDs against different references: every toy table's rows must be
    # evaluated against one (a table mixing the base's prompts and the held-out test images failed a toy run)
    # (the plan holds smoke's tiny chain too: a tiny table mixing the eval prompts and the inpainted test images
    # failed the SLURM smoke run)
    for scale in ("tiny", "toy"):
        reference_of = {m.group(1): m.group(2) for m in re.finditer(
            rf"evaluate\.py scale={scale} images=results/{scale}/glide/samples/(\S+) "
            r"(reference=\S+(?: reference_captions=\S+)?)", out)}
        tables = yaml.safe_load((REPO / "config.yaml").read_text())["glide_tables"][scale]
        for which, table in tables.items():
            refs = {reference_of[row] for row in table["rows"] if not row.startswith("winrate_")}
            assert len(refs) == 1, (scale, which, refs)
    # samplers x steps: compare_samplers.py only (the sample/evaluate grid measured the same 24 cells twice)
    assert "results/toy/tables/glide_samplers.md" not in out and "plms_10_g3.0" not in out
    assert ("reference_dir=data/toy/digits/test reference_captions=data/toy/glide/eval_prompts.txt "
            "output_dir=results/toy/glide/compare") in out
    assert "results/toy/glide/compare/grid.png" in out
    # the base never sees the fine-tune colour; its prompts and their FD reference are the other colours
    assert "train.py scale=toy data_dir=data/toy/glide/base tokenizer=data/toy/glide/tokenizer  run_dir" in out
    assert ("reference=data/toy/digits/test reference_captions=data/toy/glide/eval_prompts.txt "
            "extractor=digits") in out
    assert "reference=data/toy/glide/finetune_reference extractor=digits" in out
    assert "train_upsample=true uncond_p=0.0 max_steps=500" in out
    assert "results/tiny/tables/glide_chain.md" in out  # the tiny chain joins smoke
    assert "train_upsample=true uncond_p=0.0" in out and "upsampler=bicubic:4" in out
    assert "init=results/toy/glide/runs/base" in out  # the fine-tune starts from the toy base
    # CLIP guidance vs classifier-free guidance at toy: the toy noised CLIP, two CLIP scales without CFG
    assert "results/toy/tables/glide_clip.md" in out
    assert ("train_clip.py scale=toy data_dir=data/toy/digits tokenizer=data/toy/glide/tokenizer "
            "run_dir=results/toy/glide/clip threads=1") in out
    for clip_scale in ("3.0", "20.0"):
        assert (f"clip_model=results/toy/glide/clip clip_guidance_scale={clip_scale} "
                f"prompts=data/toy/glide/eval_prompts.txt sampler=glide steps=27 guidance_scale=1.0 "
                f"out_dir=results/toy/glide/samples/base_clip{clip_scale}__eval__glide_27_g1.0") in out
    # the second fine-tune adds the toy noised CLIP's loss (train.py clip_loss=) and joins both fine-tune tables
    for scale in ("tiny", "toy"):
        assert (f"init=results/{scale}/glide/runs/base clip_loss=0.1@results/{scale}/glide/clip") in out, scale
    assert "run_dir=results/toy/glide/runs/finetune_clip" in out
    for prompts in ("finetune", "eval"):
        assert (f"a=results/toy/glide/samples/finetune_clip__{prompts}__glide_27_g3.0 "
                f"b=results/toy/glide/samples/base__{prompts}__glide_27_g3.0") in out, prompts
        assert f"experiment=winrate_finetune_clip_vs_base__{prompts}" in out, prompts
    # seeds (config glide_seeds): the fine-tune trained with seeds 1 and 2 beside 0, the base trained once and its
    # claimed rows sampled with disjoint noise; evaluations name the seed last, so tables.py joins them as one row
    for seed in (1, 2):
        assert f"max_steps=400 ema_decay=0.99 seed={seed} run_dir=results/toy/glide/runs/finetune_seed{seed} " in out
        for prompts in ("finetune", "eval"):
            assert (f"base=results/toy/glide/runs/base  prompts=data/toy/glide/{prompts}_prompts.txt "
                    f"seed={seed}0000000 sampler=glide steps=27 guidance_scale=3.0 "
                    f"out_dir=results/toy/glide/samples/base_seed{seed}__{prompts}__glide_27_g3.0 ") in out
            assert (f"base=results/toy/glide/runs/finetune_seed{seed}  prompts=data/toy/glide/{prompts}_prompts.txt "
                    f"sampler=glide") in out
            assert f"experiment=finetune__{prompts}__glide_27_g3.0_seed{seed} " in out
            assert f"experiment=winrate_finetune_vs_base__{prompts}_seed{seed} " in out
    assert "run_dir=results/toy/glide/runs/base_seed" not in out and "finetune_clip_seed" not in out
    for prompts, table in (("finetune", "finetune"), ("eval", "drift")):
        assert (f"claims='[[finetune__{prompts}__glide_27_g3.0,base__{prompts}__glide_27_g3.0]]'" in out
                and f"out_claims=results/toy/tables/glide_{table}.claims.json" in out), table
    # inpainting and upscale.py are tiny-chain only (no toy table uses them; no SwinIR weights at toy)
    assert "run_dir=results/toy/glide/runs/inpaint" not in out and "upscale.py scale=toy" not in out
    for table in ("extras", "inpaint", "upscale"):
        assert f"results/tiny/tables/glide_{table}.md" in out, table
    assert "inpaint_images=data/tiny/digits/test inpaint_mask=center sampler=glide" in out
    assert "train.py scale=tiny data_dir=data/tiny/digits/train tokenizer=data/tiny/glide/tokenizer inpaint=true" in out
    for method in ("swinir", "bicubic"):
        assert (f"upscale.py scale=tiny in_dir=results/tiny/glide/samples/base__eval__glide_4_g1.0 "
                f"out_dir=results/tiny/glide/samples/base__eval__glide_4_g1.0__{method}_x4 method={method} "
                f"factor=4") in out, method


def test_slurm_profile_plans_the_paper_chain():
    out = dry_run("--profile", "slurm", "glide")
    for needed in ("downloads/glide/base/download.json", "downloads/glide/upsample/download.json",
                   "downloads/glide/gpt2_tokenizer/download.json", "downloads/dmd2/coco30k/prompts.txt",
                   "results/paper/tables/glide_coco30k.md", "--backend slurm", "num_images=30000",
                   "upsampler=released", "upsample_steps=fast27", "{glide_released_coco30k: {fid: 12.24}}"):
        assert needed in out, needed
    # the CLIP-guided row: the released base guided by the released noised CLIP, no classifier-free guidance
    for needed in ("downloads/glide/clip_image_enc/download.json", "downloads/glide/clip_text_enc/download.json",
                   "results/paper/glide/eval/released_clip__coco30k.json",
                   "guidance_scale=1.0 upsample_sampler=glide_ddim upsample_steps=fast27 clip_guidance_scale=3.0 "
                   "clip_model=released out_dir=results/paper/glide/samples/released_clip__coco30k"):
        assert needed in out, needed


def test_downloads_target_plans_every_item_through_the_mirror():
    out = dry_run("glide_downloads", "--config", "glide_mirror=/staging/glide")
    for item in ("base", "upsample", "clip_image_enc", "clip_text_enc", "swinir_classical_x4", "swinir_real_x4",
                 "gpt2_tokenizer", "clip_vit_b16"):
        assert (f"download.py scale=paper item={item} out_dir=downloads/glide/{item} mirror=/staging/glide"
                in out), item
    assert "mirror=" not in dry_run("downloads/glide/swinir_real_x4/download.json")  # default: the release URLs


def _table_rows(work: Path, table: str) -> dict[str, dict]:
    rows = list(csv.DictReader((work / f"results/tiny/tables/glide_{table}.csv").open()))
    return {r["experiment"]: r for r in rows}


def check_tiny_outputs(work: Path) -> None:
    """What GLIDE's tiny chain (part of `smoke`) leaves in `work`; tests/test_workflow.py's smoke run calls this, so
    the chain runs once per suite."""
    res = work / "results/tiny/glide"
    # the tiny noised CLIP: its weights, config and before/after retrieval
    clip = json.loads((res / "clip/clip.json").read_text())
    assert clip["config"]["image_size"] == 8 and clip["tokenizer"] == "data/tiny/glide/tokenizer"
    assert {"clip_image_enc.safetensors", "clip_text_enc.safetensors"} <= {p.name for p in (res / "clip").iterdir()}
    ev = json.loads((res / "clip/eval.json").read_text())
    assert ev["steps"] == 60 and {"retrieval_t0", "retrieval_t500"} <= set(ev["after"])
    # CLIP-guided samples record the guidance; the unguided ones with the same seeds differ from them
    guided = json.loads((res / "samples/base_clip3.0__eval__glide_4_g1.0/samples.json").read_text())
    assert guided["clip_model"] == "results/tiny/glide/clip" and guided["clip_guidance_scale"] == 3.0
    assert guided["guidance_scale"] == 1.0 and guided["num_images"] == 32
    plain = res / "samples/base__eval__glide_4_g1.0"
    assert "clip_model" not in json.loads((plain / "samples.json").read_text())
    a, b = (Image.open(d / "000000.png").tobytes() for d in (plain, res / "samples/base_clip3.0__eval__glide_4_g1.0"))
    assert a != b
    # the fine-tune with the noised-CLIP loss: from the base, the CLIP term logged beside the eps-MSE, in the loss
    run = res / "runs/finetune_clip"
    assert yaml.safe_load((run / "config.yaml").read_text())["clip_loss"] == "0.1@results/tiny/glide/clip"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged and all(r["clip"] > 0 and r["loss"] > r["mse"] for r in logged if "clip" in r)
    assert any("clip" in r for r in logged)
    # the inpainting run (7 input channels) filled the centre of the test images, kept their names
    assert json.loads((res / "runs/inpaint/glide.json").read_text())["variant"] == "base-inpaint"
    inpainted = res / "samples/inpaint__test__glide_4_g3.0"
    info = json.loads((inpainted / "samples.json").read_text())
    assert info["inpaint_images"] == "data/tiny/digits/test" and info["inpaint_mask"] == "center"
    names = sorted(p.stem for p in inpainted.glob("*.png"))
    assert len(names) == 32 and names == sorted(p.stem for p in (work / "data/tiny/digits/test").glob("*.png"))[:32]
    # upscale.py x4 of the 8 px base samples: bicubic, and a random tiny SwinIR (never trained weights)
    for method in ("bicubic", "swinir"):
        up = res / f"samples/base__eval__glide_4_g1.0__{method}_x4"
        rec = json.loads((up / "upscale.json").read_text())
        assert rec["method"] == method and rec["factor"] == 4 and rec["images"] == 32
        assert rec["random_init"] == (method == "swinir")
        assert Image.open(up / "000000.png").size == (32, 32)
        assert (up / "000000.txt").read_text() == (plain / "000000.txt").read_text()
        # its evaluation: the leaderboard row is named by the folder (not upscale.json's method), timed, sized
        info = json.loads((res / f"eval/{up.name}.json").read_text())["info"]
        assert info["method"] == up.name and info["seconds_per_image"] > 0
        assert (info["parameters"] > 0) == (method == "swinir")
    # the tables: every row, with the metrics each row should have
    extras = _table_rows(work, "extras")
    assert set(extras) == {"base__eval__glide_4_g1.0", "base_clip3.0__eval__glide_4_g1.0",
                           "finetune_clip__eval__glide_4_g1.0"}
    inpainted_rows = _table_rows(work, "inpaint")
    assert set(inpainted_rows) == {"inpaint__test__glide_4_g3.0"}
    assert all(float(row["fd"]) > 0 for row in [*extras.values(), *inpainted_rows.values()])
    assert float(inpainted_rows["inpaint__test__glide_4_g3.0"]["psnr"]) > 0  # against the originals, by name
    upscaled = _table_rows(work, "upscale")
    assert set(upscaled) == {"base__eval__glide_4_g1.0__bicubic_x4", "base__eval__glide_4_g1.0__swinir_x4"}
    assert {row["sampler"] for row in upscaled.values()} == {"bicubic_x4", "swinir_x4"}
    assert "tiny" in (work / "results/tiny/tables/glide_upscale.md").read_text().lower()
