"""Paper-scale downloads for DMD2 (a light step: runs on the login node, needs the internet there).

    python projects/dmd2/download.py item=sdxl_base out_dir=downloads/sdxl_base

Items (DOWNLOADS): Hugging Face repos/files and URLs. A published SHA-256 is checked where one exists; otherwise
the expected size is recorded and checked (size_bytes, 0 = not known: the file is accepted and its SHA-256 written
to download.json so later runs can pin it). Nothing here runs at toy or tiny scale.
"""
from __future__ import annotations

import hashlib
import shutil
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import cli, resolve
from shared.io import write_json


@dataclass(frozen=True)
class Download:
    description: str
    repo: str = ""  # Hugging Face repo id
    files: tuple[str, ...] = ()  # files of the repo ('' = whole snapshot)
    allow: tuple[str, ...] = ()  # snapshot allow-patterns
    url: str = ""
    sha256: str = ""
    size_bytes: int = 0


DOWNLOADS: dict[str, Download] = {
    "sdxl_base": Download("SDXL base 1.0 pipeline (fp32 weights, diffusers layout)",
                          repo="stabilityai/stable-diffusion-xl-base-1.0",
                          allow=("model_index.json", "*/config.json", "*/*.json", "*/*.txt",
                                 "*/diffusion_pytorch_model.safetensors", "*/model.safetensors")),
    "sd15_base": Download("Stable Diffusion v1.5 pipeline (diffusers layout)",
                          repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
                          allow=("model_index.json", "*/config.json", "*/*.json", "*/*.txt",
                                 "*/diffusion_pytorch_model.safetensors", "*/model.safetensors")),
    "dmd2_sdxl_4step": Download("DMD2's released SDXL 4-step UNet (diffusers UNet state dict, fp16)",
                                repo="tianweiy/DMD2", files=("dmd2_sdxl_4step_unet_fp16.bin",)),
    "dmd2_sdxl_1step": Download("DMD2's released SDXL 1-step UNet (conditioning timestep 399)",
                                repo="tianweiy/DMD2", files=("dmd2_sdxl_1step_unet_fp16.bin",)),
    "inception": Download("Inception-v3 FID weights as clean-fid uses them (TorchScript)",
                          url="https://github.com/GaParmar/clean-fid/releases/download/v0.1.10/inception-2015-12-05.pt"),
    "clip_vit_g14": Download("OpenCLIP ViT-g-14 (LAION-2B) in transformers format, for CLIP score",
                             repo="laion/CLIP-ViT-g-14-laion2B-s12B-b42K",
                             allow=("*.json", "*.txt", "open_clip_config.json", "model.safetensors")),
    "imagenet64_edm": Download("EDM ImageNet-64 reference statistics for FID (EDM's fid-refs)",
                               url="https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/imagenet-64x64.npz"),
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Config:
    scale: str = "paper"
    item: str = "sdxl_base"
    out_dir: str = "downloads/sdxl_base"


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.item not in DOWNLOADS:
        raise ValueError(f"item={cfg.item!r}; known: {', '.join(DOWNLOADS)}")
    d, out = DOWNLOADS[cfg.item], Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fetched: list[Path] = []
    if d.url:
        target = out / d.url.rsplit("/", 1)[-1]
        with urllib.request.urlopen(d.url, timeout=60) as r, open(target, "wb") as f:
            shutil.copyfileobj(r, f)
        fetched.append(target)
    elif d.files:
        from huggingface_hub import hf_hub_download

        fetched += [Path(hf_hub_download(d.repo, f, local_dir=str(out))) for f in d.files]
    else:
        from huggingface_hub import snapshot_download

        snapshot_download(d.repo, local_dir=str(out), allow_patterns=list(d.allow) or None)
        fetched += [p for p in out.rglob("*") if p.is_file()]
    record = {}
    for p in fetched:
        digest, size = _sha256(p), p.stat().st_size
        if d.sha256 and len(fetched) == 1 and digest != d.sha256:
            raise ValueError(f"{p}: sha256 {digest} != published {d.sha256}")
        if d.size_bytes and len(fetched) == 1 and size != d.size_bytes:
            raise ValueError(f"{p}: {size} bytes, expected {d.size_bytes}")
        record[str(p.relative_to(out))] = {"sha256": digest, "bytes": size}
    write_json(out / "download.json", {"item": cfg.item, "source": d.url or d.repo, "files": record,
                                       "published_sha256": d.sha256 or None})
    print(f"{cfg.item}: {len(record)} files in {out}")
    return out


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
