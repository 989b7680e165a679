"""What DMD2's own command lines (github.com/tianweiy/DMD2) mean here: shared pieces of the entry points named after
them (imagenet_example.py, text_to_image_sdxl.py, test_folder.py, download_hf_checkpoint.py,
create_sdxl_fsdp_configs.py; table in README.md, "Original commands").
"""
from __future__ import annotations

from pathlib import Path

from shared.config import ConfigError

# the original's --model_id (a hub id) -> the folder our download rules put that pipeline in
HUB_FOLDERS = {"stabilityai/stable-diffusion-xl-base-1.0": "downloads/sdxl_base",
               "runwayml/stable-diffusion-v1-5": "downloads/sd15",
               "stable-diffusion-v1-5/stable-diffusion-v1-5": "downloads/sd15"}

PRECISIONS = {"float32": None, "float16": "float16", "bfloat16": "bfloat16"}


def model_folder(model_id: str) -> str:
    """A local pipeline folder for the original's --model_id (hub id or folder); nothing is downloaded here."""
    if not model_id or Path(model_id).is_dir():
        return model_id
    if model_id in HUB_FOLDERS:
        return HUB_FOLDERS[model_id]
    raise ConfigError(f"--model_id {model_id}: not a local folder; steps read models offline: download it first "
                      f"(known hub ids: {', '.join(HUB_FOLDERS)} -> the sd_flux_lab download rules' folders)")


def autocast(precision: str, device):
    """The original's --precision as an autocast context (the frozen VAE and text encoders stay float32, as the
    original keeps its VAE)."""
    import contextlib

    import torch

    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype))


def check_same(name: str, given: int, actual: int, what: str) -> None:
    """An original option that restates a property of the model: refused when it disagrees (never ignored)."""
    if given and given != actual:
        raise ConfigError(f"--{name} {given}: the {what} is {actual} here (it comes from the model; drop the option "
                          f"or use a model with {given})")
