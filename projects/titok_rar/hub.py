"""`save_pretrained` / `from_pretrained` in the Hugging Face hub-mixin layout, offline, for every tokenizer here.

    model.save_pretrained("results/toy/titok/k16")        # -> config.json + model.safetensors
    TiTok.from_pretrained("downloads/titok_rar/tokenizer_titok_l32_imagenet")

A folder holds `config.json` (the model's config in the original's shape: TiTok's is the training config with a
`model.vq_model` section, as `PyTorchModelHubMixin` saves it for `TiTok(config)`) and `model.safetensors`; a
folder with `pytorch_model.bin` instead (older hub uploads) loads too, through `torch.load(weights_only=True)`.
We add `"_class_name"` so `load_tokenizer` knows which class to build; the original's config.json files lack it
and load as TiTok. Loading is strict: a missing, unexpected or wrongly shaped tensor is an error naming it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from shared.io import atomic_dir

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (weights only); unwraps {"state_dict"|"model": ...}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: cannot read as a torch state dict (weights_only=True): {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(sd).__name__}")
    return sd


def load_strict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """`load_state_dict(strict=True)` with an error that lists what differs (names and shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def few(xs):
            return ", ".join(xs[:8]) + (f" ... (+{len(xs) - 8})" if len(xs) > 8 else "")
        parts = [f"missing {len(missing)}: {few(missing)}" if missing else "",
                 f"unexpected {len(unexpected)}: {few(unexpected)}" if unexpected else "",
                 f"shape mismatch {len(shapes)}: {few(shapes)}" if shapes else ""]
        raise ValueError(f"{source}: weights do not match the config ({'; '.join(p for p in parts if p)})")
    model.load_state_dict(dict(sd), strict=True)


class HubMixin:
    """Subclasses define `class_name`, `config_dict()` and classmethod `from_config_dict(d)`."""
    class_name = "?"

    def config_dict(self) -> dict:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @classmethod
    def from_config_dict(cls, d: Mapping[str, Any]):  # pragma: no cover
        raise NotImplementedError

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        cfg = {"_class_name": self.class_name, **self.config_dict()}
        # contiguous copies: safetensors refuses views and shared storage
        sd = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        with atomic_dir(folder) as tmp:
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            save_file(sd, str(tmp / "model.safetensors"))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, **_ignored):
        folder = Path(folder)
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{folder}: no config.json (a save_pretrained folder has config.json + "
                                    "model.safetensors)")
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path}: not valid JSON ({e})") from None
        cfg.pop("_class_name", None)
        try:
            model = cls.from_config_dict(cfg)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{cfg_path}: {e}") from None
        for name in WEIGHT_FILES:
            if (folder / name).is_file():
                load_strict(model, read_state_dict(folder / name), str(folder / name))
                return model.eval()
        raise FileNotFoundError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES)})")
