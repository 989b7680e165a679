"""Encode a dataset once into token files (token_data.py) for the generators to train from.

    python projects/titok_rar/pretokenize.py tokenizer=results/toy/titok_rar/k16/stage2/final \\
        data=data/toy/titok_rar/digits/shards/train out_dir=data/toy/titok_rar/tokens/k16 scale=toy
    python projects/titok_rar/pretokenize.py tokenizer=downloads/titok_rar/titok_l32 \\
        data=data/paper/titok_rar/shards/train out_dir=data/paper/titok_rar/tokens/titok_l32 scale=paper ten_crop=true

The original (RAR's scripts/pretokenization.py) writes one JSONL line per image; we write tokens.npy / labels.npy
/ captions.json / meta.json (see token_data.py for why: memory-mapped, 2 bytes a token, no parsing).
`ten_crop=true`: each image centre-cropped to a square of int(image_size x crop_range) and cut into torchvision's
ten crops (four corners, centre, and their mirror images) of image_size: tokens (N, 10, K), as RAR's
`--ten_crop` augmentation (crop_range 1.1); the generator draws one crop per epoch. Otherwise a centre crop, (N, K).
Labels come from the shards (`label` in each sample's JSON, -1 without), captions from the samples' text.
A VAE TiTok has no discrete tokens and is refused. A TA-TiTok (MaskGen's tokenizer) encodes without text, as in the
original (the text guidance enters only its decoder); its token folder must keep the captions MaskGen trains on
(captions=true, from the shards' `caption_key`), and meta.json says where its text guidance lives (the tokenizer
folder's text_encoder.json, which sample.py decodes with).

    python projects/titok_rar/pretokenize.py tokenizer=results/toy/titok_rar/tatitok_k16/single/final \\
        data=data/toy/titok_rar/digits/shards/train out_dir=data/toy/titok_rar/tokens/tatitok_k16 scale=toy
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.config import ConfigError, cli, resolve, save_resolved
from shared.data import ResumableLoader
from projects.titok_rar.data import image_source, labels_of, to_unit
from projects.titok_rar.token_data import write_tokens
from projects.titok_rar.image_tokenizers import TATiTok, load_tokenizer


@dataclass
class Config:
    tokenizer: str = ""
    data: str = "data/toy/titok_rar/digits/shards/train"
    out_dir: str = ""
    scale: str = "toy"
    image_size: int = 32
    ten_crop: bool = False
    crop_range: float = 1.1
    captions: bool = True         # keep the samples' captions (captions.json) for text-to-image generators
    caption_key: str = "json:caption"   # where shards keep captions (img2dataset / DataComp: txt)
    max_images: int = 0           # 0 = all
    batch_size: int = 64
    device: str = "cpu"
    threads: int = 0


PRESETS = {"tiny": {"max_images": 48, "batch_size": 16}, "toy": {}, "paper": {"image_size": 256, "batch_size": 128}}


class TenCrop:
    """PIL -> uint8 (10, 3, S, S): a centre square of int(S x crop_range) (short side resized to it first), then
    torchvision's TenCrop(S), as RAR's pretokenization (center_crop_arr to the larger size, then TenCrop)."""
    def __init__(self, size: int, crop_range: float):
        self.size, self.crop = size, int(size * crop_range)

    def __call__(self, img):
        from torchvision.transforms import v2
        img = v2.CenterCrop(self.crop)(v2.Resize(self.crop, antialias=True)(img.convert("RGB")))
        return torch.stack([v2.PILToTensor()(c) for c in v2.TenCrop(self.size)(img)])


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    for key in ("tokenizer", "out_dir"):
        if not cfg[key]:
            raise ConfigError(f"missing required option {key}=...")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok = load_tokenizer(cfg.tokenizer).to(cfg.device).eval()
    if getattr(tok, "is_continuous", False):
        raise ConfigError(f"tokenizer={cfg.tokenizer}: a VAE TiTok has continuous tokens; token files hold codes")
    text_aware = isinstance(tok, TATiTok)
    if text_aware and not cfg.captions:
        raise ConfigError(f"captions=false: tokenizer={cfg.tokenizer} is a TA-TiTok, whose tokens are for MaskGen, "
                          "which trains on each image's caption (captions.json)")
    transform = TenCrop(cfg.image_size, cfg.crop_range) if cfg.ten_crop else None
    src = image_source(cfg.data, cfg.image_size, transform=transform, caption_key=cfg.caption_key)
    loader = ResumableLoader(src, cfg.batch_size, shuffle=False, drop_last=False, rank=0, world_size=1)
    tokens, labels, captions, n = [], [], [], 0
    for batch in loader:
        x = to_unit(batch["image"])
        b = x.shape[0]
        if cfg.max_images:
            b = min(b, cfg.max_images - n)
        if b <= 0:
            break
        x = x[:b].to(cfg.device)
        if cfg.ten_crop:  # (B, 10, 3, S, S) -> tokens (B, 10, K)
            t = tok.encode(x.flatten(0, 1)).view(b, x.shape[1], -1)
        else:
            t = tok.encode(x)
        tokens.append(t.cpu().numpy())
        labels.append(labels_of(batch, len(batch["key"]))[:b].numpy())
        captions.extend(str(c) for c in list(batch.get("caption", [""] * b))[:b])
        n += b
        if cfg.max_images and n >= cfg.max_images:
            break
    if n == 0:
        raise ValueError(f"data={cfg.data}: no readable images")
    if text_aware and not any(captions):
        raise ValueError(f"data={cfg.data}: no captions under caption_key={cfg.caption_key!r}; a TA-TiTok's token "
                         "folder is for MaskGen, which needs them (ours: json:caption, img2dataset/DataComp: txt)")
    meta = {"codebook_size": int(tok.codebook_size), "tokenizer": str(cfg.tokenizer), "image_size": cfg.image_size,
            "ten_crop": bool(cfg.ten_crop), "data": str(cfg.data), "skipped": loader.skips.to_dict(),
            "tokenizer_class": type(tok).__name__}
    if text_aware:  # decoding these tokens needs the caption's guidance from this folder (sample.py reads it)
        from projects.titok_rar.text_guidance import SPEC_FILE
        spec = Path(cfg.tokenizer) / SPEC_FILE
        meta["text_guidance"] = str(spec.parent) if spec.is_file() else ""
    out = write_tokens(cfg.out_dir, np.concatenate(tokens), np.concatenate(labels),
                       captions=captions if cfg.captions and any(captions) else None, meta=meta)
    save_resolved(cfg, out)
    print(f"{n} images x {'10 crops x ' if cfg.ten_crop else ''}{tok.num_tokens} tokens "
          f"(codebook {tok.codebook_size}) -> {out}")
    return out


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
