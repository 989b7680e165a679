"""Prepare the toy GLIDE experiment from the digits dataset: tokenizer, evaluation prompts, a fine-tuning subset.

    python projects/glide_finetune/prepare.py digits=data/toy/digits out_dir=data/toy/glide

Writes into out_dir:
    tokenizer/           a byte-level BPE (vocab.json + merges.txt) trained on the train captions (tokenizer.py)
    eval_prompts.txt     the test captions (num_prompts of them, 0 = all), one per line
    finetune/            the train images of one colour (`finetune_colour`) with their captions: the fine-tune set
    finetune_prompts.txt the test captions of that colour, each `finetune_prompt_repeats` times (the fine-tuned
                         subset's evaluation prompts; each line is sampled with its own seed)
    rest_prompts.txt     the other test captions (drift of the fine-tune on what it was not shown)
At paper scale the tokenizer is GPT-2's (download step) and the data a LAION-style WebDataset, so this step is
only used at tiny/toy scale.
"""
from __future__ import annotations

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


PRESETS = {"tiny": {"vocab_size": 300, "num_prompts": 32}, "toy": {"num_prompts": 500}, "paper": {}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.finetune_prompt_repeats < 1:
        raise ValueError(f"finetune_prompt_repeats={cfg.finetune_prompt_repeats}: each caption at least once (>= 1)")
    digits, out = Path(cfg.digits), Path(cfg.out_dir)
    train, test = read_split(digits / "train"), read_split(digits / "test")
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer([r.caption for r in train], out / "tokenizer", cfg.vocab_size)
    prompts = [r.caption for r in test][: cfg.num_prompts or None]
    write_text(out / "eval_prompts.txt", "\n".join(prompts) + "\n")
    colour = COLOUR_NAMES.index(cfg.finetune_colour)
    chosen = [r for r in train if r.colour == colour]
    if not chosen:
        raise ValueError(f"{digits}/train has no {cfg.finetune_colour} images to fine-tune on")
    with atomic_dir(out / "finetune") as tmp:
        for r in chosen:
            os.link(digits / "train" / r.file, tmp / Path(r.file).name)  # a second name, not a copy
            (tmp / Path(r.file).with_suffix(".txt").name).write_text(r.caption + "\n")
    ft_test = [r.caption for r in test if r.colour == colour for _ in range(cfg.finetune_prompt_repeats)]
    rest = [r.caption for r in test if r.colour != colour][: cfg.num_prompts or None]
    write_text(out / "finetune_prompts.txt", "\n".join(ft_test) + "\n")
    write_text(out / "rest_prompts.txt", "\n".join(rest) + "\n")
    save_resolved(cfg, out)
    print(f"{tok}; {len(prompts)} eval prompts; fine-tune set: {len(chosen)} {cfg.finetune_colour} images -> {out}")
    return out


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
