"""Write the toy digits dataset as an image folder with caption files.

    data/<scale>/digits/{train,test}/<id>.png   the image (32x32 RGB by default)
    data/<scale>/digits/{train,test}/<id>.txt   its caption, e.g. "a red handwritten seven"
    data/<scale>/digits/{train,test}/metadata.jsonl   file, caption, digit, colour per line

The train/test split is fixed (stratified by digit, seeded); each source digit is rendered in `copies`
colours drawn with the seed, so the same config always gives byte-identical files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from shared.config import cli, resolve, save_resolved
from shared.toy.dataset import COLOUR_NAMES, caption, render
from shared.io import atomic_dir


@dataclass
class Config:
    out_dir: str = "data/toy/digits"
    scale: str = "toy"
    size: int = 32
    copies: int = 1
    test_fraction: float = 0.2
    max_train: int = 0  # 0 = all
    max_test: int = 0
    seed: int = 0


PRESETS = {
    "tiny": {"max_train": 160, "max_test": 80},
    "toy": {},
    "paper": {},
}


def _write_split(out: Path, images: np.ndarray, digits: np.ndarray, cfg, rng: np.random.Generator) -> int:
    out.mkdir(parents=True)
    lines = []
    for i in tqdm(range(len(images)), desc=f"digits/{out.name}", leave=False):
        for c in range(cfg.copies):
            colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
            name = f"{i:05d}_{c}"
            text = caption(int(digits[i]), colour)
            render(images[i], colour, cfg.size).save(out / f"{name}.png", optimize=False)
            (out / f"{name}.txt").write_text(text + "\n")
            lines.append(json.dumps({"file": f"{name}.png", "caption": text, "digit": int(digits[i]),
                                     "colour": COLOUR_NAMES.index(colour)}))
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return len(lines)


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(idx, test_size=cfg.test_fraction, stratify=digits.target,
                                           random_state=cfg.seed)
    if cfg.max_train:
        train_idx = train_idx[: cfg.max_train]
    if cfg.max_test:
        test_idx = test_idx[: cfg.max_test]
    rng = np.random.default_rng(cfg.seed)
    counts = {}
    with atomic_dir(cfg.out_dir) as tmp:  # a half-written dataset never appears under out_dir
        for split, sel in (("train", train_idx), ("test", test_idx)):
            counts[split] = _write_split(tmp / split, digits.images[sel], digits.target[sel], cfg, rng)
        save_resolved(cfg, tmp)
    print(f"wrote {counts['train']} train and {counts['test']} test images to {cfg.out_dir}")
    return counts


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
