"""Evaluate a folder of DMD2 samples through shared.evaluate / shared.metrics, at the paper's protocol.

Images (and a reference folder) are first resized to `resolution` (bicubic; the paper evaluates SDXL at 512 px,
SD1.5 at 256 px, ImageNet at 64 px) into a cache folder beside them; then FID/FD, CLIP score (ViT-g-14 with
the "A photo depicts " prefix at paper scale), prompt accuracy (toy) are computed by shared/evaluate.py.
`patch_fid=true` adds FID on centre crops of `patch_size` px at full resolution (high-frequency detail).
Images are read through the shared decoder; one that cannot be read (truncated, empty, not an image, dangling
link) is carried into the cache folder unchanged, so shared/evaluate.py skips it, counts it per reason and writes
the counts (`num_unreadable`, `unreadable`, `skip_reasons`) into the result JSON.

    python projects/dmd2/evaluate.py images=results/toy/dmd2/samples/x reference=data/toy/digits/train \
        experiment=dmd2_1step checkpoint=x sampler=dmd2 steps=1 out=results/toy/dmd2/eval/x.json
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from shared.config import cli, resolve
from shared.data import BadSample, SkipCounter, decode_image, probe_image, read_file
from shared.io import atomic_dir, read_json


@dataclass
class Config:
    scale: str = "toy"
    images: str = ""
    reference: str = "data/toy/digits/train"
    resolution: int = 0  # 0 = as generated
    metrics: list[str] = field(default_factory=lambda: ["fd", "prompt_accuracy"])
    extractor: str = "digits:results/toy/digits_features/features.safetensors"
    clip: str = ""  # local CLIP folder for clip_score
    clip_prefix: str = ""
    patch_fid: bool = False
    patch_size: int = 299
    experiment: str = ""
    checkpoint: str = "none"
    sampler: str = ""  # '' = from the folder's samples.json (sample.py): "dmd2" for a generator, else the sampler
    steps: int = 0  # 0 = from samples.json: the generator's number of timesteps, or the teacher's steps
    out: str = ""
    batch_size: int = 64
    device: str = "cpu"
    bootstrap: int = 200  # resamples for the 95% intervals of fd and prompt_accuracy (shared/metrics/bootstrap.py)
    bootstrap_seed: int = 0


PRESETS = {
    "tiny": {},
    "toy": {},
    "paper": {"extractor": "inception:downloads/inception/inception-2015-12-05.pt", "metrics": ["fid", "clip_score"],
              "clip": "downloads/clip_vit_g14", "clip_prefix": "A photo depicts ", "batch_size": 50,
              "bootstrap": 0},  # 2048-d Inception: one 2048 x 2048 eigendecomposition per resample
}


def _transformed(src: Path, tag: str, fn) -> Path:
    """A cached copy of an image folder with `fn` applied to every image (captions copied)."""
    dst = src.parent / f"{src.name}__{tag}"
    if dst.is_dir():
        return dst
    skips = SkipCounter(log_first=0)
    with atomic_dir(dst) as tmp:
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src)
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                skips.add_seen()
                try:
                    img = decode_image(read_file(p), str(p))
                except BadSample as e:
                    # carried over as it is (a link stays a link), so the evaluation counts it under its reason
                    skips.record(e.reason, rel.as_posix(), e.detail)
                    if p.is_symlink():
                        os.symlink(os.readlink(p), tmp / rel)
                    else:
                        shutil.copyfile(p, tmp / rel)
                    continue
                fn(img).save(tmp / rel.with_suffix(".png"))
            elif p.suffix in (".txt", ".jsonl") and p.is_file():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(p.read_bytes())
    if skips.bad:
        print(f"{src} -> {dst}: {skips.summary()}\n{skips.listing()}")
    return dst


def _first_size(folder: Path) -> tuple[int, int] | None:
    """The size of the first readable image (a bad first file does not decide the resolution)."""
    for p in sorted(folder.rglob("*.png")) + sorted(folder.rglob("*.jpg")):
        try:
            return probe_image(p)
        except BadSample:
            continue
    return None


def resized(folder: Path, size: int) -> Path:
    first = _first_size(folder)
    if first is None:
        raise ValueError(f"{folder}: no readable .png/.jpg images")
    if first == (size, size):
        return folder
    return _transformed(folder, f"{size}px", lambda im: im.resize((size, size), Image.BICUBIC))


def center_patches(folder: Path, size: int) -> Path:
    def crop(im):
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        return im.crop((left, top, left + size, top + size))
    return _transformed(folder, f"patch{size}", crop)


def sampling_of(images: Path) -> tuple[str, int]:
    """(sampler, steps) as sample.py recorded them in <images>/samples.json."""
    record = images / "samples.json"
    if not record.is_file():
        raise FileNotFoundError(f"{record}: not written by sample.py; pass sampler= and steps= explicitly")
    info = read_json(record)
    if info.get("mode") == "generator":
        return "dmd2", len(info["timesteps"])
    return info["sampler"], int(info["steps"])


def main(cfg=None):
    from shared import evaluate as shared_eval

    cfg = resolve(Config, cfg, PRESETS)
    if not cfg.sampler or not cfg.steps:
        sampler, steps = sampling_of(Path(cfg.images))
        cfg.sampler, cfg.steps = cfg.sampler or sampler, cfg.steps or steps
    images, reference = Path(cfg.images), Path(cfg.reference)
    if cfg.resolution:
        images = resized(images, cfg.resolution)
        if reference.is_dir():
            reference = resized(reference, cfg.resolution)
    record = Path(cfg.images) / "samples.json"  # the leaderboard's nfe/parameters/seconds, also for resized copies
    base = dict(scale=cfg.scale, extractor=cfg.extractor, clip=cfg.clip, clip_prefix=cfg.clip_prefix,
                batch_size=cfg.batch_size, device=cfg.device, checkpoint=cfg.checkpoint, sampler=cfg.sampler,
                steps=cfg.steps, info=[str(record)] if record.is_file() else [], bootstrap=cfg.bootstrap,
                bootstrap_seed=cfg.bootstrap_seed)
    result = shared_eval.main({**base, "images": str(images), "reference": str(reference),
                               "metrics": list(cfg.metrics), "experiment": cfg.experiment, "out": cfg.out})
    if cfg.patch_fid:
        out = Path(cfg.out).with_name(Path(cfg.out).stem + "_patch.json") if cfg.out else ""
        shared_eval.main({**base, "images": str(center_patches(Path(cfg.images), cfg.patch_size)),
                          "reference": str(center_patches(Path(cfg.reference), cfg.patch_size)),
                          "metrics": ["fid" if "fid" in cfg.metrics else "fd"],
                          "experiment": f"{cfg.experiment}_patch", "out": str(out)})
    return result


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
