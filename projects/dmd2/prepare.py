"""DMD2 data: the LMDB of real samples (the GAN's "real" side and the training prompts) and the prompt sets.

    kind=edm  image folder -> LMDB {image (PNG), label (int), caption}; labels: digits captions
              ("a red handwritten seven" -> digit * 8 + colour) or, with labels_from=folder, the image's folder
              name as a class index (an ImageNet-64 folder laid out as <class index>/<file>.png)
    kind=sd   image folder + captions -> LMDB {latent (the teacher pipeline's VAE, scaled), caption}
Prompt sets written beside it: train_prompts.txt (distinct training captions) and eval_prompts.txt
(`num_eval_prompts` captions of `eval_images`, cycled), one per line. Images that cannot be read or decoded
(truncated, empty, not an image, dangling links) are left out, counted and named (shared.data's skip path).

    python projects/dmd2/prepare.py kind=edm images=data/toy/digits/train eval_images=data/toy/digits/test \
        out_dir=data/toy/dmd2/digits
    python -m projects.dmd2.prepare kind=sd teacher=results/toy/sd_flux_lab/base_sdxl/pipeline \
        images=data/toy/digits/train eval_images=data/toy/digits/test out_dir=data/toy/dmd2/sdxl
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from shared.config import cli, resolve, save_resolved
from shared.data import BadSample, Filtered, LMDBWriter, SkipCounter, decode_image, image_transform, list_images, \
    read_file
from shared.io import write_text
from projects.dmd2.prompts import label_of_prompt


@dataclass
class Config:
    scale: str = "toy"
    kind: str = "edm"  # edm | sd
    images: str = "data/toy/digits/train"  # image folder with captions (.txt / metadata.jsonl / folder names)
    eval_images: str = "data/toy/digits/test"  # captions of the evaluation prompt set ('' = none)
    out_dir: str = "data/toy/dmd2/digits"
    teacher: str = ""  # sd: the pipeline folder whose VAE encodes the latents
    resolution: int = 0  # resize + centre-crop to this; 0 = keep (edm) / the pipeline's resolution (sd)
    labels_from: str = "caption"  # edm: caption (toy digits) | folder (<class index>/<file>)
    num_eval_prompts: int = 0  # 0 = one per eval image
    max_images: int = 0  # 0 = all
    batch_size: int = 32  # VAE encoding batch
    seed: int = 0


PRESETS = {"tiny": {"max_images": 32, "num_eval_prompts": 8}, "toy": {"num_eval_prompts": 1000}, "paper": {}}


def _label(item, labels_from: str) -> int:
    if labels_from == "folder":
        return int(Path(item.path).parent.name)
    return label_of_prompt(item.prompt)


def _prompt_sets(cfg, train_captions: list[str]) -> None:
    out = Path(cfg.out_dir)
    write_text(out / "train_prompts.txt", "\n".join(dict.fromkeys(train_captions)) + "\n")
    if cfg.eval_images:
        caps = [i.prompt for i in list_images(cfg.eval_images).items if i.prompt]
        n = cfg.num_eval_prompts or len(caps)
        write_text(out / "eval_prompts.txt", "\n".join(caps[i % len(caps)] for i in range(n)) + "\n")


def _read(root: Path, item, skips: SkipCounter) -> Image.Image | None:
    """The image as RGB, or None (counted on `skips` with the file) when it cannot be used."""
    skips.add_seen()
    try:
        return decode_image(read_file(root / item.path), str(root / item.path))
    except BadSample as e:
        skips.record(e.reason, e.file, e.detail)
    except Filtered as e:
        skips.record_filtered(e.reason)
    return None


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    items = [i for i in list_images(cfg.images).items if i.prompt or cfg.labels_from == "folder"]
    if cfg.max_images:
        items = items[: cfg.max_images]
    if not items:
        raise ValueError(f"{cfg.images}: no images with a caption")
    root = Path(cfg.images)
    out = Path(cfg.out_dir)
    lmdb_path = out / "real.lmdb"
    skips, kept = SkipCounter(), []
    if cfg.kind == "edm":
        tf = image_transform(cfg.resolution, normalize=False) if cfg.resolution else None
        with LMDBWriter(lmdb_path, meta={"kind": "edm", "source": str(root)}) as w:
            for it in tqdm(items, desc="lmdb", leave=False):
                img = _read(root, it, skips)
                if img is None:
                    continue
                kept.append(it)
                if tf is not None:
                    img = Image.fromarray(tf(img).permute(1, 2, 0).numpy())
                w.add(image=img, label=_label(it, cfg.labels_from), caption=it.prompt)
    elif cfg.kind == "sd":
        from projects.dmd2.backbones import SDBackbone

        if not cfg.teacher:
            raise ValueError("kind=sd needs teacher=<pipeline folder> (its VAE encodes the latents)")
        bb = SDBackbone.load(cfg.teacher, resolution=cfg.resolution)
        tf = image_transform(bb.resolution)
        with LMDBWriter(lmdb_path, meta={"kind": "sd", "source": str(root), "teacher": cfg.teacher}) as w:
            for i in tqdm(range(0, len(items), cfg.batch_size), desc="vae", leave=False):
                pairs = [(it, img) for it in items[i:i + cfg.batch_size] if (img := _read(root, it, skips)) is not None]
                if not pairs:
                    continue
                chunk = [it for it, _ in pairs]
                kept += chunk
                x = torch.stack([tf(img) for _, img in pairs])
                z = bb.encode_images(x).float().cpu().numpy().astype(np.float32)
                for it, zi in zip(chunk, z):
                    w.add(latent=zi, caption=it.prompt)
    else:
        raise ValueError(f"kind={cfg.kind!r}; expected edm or sd")
    _prompt_sets(cfg, [it.prompt for it in kept])
    save_resolved(cfg, out)
    if skips.counts or skips.filtered:
        print(f"images: {skips.summary()}\n{skips.listing()}")
    print(f"wrote {len(kept)} records to {lmdb_path}")
    return lmdb_path


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
