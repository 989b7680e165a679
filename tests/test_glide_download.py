"""GLIDE's downloads offline: the noised CLIP pair and the SwinIR x4 files served from a local staging folder
(`mirror=`, what an air-gapped cluster uses), with stand-in files; the files land where the steps read them, and
the workflow's glide_download rule passes config glide_mirror through."""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from projects.glide_finetune import download
from projects.glide_finetune import upscale as upscale_step
from projects.glide_finetune.noised_clip import RELEASED_DIR
from projects.glide_finetune.swinir import SWINIR_PRESETS, SwinIR, tiny_config, upscale_images
from shared.io import read_json

REPO = Path(__file__).resolve().parents[1]
SWINIR_ITEMS = {"swinir_classical_x4": "classical_x4", "swinir_real_x4": "real_x4"}  # item -> upscale.py preset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _file_name(item: str) -> str:
    (url,) = download.DOWNLOADS[item].urls
    return url.rsplit("/", 1)[-1]


def test_swinir_items_are_the_presets_release_files():
    # download.py names the files without importing swinir.py (torch at every dry run): the names must agree
    for item, preset in SWINIR_ITEMS.items():
        assert _file_name(item) == SWINIR_PRESETS[preset].release_file, item
        assert download.DOWNLOADS[item].urls[0].startswith("https://github.com/JingyunLiang/SwinIR/releases/download/")
    assert _file_name("clip_image_enc") == "clip_image_enc.pt" and _file_name("clip_text_enc") == "clip_text_enc.pt"


def test_rule_file_copies_of_the_step_registries():
    # glide_finetune.smk keeps these names itself (the modules load torch); they must stay the steps' own
    from projects.glide_finetune.sample import INPAINT_SAMPLERS
    from projects.glide_finetune.upscale import METHODS
    from tests.test_workflow_registries import rule_file_list

    assert sorted(rule_file_list("glide_finetune.smk", "GLIDE_UPSCALERS")) == sorted(METHODS)
    text = (REPO / "workflow/rules/glide_finetune.smk").read_text()
    assert f'glide_sampler="{"|".join(INPAINT_SAMPLERS)}"' in text  # glide_inpaint's samplers


def test_noised_clip_pair_lands_where_load_clip_reads_it(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    standins = {}
    for i, item in enumerate(("clip_image_enc", "clip_text_enc")):
        torch.save({"w": torch.full((3,), float(i))}, staging / f"{item}.pt")
        standins[item] = hashlib.sha256((staging / f"{item}.pt").read_bytes()).hexdigest()
    root = tmp_path / RELEASED_DIR  # the workflow's out_dir=downloads/glide/<item>
    for item, digest in standins.items():
        download.main({"item": item, "out_dir": str(root / item), "mirror": str(staging)})
        got = root / item / f"{item}.pt"  # noised_clip.load_clip("released") reads <RELEASED_DIR>/<item>/<item>.pt
        assert got.read_bytes() == (staging / f"{item}.pt").read_bytes()
        record = read_json(root / item / "download.json")
        assert record["files"][f"{item}.pt"]["sha256"] == digest and record["source"][0].endswith(f"/{item}.pt")
    # a rerun trusts the recorded files: no source needed any more
    for p in staging.iterdir():
        p.unlink()
    download.main({"item": "clip_text_enc", "out_dir": str(root / "clip_text_enc"), "mirror": str(staging)})


def test_swinir_download_feeds_upscale_py(tmp_path):
    """A stand-in release file (tiny weights under the release's key: 'params', the GAN model 'params_ema') through
    the mirror, then upscale.py with weights= that file gives that network's upscaling."""
    staging = tmp_path / "staging"
    staging.mkdir()
    src = tmp_path / "samples"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(src / "000000.png")
    x = torch.from_numpy(np.array(Image.open(src / "000000.png"))).permute(2, 0, 1)[None].float() / 255
    for seed, (item, preset) in enumerate(SWINIR_ITEMS.items()):
        cfg = SWINIR_PRESETS[preset]
        torch.manual_seed(seed)
        net = SwinIR(tiny_config(upscale=4, upsampler=cfg.upsampler)).eval()
        torch.save({cfg.param_key: net.state_dict()}, staging / cfg.release_file)
        out = tmp_path / "downloads" / item
        download.main({"item": item, "out_dir": str(out), "mirror": str(staging)})
        weights = out / cfg.release_file
        assert read_json(out / "download.json")["files"][cfg.release_file]["bytes"] == weights.stat().st_size
        info = upscale_step.main({"scale": "tiny", "in_dir": str(src), "out_dir": str(tmp_path / f"up_{item}"),
                                  "factor": 4, "preset": preset, "weights": str(weights), "random_init": False})
        assert info["preset"] == preset and not info["random_init"] and info["parameters"] > 0
        want = (upscale_images(net, x)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"up_{item}" / "000000.png")), want), item


def test_download_rule_reads_the_configured_mirror(tmp_path):
    """The glide_download rule, run by snakemake in a scratch directory with --config glide_mirror=<staging>."""
    staging = tmp_path / "staging"
    staging.mkdir()
    name = _file_name("swinir_classical_x4")
    (staging / name).write_bytes(b"stand-in weights")
    work = tmp_path / "wf"
    work.mkdir()
    target = "downloads/glide/swinir_classical_x4/download.json"
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
                        "--directory", str(work), target, "--config", f"glide_mirror={staging}"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (work / "downloads/glide/swinir_classical_x4" / name).read_bytes() == b"stand-in weights"
    assert name in read_json(work / target)["files"]
    log = (work / "logs/paper/glide_download_swinir_classical_x4.log").read_text()  # the rule's log: fetch's report
    assert "SwinIR-M x4, classical SR" in log and "1 files in downloads/glide/swinir_classical_x4" in log
