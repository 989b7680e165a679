"""Token folders for the generators' tiny chain (the smoke target): encode a digits split with a tokenizer.

    python projects/titok_rar/generator_tokens.py scale=tiny images=data/tiny/digits/train \
        out=data/tiny/titok_rar/gen_tokens/vqgan tokenizer_out=results/tiny/titok_rar/gen_tokenizers/vqgan

At tiny scale there is no trained tokenizer: `tokenizer=` empty builds a random tiny MaskGIT-VQGAN (vqgan.py,
shapes from `tiny_vqgan`) and saves it to `tokenizer_out`, so the chain train -> sample -> decode -> evaluate runs
end to end in seconds (its images are noise; tiny numbers test the plumbing, not the method). With `tokenizer=<a
tokenizer folder>` it encodes with that one. Toy and paper generators train from the tokenizer project's own
pretokenized folders (data/<scale>/titok_rar/tokens/, issue 11's pretokenize step, with the ten-crop option).
Labels are the toy classes (digit x 8 + colour: 80), captions the digits captions (token_data.write_tokens).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.config import ConfigError, cli, resolve


@dataclass
class Config:
    scale: str = "tiny"
    images: str = "data/tiny/digits/train"   # a prepared digits split (metadata.jsonl + PNGs)
    out: str = "data/tiny/titok_rar/gen_tokens/vqgan"
    tokenizer: str = ""                       # '' = a random tiny MaskGIT-VQGAN, saved to tokenizer_out
    tokenizer_out: str = "results/tiny/titok_rar/gen_tokenizers/vqgan"
    codebook_size: int = 16                   # the random tiny tokenizer's codebook
    seed: int = 0
    batch_size: int = 64
    threads: int = 1


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def tiny_vqgan(resolution: int, codebook_size: int, seed: int):
    from projects.titok_rar.vqgan import MaskGITVQGAN, VQGANConfig

    torch.manual_seed(seed)
    return MaskGITVQGAN(VQGANConfig(channel_mult=(1, 2, 2), num_res_blocks=1, hidden_channels=16, z_channels=8,
                                    resolution=resolution, codebook_size=codebook_size, norm_groups=4))


def main(cfg=None):
    from shared.toy.dataset import read_split
    from projects.titok_rar.generator_common import toy_class
    from projects.titok_rar.token_data import write_tokens
    from projects.titok_rar.image_tokenizers import load_tokenizer

    cfg = resolve(Config, cfg, PRESETS)
    torch.set_num_threads(cfg.threads)
    from shared.toy.dataset import load_arrays

    images, digits, colours = load_arrays(cfg.images)
    captions = [r.caption for r in read_split(cfg.images)]
    if cfg.tokenizer:
        if not Path(cfg.tokenizer).exists():
            raise ConfigError(f"tokenizer={cfg.tokenizer}: not found")
        tok, tok_path = load_tokenizer(cfg.tokenizer), cfg.tokenizer
    else:
        tok = tiny_vqgan(images.shape[1], cfg.codebook_size, cfg.seed)
        tok.save_pretrained(cfg.tokenizer_out)
        tok, tok_path = load_tokenizer(cfg.tokenizer_out), cfg.tokenizer_out
    tok.eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        tokens = torch.cat([tok.encode(x[i:i + cfg.batch_size]) for i in range(0, len(x), cfg.batch_size)])
    labels = np.array([toy_class(d, c) for d, c in zip(digits, colours)], dtype=np.int64)
    write_tokens(cfg.out, tokens, labels, captions=captions,
                 meta={"codebook_size": int(tok.codebook_size), "tokenizer": str(tok_path)})
    print(f"{len(labels)} images -> {tuple(tokens.shape)} tokens ({tok.codebook_size} codes) in {cfg.out}")
    return Path(cfg.out)


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
