"""Paper-scale downloads for GLIDE fine-tuning (a light step: runs on the login node, needs the internet there).

    python projects/glide_finetune/download.py item=base out_dir=downloads/glide/base
    python projects/glide_finetune/download.py item=gpt2_tokenizer out_dir=downloads/glide/gpt2_tokenizer
    python projects/glide_finetune/download.py item=upsample out_dir=downloads/glide/upsample mirror=/staging/glide
    python projects/glide_finetune/download.py item=swinir_classical_x4 out_dir=downloads/glide/swinir_classical_x4

Items (DOWNLOADS) go through shared.download: the SHA-256 of every file recorded in download.json (OpenAI
publishes no digests for these files), atomic files, reruns skip what is there; `mirror=` reads the plain-URL
files from a staging folder or another server (air-gapped clusters copy them there first). The released GLIDE
(filtered) checkpoints are the URLs glide-text2im's download.py names; GPT-2's vocab.json + merges.txt are the
same BPE as glide-text2im's encoder.json.gz / vocab.bpe.gz (50257 tokens). The SwinIR items are the x4 files of
JingyunLiang/SwinIR's v0.0 release that upscale.py loads (swinir.SWINIR_PRESETS' release_file names; not imported
here, because swinir.py loads torch and the workflow imports this module at every dry run: a test checks the names).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import cli, option, resolve
from shared.download import Download, fetch

_OPENAI = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021"
_SWINIR = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0"

DOWNLOADS: dict[str, Download] = {
    "base": Download("GLIDE (filtered) 64 px text-conditional base", urls=(f"{_OPENAI}/base.pt",)),
    "upsample": Download("GLIDE (filtered) 64 -> 256 upsampler", urls=(f"{_OPENAI}/upsample.pt",)),
    "base_inpaint": Download("GLIDE (filtered) inpainting base", urls=(f"{_OPENAI}/base_inpaint.pt",)),
    "upsample_inpaint": Download("GLIDE (filtered) inpainting upsampler", urls=(f"{_OPENAI}/upsample_inpaint.pt",)),
    "clip_image_enc": Download("GLIDE's noised CLIP image encoder (CLIP-guided sampling)",
                               urls=(f"{_OPENAI}/clip_image_enc.pt",)),
    "clip_text_enc": Download("GLIDE's noised CLIP text encoder (CLIP-guided sampling)",
                              urls=(f"{_OPENAI}/clip_text_enc.pt",)),
    "swinir_classical_x4": Download("SwinIR-M x4, classical SR (DF2K 64 px patches): upscale.py preset classical_x4",
                                    urls=(f"{_SWINIR}/001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth",)),
    "swinir_real_x4": Download("SwinIR-M x4, real-world SR GAN (BSRGAN degradations): upscale.py preset real_x4",
                               urls=(f"{_SWINIR}/003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth",)),
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
