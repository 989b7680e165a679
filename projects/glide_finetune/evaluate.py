"""Evaluate a folder of GLIDE samples through shared.evaluate: FD (toy: the digits CNN; paper: FID/KID with
Inception), prompt accuracy (toy: does the digits CNN read the digit and colour the prompt asked for), CLIP score
(paper: open_clip ViT-B-16 weights from the download step, in transformers format).

The reference folder is resized (bicubic, cached beside it) to the samples' resolution when they differ, so an
8 px toy base and its 32 px upsampler are each compared with the real images at their own size.

    python projects/glide_finetune/evaluate.py images=results/toy/glide/samples/base_plms_50_g3.0 \
        reference=data/toy/digits/test experiment=glide_base out=results/toy/glide/eval/base_plms_50_g3.0.json
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.config import cli, resolve
from shared.io import atomic_dir, read_json


@dataclass
class Config:
    scale: str = "toy"
    images: str = ""
    reference: str = "data/toy/digits/test"
    metrics: list[str] = field(default_factory=lambda: ["fd", "prompt_accuracy"])
    extractor: str = "digits:results/toy/digits_features/features.safetensors"
    clip: str = ""
    experiment: str = ""
    checkpoint: str = "none"
    out: str = ""
    batch_size: int = 64
    device: str = "cpu"
    threads: int = 0


PRESETS = {"tiny": {}, "toy": {},
           "paper": {"extractor": "inception:downloads/inception/inception-2015-12-05.pt",
                     "metrics": ["fid", "kid", "clip_score"], "clip": "downloads/glide/clip_vit_b16",
                     "batch_size": 50, "device": "cuda"}}


def _first_image(folder: Path) -> Path:
    for ext in ("*.png", "*.jpg", "*.jpeg", "*.webp"):
        found = sorted(folder.glob(ext))
        if found:
            return found[0]
    raise FileNotFoundError(f"{folder}: no images")


def resized_reference(folder: Path, size: int) -> Path:
    """`folder` at size x size (bicubic), cached as <folder>__<size>px with the captions copied."""
    from PIL import Image

    if Image.open(_first_image(folder)).size == (size, size):
        return folder
    dst = folder.parent / f"{folder.name}__{size}px"
    if dst.is_dir():
        return dst
    with atomic_dir(dst) as tmp:
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC).save(tmp / (p.stem + ".png"))
            elif p.suffix in (".txt", ".jsonl"):
                (tmp / p.name).write_bytes(p.read_bytes())
    return dst


def main(cfg=None):
    from PIL import Image

    from shared import evaluate as shared_eval

    cfg = resolve(Config, cfg, PRESETS)
    images = Path(cfg.images)
    record = images / "samples.json"
    if not record.is_file():
        raise FileNotFoundError(f"{record}: missing; sample the folder with sample.py first")
    info = read_json(record)
    size = Image.open(_first_image(images)).size[0]
    reference = Path(cfg.reference)
    if reference.is_dir():
        reference = resized_reference(reference, size)
    steps = info["steps"]
    from projects.glide_finetune.diffusion import respacing_steps

    n_steps = int(steps) if str(steps).isdigit() else respacing_steps(steps)  # "fast27" -> 27
    return shared_eval.main({"scale": cfg.scale, "images": str(images), "reference": str(reference),
                             "metrics": list(cfg.metrics), "extractor": cfg.extractor, "clip": cfg.clip,
                             "experiment": cfg.experiment or images.name, "checkpoint": cfg.checkpoint,
                             "sampler": info["sampler"], "steps": n_steps, "out": cfg.out,
                             "batch_size": cfg.batch_size, "device": cfg.device, "threads": cfg.threads})


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
