"""Evaluate a folder of GLIDE samples through shared.evaluate: FD (toy: the digits CNN; paper: FID/KID with
Inception), prompt accuracy (toy: does the digits CNN read the digit and colour the prompt asked for), CLIP score
(paper: open_clip ViT-B-16 weights from the download step, in transformers format).

A folder upscale.py wrote (upscale.json, no samples.json) is evaluated the same way, its method as the sampler.
The reference folder is resized (bicubic, cached beside it) to the samples' resolution when they differ, so an
8 px toy base and its 32 px upsampler are each compared with the real images at their own size.

    python projects/glide_finetune/evaluate.py images=results/toy/glide/samples/base_plms_50_g3.0 \
        reference=data/toy/digits/test experiment=glide_base out=results/toy/glide/eval/base_plms_50_g3.0.json
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.config import cli, option, resolve
from shared.io import atomic_dir, read_json


@dataclass
class Config:
    scale: str = "toy"
    images: str = ""
    reference: str = "data/toy/digits/test"
    metrics: list[str] = field(default_factory=lambda: ["fd", "prompt_accuracy"])
    extractor: str = "digits:results/toy/digits_features/features.safetensors"
    clip: str = ""
    reference_captions: str = option("", help="a prompts file: compare only with the reference images whose caption "
                                     "is in it (the fine-tune's colour, or the rest); '' = the whole folder")
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


def _first_size(folder: Path) -> tuple[int, int]:
    """(w, h) of the first readable image (a bad first file does not decide the resolution)."""
    from shared.data import BadSample, probe_image

    for ext in ("*.png", "*.jpg", "*.jpeg", "*.webp"):
        for p in sorted(folder.glob(ext)):
            try:
                return probe_image(p)
            except BadSample:
                continue
    raise FileNotFoundError(f"{folder}: no readable images (.png, .jpg, .jpeg, .webp)")


def resized_reference(folder: Path, size: int) -> Path:
    """`folder` at size x size (bicubic), cached as <folder>__<size>px with the captions copied. Images are read
    through the shared decoder; one that cannot be read is carried over unchanged (a link stays a link), so
    shared/evaluate.py skips it and counts it under its reason in the result JSON."""
    import os
    import shutil

    from PIL import Image

    from shared.data import BadSample, SkipCounter, decode_image, read_file

    if _first_size(folder) == (size, size):
        return folder
    dst = folder.parent / f"{folder.name}__{size}px"
    if dst.is_dir():
        return dst
    skips = SkipCounter(log_first=0)
    with atomic_dir(dst) as tmp:
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                skips.add_seen()
                try:
                    img = decode_image(read_file(p), str(p))
                except BadSample as e:
                    skips.record(e.reason, p.name, e.detail)
                    if p.is_symlink():
                        os.symlink(os.readlink(p), tmp / p.name)
                    else:
                        shutil.copyfile(p, tmp / p.name)
                    continue
                img.resize((size, size), Image.BICUBIC).save(tmp / (p.stem + ".png"))
            elif p.suffix in (".txt", ".jsonl"):
                (tmp / p.name).write_bytes(p.read_bytes())
    if skips.bad:
        print(f"{folder} -> {dst}: {skips.summary()}\n{skips.listing()}")
    return dst


def captioned_subset(folder: Path, prompts_file: Path) -> Path:
    """The images of `folder` whose `.txt` caption is a line of `prompts_file`, as hard links cached in
    <folder>__<prompts file stem> (with their captions and metadata.jsonl lines): the real images of what was
    sampled. FD of the magenta prompts' samples against all colours' test images measures the colour mix, not
    the fine-tune (the toy finetune table read ~41 for both models that way)."""
    import json
    import os

    if not prompts_file.is_file():
        raise FileNotFoundError(f"reference_captions={prompts_file}: no such prompts file")
    wanted = {line.strip() for line in prompts_file.read_text().splitlines() if line.strip()}
    dst = folder.parent / f"{folder.name}__{prompts_file.stem}"
    if dst.is_dir():
        return dst
    kept = set()
    with atomic_dir(dst) as tmp:
        for cap in sorted(folder.glob("*.txt")):
            image = next((cap.with_suffix(e) for e in (".png", ".jpg", ".jpeg", ".webp")
                          if cap.with_suffix(e).exists()), None)
            if image is None or cap.read_text().strip() not in wanted:
                continue
            os.link(image, tmp / image.name)
            os.link(cap, tmp / cap.name)
            kept.add(image.name)
        if not kept:
            raise ValueError(f"{folder}: no image has a caption of {prompts_file} ({len(wanted)} prompts); "
                             f"reference_captions must list captions of the reference folder")
        meta = folder / "metadata.jsonl"
        if meta.is_file():
            lines = [line for line in meta.read_text().splitlines()
                     if line.strip() and json.loads(line).get("file") in kept]
            (tmp / meta.name).write_text("".join(f"{line}\n" for line in lines))
    return dst


def main(cfg=None):
    from shared import evaluate as shared_eval

    cfg = resolve(Config, cfg, PRESETS)
    images = Path(cfg.images)
    record = images / "samples.json"
    extra_info = []
    if not record.is_file() and (images / "upscale.json").is_file():
        # an upscale.py folder: the method is the row's sampler, no diffusion steps; its timing feeds the leaderboard
        extra_info = [str(images / "upscale.json")]
        up = read_json(images / "upscale.json")
        info = {"sampler": f"{up['method']}_x{up['factor']}", "steps": "0"}
    elif not record.is_file():
        raise FileNotFoundError(f"{record}: missing; sample the folder with sample.py (or upscale.py) first")
    else:
        info = read_json(record)
    size = _first_size(images)[0]
    reference = Path(cfg.reference)
    if reference.is_dir():
        reference = resized_reference(reference, size)
        if cfg.reference_captions:
            reference = captioned_subset(reference, Path(cfg.reference_captions))
    elif cfg.reference_captions:
        raise ValueError(f"reference_captions={cfg.reference_captions}: needs a reference folder, not {reference}")
    steps = info["steps"]
    from projects.glide_finetune.diffusion import respacing_steps

    n_steps = int(steps) if str(steps).isdigit() else respacing_steps(steps)  # "fast27" -> 27
    return shared_eval.main({"scale": cfg.scale, "images": str(images), "reference": str(reference),
                             "metrics": list(cfg.metrics), "extractor": cfg.extractor, "clip": cfg.clip,
                             "experiment": cfg.experiment or images.name, "checkpoint": cfg.checkpoint,
                             "sampler": info["sampler"], "steps": n_steps, "out": cfg.out,
                             "batch_size": cfg.batch_size, "device": cfg.device, "threads": cfg.threads,
                             "info": extra_info,
                             # upscale.json's own `method` (swinir / bicubic) must not name the leaderboard row
                             "method": (cfg.experiment or images.name) if extra_info else ""})


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
