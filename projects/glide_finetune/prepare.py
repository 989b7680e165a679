"""Prepare the toy GLIDE experiment from the digits dataset: tokenizer, evaluation prompts, a fine-tuning subset.

    python projects/glide_finetune/prepare.py digits=data/toy/digits out_dir=data/toy/glide

Writes into out_dir:
    tokenizer/           a byte-level BPE (vocab.json + merges.txt) trained on the train captions (tokenizer.py)
    base/                the train images of every colour but `finetune_colour`, with their captions: the base's
                         training set, so the fine-tune teaches the base a colour it has not seen (a base trained
                         on every colour already draws the fine-tune colour perfectly, and the fine-tune table
                         can then show no gain: measured at 54706a6, prompt accuracy 1.0 before the fine-tune)
    eval_prompts.txt     the test captions of the base's colours (num_prompts of them, 0 = all), one per line: the
                         base's evaluation prompts, and the fine-tune's drift set (what it was not shown)
    finetune/            the train images of `finetune_colour` with their captions, less a held-out part: the
                         fine-tune set
    finetune_reference/  that held-out part and the colour's test images: the real images the fine-tune
                         prompts' FD is taken against, seen by neither model (the toy test split has 44 magenta
                         images, fewer than the 64-d digits features need for a covariance)
    finetune_prompts.txt the test captions of that colour, each `finetune_prompt_repeats` times (the fine-tuned
                         subset's evaluation prompts; each line is sampled with its own seed)
At paper scale the tokenizer is GPT-2's (download step) and the data a LAION-style WebDataset, so this step is
only used at tiny/toy scale.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from shared.config import cli, option, resolve, save_resolved
from shared.toy.dataset import COLOUR_NAMES, read_split
from shared.io import atomic_dir, write_text
from projects.glide_finetune.tokenizer import train_tokenizer


@dataclass
class Config:
    scale: str = "toy"
    digits: str = "data/toy/digits"
    out_dir: str = "data/toy/glide"
    vocab_size: int = 320
    num_prompts: int = option(0, help="evaluation prompts from the test split; 0 = all")
    finetune_colour: str = option("magenta", choices=tuple(COLOUR_NAMES))
    # one colour has ~44 of the 360 toy test captions: fewer samples than the digits CNN's 64 feature dimensions,
    # where the FD covariance is singular (shared.metrics refuses it); 8 repeats give 352 samples
    finetune_prompt_repeats: int = option(8, help="times each test caption of the fine-tuned colour is listed")
    finetune_reference_fraction: float = option(0.4, help="share of the fine-tune colour's train images kept out "
                                                          "of the fine-tune set, for its FD reference")


PRESETS = {"tiny": {"vocab_size": 300, "num_prompts": 32}, "toy": {"num_prompts": 500}, "paper": {}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.finetune_prompt_repeats < 1:
        raise ValueError(f"finetune_prompt_repeats={cfg.finetune_prompt_repeats}: each caption at least once (>= 1)")
    digits, out = Path(cfg.digits), Path(cfg.out_dir)
    train, test = read_split(digits / "train"), read_split(digits / "test")
    # the inputs are checked before anything is written
    colour = COLOUR_NAMES.index(cfg.finetune_colour)
    chosen = [r for r in train if r.colour == colour]
    if not chosen:
        raise ValueError(f"{digits}/train has no {cfg.finetune_colour} images to fine-tune on")
    held = int(len(chosen) * cfg.finetune_reference_fraction)
    if not 0 <= cfg.finetune_reference_fraction < 1 or held == len(chosen):
        raise ValueError(f"finetune_reference_fraction={cfg.finetune_reference_fraction}: expected [0, 1) that "
                         f"leaves some of the {len(chosen)} {cfg.finetune_colour} train images to fine-tune on")
    out.mkdir(parents=True, exist_ok=True)
    # the whole vocabulary, the fine-tune colour's word included: the fine-tune learns its embedding, not a new token
    tok = train_tokenizer([r.caption for r in train], out / "tokenizer", cfg.vocab_size)
    base = [r for r in train if r.colour != colour]
    for name, records in (("base", base), ("finetune", chosen[held:])):
        with atomic_dir(out / name) as tmp:
            (tmp / "metadata.jsonl").write_text("\n".join(_link_captioned(records, digits / "train", tmp)) + "\n")
    with atomic_dir(out / "finetune_reference") as tmp:
        lines = []
        for split, records in (("train", chosen[:held]), ("test", [r for r in test if r.colour == colour])):
            lines += _link_captioned(records, digits / split, tmp, prefix=f"{split}_")
        (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    prompts = [r.caption for r in test if r.colour != colour][: cfg.num_prompts or None]
    write_text(out / "eval_prompts.txt", "\n".join(prompts) + "\n")
    ft_test = [r.caption for r in test if r.colour == colour for _ in range(cfg.finetune_prompt_repeats)]
    write_text(out / "finetune_prompts.txt", "\n".join(ft_test) + "\n")
    save_resolved(cfg, out)
    print(f"{tok}; base set: {len(base)} images, {len(prompts)} eval prompts; fine-tune set: "
          f"{len(chosen) - held} {cfg.finetune_colour} images ({held} held out for its FD reference) -> {out}")
    return out


def _link_captioned(records, src: Path, folder: Path, prefix: str = "") -> list[str]:
    """Images of `records` with their caption files (what train.py reads) in `folder`, as hard links into `src`;
    `prefix` keeps two splits' file names apart. Returns their metadata.jsonl lines (the prepared-split format
    shared.toy.dataset reads); the caller writes them once the folder is complete."""
    lines = []
    for r in records:
        name = prefix + Path(r.file).name
        os.link(src / r.file, folder / name)  # a second name, not a copy
        (folder / Path(name).with_suffix(".txt")).write_text(r.caption + "\n")
        lines.append(json.dumps({"file": name, "caption": r.caption, "digit": r.digit, "colour": r.colour}))
    return lines


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
