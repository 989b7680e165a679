"""Paper-scale downloads for GLIDE fine-tuning (a light step: runs on the login node, needs the internet there).

    python projects/glide_finetune/download.py item=base out_dir=downloads/glide/base
    python projects/glide_finetune/download.py item=gpt2_tokenizer out_dir=downloads/glide/gpt2_tokenizer
    python projects/glide_finetune/download.py item=upsample out_dir=downloads/glide/upsample mirror=/staging/glide

Items (DOWNLOADS) go through shared.download: the SHA-256 of every file recorded in download.json (OpenAI
publishes no digests for these files), atomic files, reruns skip what is there; `mirror=` reads the plain-URL
files from a staging folder or another server (air-gapped clusters copy them there first). The released GLIDE
(filtered) checkpoints are the URLs glide-text2im's download.py names; GPT-2's vocab.json + merges.txt are the
same BPE as glide-text2im's encoder.json.gz / vocab.bpe.gz (50257 tokens).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import cli, option, resolve
from shared.download import Download, fetch

_OPENAI = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021"

DOWNLOADS: dict[str, Download] = {
    "base": Download("GLIDE (filtered) 64 px text-conditional base", urls=(f"{_OPENAI}/base.pt",)),
    "upsample": Download("GLIDE (filtered) 64 -> 256 upsampler", urls=(f"{_OPENAI}/upsample.pt",)),
    "base_inpaint": Download("GLIDE (filtered) inpainting base", urls=(f"{_OPENAI}/base_inpaint.pt",)),
    "upsample_inpaint": Download("GLIDE (filtered) inpainting upsampler", urls=(f"{_OPENAI}/upsample_inpaint.pt",)),
    "clip_image_enc": Download("GLIDE's noised CLIP image encoder (CLIP-guided sampling)",
                               urls=(f"{_OPENAI}/clip_image_enc.pt",)),
    "clip_text_enc": Download("GLIDE's noised CLIP text encoder (CLIP-guided sampling)",
                              urls=(f"{_OPENAI}/clip_text_enc.pt",)),
    "gpt2_tokenizer": Download("GPT-2 byte-level BPE (vocab.json + merges.txt), GLIDE's tokenizer",
                               repo="openai-community/gpt2", files=("vocab.json", "merges.txt")),
    "clip_vit_b16": Download("CLIP ViT-B/16 in transformers format, for CLIP score",
                             repo="openai/clip-vit-base-patch16",
                             allow=("*.json", "*.txt", "model.safetensors")),
}


@dataclass
class Config:
    scale: str = "paper"
    item: str = option("base", choices=tuple(DOWNLOADS))
    out_dir: str = "downloads/glide/base"
    mirror: str = option("", help="folder or URL prefix serving the plain-URL files (staged)")


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    return fetch(DOWNLOADS[cfg.item], Path(cfg.out_dir), mirror=cfg.mirror)


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__ + "\nitems:\n" + "\n".join(f"  {k:<18} {v.description}"
                                                              for k, v in DOWNLOADS.items()))
