"""Tiny random SD1.5- / SDXL-shaped pipelines and a tiny EDM teacher, built from configs (no download): what the
tests distil. The toy and paper teachers come from sd_flux_lab's rules and the download rules instead.

    pipe = tiny_pipeline("sdxl"); pipe.save_pretrained(dir)       # 32x32 images
"""
from __future__ import annotations

from pathlib import Path

import torch


def tiny_pipeline(arch: str = "sd15", seed: int = 0):
    """sd_flux_lab's tiny preset: the same pipelines its tests fine-tune (32 px images, random weights)."""
    from projects.sd_flux_lab.models import build_pipeline

    return build_pipeline(arch, "tiny", seed=seed)


def save_tiny_edm(out_dir: str | Path, config: str = "digits", seed: int = 0) -> Path:
    """A random EDM teacher folder (edm.json + model.safetensors), as train_teacher.py writes one."""
    from safetensors.torch import save_file

    from projects.dmd2.edm import EDM_CONFIGS, build_edm
    from shared.io import write_json

    torch.manual_seed(seed)
    net = build_edm(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "model.safetensors"))
    write_json(out / "edm.json", dict(EDM_CONFIGS[config]))
    return out
