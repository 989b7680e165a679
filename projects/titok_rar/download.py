"""Paper-scale downloads for the tokenizer half of titok_rar (a light step; needs the internet, or `mirror=`).

    python projects/titok_rar/download.py item=titok_l32 out_dir=downloads/titok_rar/titok_l32
    python projects/titok_rar/download.py item=maskgit_vqgan out_dir=downloads/titok_rar/maskgit_vqgan
    python projects/titok_rar/download.py --help        # lists the items

Items go through shared.download (atomic files, SHA-256 of every file recorded in download.json, reruns skip
what is there). Hugging Face items follow HF_ENDPOINT; plain URLs take `mirror=<folder or URL prefix>` (copy the
files there on a machine with internet access first). The released TiTok folders hold config.json +
weights in the hub-mixin layout, so `image_tokenizers.load_tokenizer(out_dir)` reads them (strictly).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.config import ConfigError, cli, resolve
from shared.download import Download, fetch

_HUB_FILES = ("config.json", "*.safetensors", "*.bin")


def _titok(name: str, what: str) -> Download:
    return Download(f"released {what} (hub-mixin folder)", repo=f"yucornetto/tokenizer_{name}_imagenet",
                    allow=_HUB_FILES)


DOWNLOADS: dict[str, Download] = {
    "titok_l32": _titok("titok_l32", "TiTok-L-32 (rFID 2.21)"),
    "titok_b64": _titok("titok_b64", "TiTok-B-64 (rFID 1.70)"),
    "titok_s128": _titok("titok_s128", "TiTok-S-128 (rFID 1.71)"),
    "titok_bl64_vq8k": _titok("titok_bl64_vq8k", "TiTok-BL-64 VQ 8k codes"),
    "titok_bl128_vq8k": _titok("titok_bl128_vq8k", "TiTok-BL-128 VQ 8k codes"),
    "titok_sl256_vq8k": _titok("titok_sl256_vq8k", "TiTok-SL-256 VQ 8k codes"),
    "titok_ll32_vae_c16": _titok("titok_ll32_vae_c16", "TiTok-LL-32 VAE, 16 channels"),
    "titok_bl64_vae_c16": _titok("titok_bl64_vae_c16", "TiTok-BL-64 VAE, 16 channels"),
    "titok_bl128_vae_c16": _titok("titok_bl128_vae_c16", "TiTok-BL-128 VAE, 16 channels"),
    "maskgit_vqgan": Download("the MaskGIT-VQGAN (f16, 1024 codes): stage-1 proxy codes, legacy pixel decoder",
                              repo="fun-research/TiTok", files=("maskgit-vqgan-imagenet-f16-256.bin",)),
    "convnext_small": Download("torchvision ConvNeXt-S ImageNet weights: the 'convnext_s' perceptual loss",
                               urls=("https://download.pytorch.org/models/convnext_small-0c510722.pth",)),
    "inception": Download("Inception-v3 FID weights as clean-fid uses them (TorchScript), for rFID",
                          urls=("https://github.com/GaParmar/clean-fid/releases/download/v0.1.10/"
                                "inception-2015-12-05.pt",)),
}


@dataclass
class Config:
    scale: str = "paper"
    item: str = field(default="titok_l32", metadata={"help": "one of " + ", ".join(DOWNLOADS)})
    out_dir: str = "downloads/titok_rar/titok_l32"
    mirror: str = field(default="", metadata={"help": "folder or URL prefix serving the plain-URL files (staged)"})


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.item not in DOWNLOADS:
        raise ConfigError(f"item={cfg.item!r}; known: {', '.join(DOWNLOADS)}")
    return fetch(DOWNLOADS[cfg.item], Path(cfg.out_dir), mirror=cfg.mirror)


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__ + "\nItems:\n" + "\n".join(f"  {k}: {v.description}" for k, v in DOWNLOADS.items()))
