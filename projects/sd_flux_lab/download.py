"""Download a paper-scale base pipeline (diffusers format) from the Hugging Face hub into a local folder.

    python projects/sd_flux_lab/download.py arch=sd15 out_dir=downloads/sd15
    python projects/sd_flux_lab/download.py arch=sdxl out_dir=downloads/sdxl_base

Only the diffusers folders are fetched (no original-format single files, no .bin duplicates of .safetensors);
the result is checked to be a complete pipeline of `arch` that loads offline, and every file's SHA-256 is
recorded in download.json (shared.download). Needs network access and, for gated repositories, a token in the
environment (HF_TOKEN). Everything else in the lab reads these folders offline (`local_files_only=True`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from projects.sd_flux_lab import models
from shared.config import cli, resolve, save_resolved
from shared.download import Download, fetch

PIPELINE_FILES = ("model_index.json", "*/config.json", "*/*.txt", "*/*.json", "*/*.safetensors")
SKIPPED_FILES = ("*.ckpt", "*.bin", "*/*.onnx*", "*.fp16.safetensors")


@dataclass
class Config:
    arch: str = "sd15"
    repo: str = ""  # '' = models.HUB_REPOS[arch]
    revision: str = "main"
    out_dir: str = "downloads/sd15"
    scale: str = "paper"


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    repo = cfg.repo or models.HUB_REPOS[cfg.arch]
    fetch(Download(f"{repo}@{cfg.revision} ({cfg.arch} pipeline)", repo=repo, revision=cfg.revision,
                   allow=PIPELINE_FILES, ignore=SKIPPED_FILES), cfg.out_dir)
    arch = models.arch_of(cfg.out_dir)
    if arch != cfg.arch:
        raise ValueError(f"{repo} is a {arch} pipeline, not {cfg.arch}")
    models.load_pipeline(cfg.out_dir)
    save_resolved(cfg, Path(cfg.out_dir) / ".download")
    print(f"{repo}@{cfg.revision} -> {cfg.out_dir}")
    return Path(cfg.out_dir)


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
