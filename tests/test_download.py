"""shared.download and the download steps, offline: plain URLs served from a staging folder (the `mirror=`
path an air-gapped cluster uses), Hugging Face snapshots replaced by a local stand-in."""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from shared.download import Download, fetch
from shared.io import read_json


def _png(path: Path, value: int) -> None:
    Image.new("RGB", (8, 8), (value, 0, 0)).save(path)


@pytest.fixture
def coco_staging(tmp_path) -> Path:
    """What DMD2 hosts: a pickled caption list and a zip of reference images in a folder."""
    staging = tmp_path / "staging"
    staging.mkdir()
    captions = [f"a photo  of thing {i}\n" for i in range(10_000)]
    (staging / "captions_coco14_test.pkl").write_bytes(pickle.dumps(captions))
    with zipfile.ZipFile(staging / "coco10k.zip", "w") as z:
        for i in range(3):
            _png(tmp_path / f"{i}.png", i * 40)
            z.write(tmp_path / f"{i}.png", f"coco10k/{i:012d}.png")
    return staging


def test_coco10k_download_makes_prompts_and_images(coco_staging, tmp_path):
    from projects.dmd2 import download

    out = tmp_path / "coco10k"
    download.main({"item": "coco10k", "out_dir": str(out), "mirror": str(coco_staging)})
    prompts = (out / "prompts.txt").read_text().splitlines()
    assert len(prompts) == 10_000 and prompts[7] == "a photo of thing 7"  # whitespace normalised, one per line
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:012d}.png" for i in range(3)]
    record = read_json(out / "download.json")["files"]
    for name in ("captions_coco14_test.pkl", "coco10k.zip"):
        assert record[name]["sha256"] == hashlib.sha256((coco_staging / name).read_bytes()).hexdigest()
        assert record[name]["bytes"] == (coco_staging / name).stat().st_size

    # a rerun trusts the recorded files: it needs no source any more
    for p in coco_staging.iterdir():
        p.unlink()
    download.main({"item": "coco10k", "out_dir": str(out), "mirror": str(coco_staging)})
    assert len(list((out / "images").iterdir())) == 3


def test_caption_pickle_that_builds_objects_is_refused(tmp_path):
    from projects.dmd2.download import read_caption_pickle

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([os.getcwd]))  # unpickling needs a global lookup: refused, never called
    with pytest.raises(ValueError, match="evil.pkl: not a pickled list of caption strings"):
        read_caption_pickle(evil)
    wrong = tmp_path / "dict.pkl"
    wrong.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="expected a list of strings, got dict"):
        read_caption_pickle(wrong)


def test_published_digest_mismatch_removes_the_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights.pt").write_bytes(b"not the published bytes")
    item = Download("weights", urls=("https://example.org/files/weights.pt",), sha256={"weights.pt": "0" * 64})
    with pytest.raises(ValueError, match="differs from the published"):
        fetch(item, tmp_path / "out", mirror=src.as_uri())
    assert not (tmp_path / "out" / "weights.pt").exists() and not (tmp_path / "out" / "download.json").exists()

    good = hashlib.sha256(b"not the published bytes").hexdigest()
    record = fetch(Download("weights", urls=item.urls, sha256={"weights.pt": good}), tmp_path / "out", mirror=str(src))
    assert record["weights.pt"] == {"sha256": good, "bytes": 23, "verified": True}


def test_zip_members_outside_the_folder_are_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(src / "bad.zip", "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(ValueError, match="points outside the folder"):
        fetch(Download("bad", urls=("https://example.org/bad.zip",), unpack=True), tmp_path / "out", mirror=str(src))
    assert not (tmp_path / "escape.txt").exists()


def test_sd_flux_lab_download_checks_the_snapshot(tmp_path, monkeypatch):
    """The hub snapshot is replaced by copying a tiny saved pipeline; the step checks arch and loadability."""
    import huggingface_hub

    from projects.sd_flux_lab import download, models

    saved = models.save_pipeline(models.build_pipeline("sd15", "tiny"), tmp_path / "hub")
    calls = []

    def fake_snapshot(repo, revision, local_dir, allow_patterns, ignore_patterns):
        calls.append((repo, revision, allow_patterns, ignore_patterns))
        import shutil
        shutil.copytree(saved, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    out = download.main({"arch": "sd15", "out_dir": str(tmp_path / "sd15")})
    assert calls[0][0] == models.HUB_REPOS["sd15"] and "*.bin" in calls[0][3]
    files = read_json(out / "download.json")["files"]
    assert "unet/diffusion_pytorch_model.safetensors" in files and "model_index.json" in files
    download.main({"arch": "sd15", "out_dir": str(tmp_path / "sd15")})  # a rerun: our own .download/ not recorded
    assert not any(k.startswith(".") for k in read_json(out / "download.json")["files"])
    with pytest.raises(ValueError, match="is a sd15 pipeline, not sdxl"):
        download.main({"arch": "sdxl", "out_dir": str(tmp_path / "sd15")})


def test_released_generator_download_writes_what_sample_py_needs(tmp_path):
    """DMD2's released SD1.5 UNet (a state dict) lands with a <file>.json beside it: backbone and step list."""
    import torch

    from projects.dmd2 import download
    from projects.dmd2.generation import load_generator
    from projects.sd_flux_lab import models

    pipe = models.build_pipeline("sd15", "tiny")
    pipe.save_pretrained(tmp_path / "sd15")
    staging = tmp_path / "staging"
    staging.mkdir()
    torch.save(pipe.unet.state_dict(), staging / "pytorch_model.bin")
    out = tmp_path / "dmd2_sd15_1step"
    download.main({"item": "dmd2_sd15_1step", "out_dir": str(out), "mirror": str(staging)})
    assert read_json(out / "pytorch_model.json")["denoising_step_list"] == [999]
    net, info, backbone = load_generator(out / "pytorch_model.bin", teacher=str(tmp_path / "sd15"))
    assert info["backbone"] == "sd" and all(torch.equal(v, pipe.unet.state_dict()[k])
                                            for k, v in net.state_dict().items())


class _InceptionShaped(torch.nn.Module):
    """What clean-fid's loader looks for in inception-2015-12-05.pt (`layers`, `output`); weights irrelevant."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Identity()
        self.output = torch.nn.Linear(2, 2)

    def forward(self, img, return_features: bool = False):
        return img


def test_edm_imagenet_refs_import_under_the_inside_extractor(tmp_path):
    """EDM's fid-refs (mu, sigma only) become shared.metrics statistics labelled with the extractor that
    reproduces their protocol, so evaluate.py compares like with like (and refuses the 'clean' extractor)."""
    import numpy as np
    import torch

    from projects.dmd2 import download
    from shared.metrics.extractors import build_extractor
    from shared.metrics.stats import ReferenceStats

    staging = tmp_path / "staging"
    staging.mkdir()
    rng = np.random.default_rng(0)
    mu, a = rng.normal(size=8), rng.normal(size=(8, 8))
    np.savez(staging / "imagenet-64x64.npz", mu=mu, sigma=a @ a.T)
    inception = tmp_path / "inception"
    inception.mkdir()
    with warnings.catch_warnings():  # clean-fid's Inception is TorchScript; scripting is deprecated in torch 2.14
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(_InceptionShaped()).save(str(inception / "inception-2015-12-05.pt"))
    out = tmp_path / "refs"
    with pytest.raises(FileNotFoundError, match="fetch item=inception first"):
        download.main({"item": "imagenet64_edm", "out_dir": str(out), "mirror": str(staging),
                       "inception": str(tmp_path / "missing")})
    download.main({"item": "imagenet64_edm", "out_dir": str(out), "mirror": str(staging),
                   "inception": str(inception)})
    stats = ReferenceStats.load(out / "reference_stats.npz")
    np.testing.assert_allclose(stats.mu, mu)
    assert stats.count == 1_281_167 and stats.resolution == "64x64"
    assert stats.extractor_id == build_extractor(f"inception_inside:{inception}").id
    assert stats.extractor_id != build_extractor(f"inception:{inception}").id
    prompts = (out / "eval_prompts.txt").read_text().split()
    assert len(prompts) == 50_000 and prompts[:2] == ["0", "1"] and prompts.count("999") == 50


def test_unreachable_file_and_broken_zip_give_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    item = Download("weights", urls=("https://example.org/files/weights.pt",))
    with pytest.raises(RuntimeError, match=r"weights.pt: download to .*weights.pt failed .*mirror=<folder>"):
        fetch(item, tmp_path / "out", mirror=str(empty))
    assert not (tmp_path / "out" / "weights.pt").exists()

    (empty / "data.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="data.zip: not a readable zip archive"):
        fetch(Download("d", urls=("https://example.org/data.zip",), unpack=True), tmp_path / "out", mirror=str(empty))
