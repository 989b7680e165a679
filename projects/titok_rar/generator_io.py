"""Save and load trained or released generators.

    folder = save_generator("runs/rar/final", "rar", model_cfg, {"generator": state_dict}, cfg)
    g = load_generator("runs/rar")                  # a run dir, its final/ folder, ...
    g = load_generator("downloads/rar_b.bin", kind="rar", model_cfg=rar_config("rar_b"))   # ... or a released file
    g.kind, g.model, g.model_cfg, g.text_encoder (MaskGen)

A generator folder holds generator.yaml ({generator: maskgit|rar|maskgen, model: {...}, text_encoder: {...},
step}) and generator.safetensors with the released checkpoints' key names (so a released .bin loads with the same
code, strictly), plus text_encoder.safetensors for MaskGen's toy text encoder.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch import nn

from projects.titok_rar.generator_common import load_state_dict_file, load_strict
from shared.io import atomic_dir


@dataclasses.dataclass
class LoadedGenerator:
    kind: str
    model: nn.Module
    model_cfg: DictConfig
    text_encoder: nn.Module | None = None
    source: str = ""


def build(kind: str, model_cfg) -> nn.Module:
    if kind == "maskgit":
        from projects.titok_rar.maskgit import build_maskgit
        return build_maskgit(model_cfg)
    if kind == "rar":
        from projects.titok_rar.rar import RAR
        return RAR(model_cfg)
    if kind == "maskgen":
        from projects.titok_rar.maskgen import MaskGen
        return MaskGen(model_cfg)
    raise ValueError(f"generator kind {kind!r}; expected maskgit, rar or maskgen")


def save_generator(folder: str | Path, kind: str, model_cfg: DictConfig, weights: dict[str, dict], cfg: Any = None,
                   text_encoder: dict | None = None, step: int = 0) -> Path:
    meta = {"generator": kind, "model": OmegaConf.to_container(model_cfg.model, resolve=True),
            "text_encoder": text_encoder, "step": int(step),
            "trained_from": str(cfg.dataset.params.pretokenization) if cfg is not None else ""}
    with atomic_dir(folder) as tmp:
        (tmp / "generator.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(meta)))
        for name, sd in weights.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(tmp / f"{name}.safetensors"),
                      metadata={"step": str(step)})
    return Path(folder)


def _folder(path: Path) -> Path | None:
    for cand in (path, path / "final"):
        if (cand / "generator.yaml").is_file():
            return cand
    return None


def load_generator(path: str | Path, kind: str | None = None, model_cfg: Any = None,
                   device: str | torch.device = "cpu", text_encoder: dict | None = None) -> LoadedGenerator:
    """A generator folder (or run dir), or a weights file with `kind` and `model_cfg` saying what it is."""
    path = Path(path)
    folder = _folder(path) if path.is_dir() else None
    if folder is not None:
        meta = OmegaConf.load(folder / "generator.yaml")
        kind = str(meta.generator)
        model_cfg = OmegaConf.create({"model": meta.model})
        weights = folder / "generator.safetensors"
        text_encoder = OmegaConf.to_container(meta.text_encoder) if meta.get("text_encoder") else text_encoder
    elif path.is_file():
        if kind is None or model_cfg is None:
            raise ValueError(f"{path}: a bare weights file; say which generator it is (generator=, model.* config)")
        weights = path
    else:
        raise FileNotFoundError(f"{path}: neither a generator folder (generator.yaml) nor a weights file")
    model = build(kind, model_cfg)
    load_strict(model, load_state_dict_file(weights), str(weights))
    text = None
    if kind == "maskgen":
        from projects.titok_rar.maskgen import build_text_encoder

        if not text_encoder:
            raise ValueError(f"{path}: MaskGen needs its text encoder (model.text_encoder.*)")
        text = build_text_encoder(text_encoder)
        if text_encoder.get("kind") == "toy":
            te = (folder / "text_encoder.safetensors") if folder is not None else None
            if te is None or not te.is_file():
                raise FileNotFoundError(f"{path}: the toy text encoder's weights (text_encoder.safetensors) are missing")
            load_strict(text, load_state_dict_file(te), str(te))
        text = text.to(device).eval()
    return LoadedGenerator(kind, model.to(device).eval(), model_cfg, text, str(weights))


def load_weights_into(step_obj: Any, path: str | Path) -> None:
    """experiment.init_weight: start training from a generator's weights (same architecture)."""
    path = Path(path)
    folder = _folder(path) if path.is_dir() else None
    weights = folder / "generator.safetensors" if folder is not None else path
    target = step_obj.model.maskgen if step_obj.kind == "maskgen" else step_obj.model
    load_strict(target, load_state_dict_file(weights), f"experiment.init_weight={weights}")
