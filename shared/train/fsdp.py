"""FSDP presets for the cluster: `fsdp_plugin("full_shard", wrap="sdxl")` gives an accelerate plugin.

Every field the plugin would otherwise read from FSDP_* environment variables is set explicitly, so a preset means
the same thing on every node. Checkpoints gather full (unsharded) weights and optimizer state on rank 0
(`FULL_STATE_DICT`), so a run can resume on a different number of GPUs or without FSDP.
"""
from __future__ import annotations

from typing import Any, Sequence

from accelerate.utils import FullyShardedDataParallelPlugin

# Transformer/resnet block classes to wrap as FSDP units, per model family (diffusers 0.42 class names).
WRAP_CLASSES: dict[str, list[str]] = {
    "sd": ["BasicTransformerBlock", "ResnetBlock2D"],
    "sdxl": ["BasicTransformerBlock", "ResnetBlock2D"],
    "flux": ["FluxTransformerBlock", "FluxSingleTransformerBlock"],
    "flux2": ["Flux2TransformerBlock", "Flux2SingleTransformerBlock"],
    "clip_text": ["CLIPEncoderLayer"],
    "t5": ["T5Block"],
}

_COMMON: dict[str, Any] = {
    "fsdp_version": 2,
    "state_dict_type": "FULL_STATE_DICT",
    "activation_checkpointing": False,
    "cpu_offload": False,
    "cpu_ram_efficient_loading": False,
    "ignored_modules": None,
}

FSDP_PRESETS: dict[str, dict[str, Any]] = {
    # Parameters, gradients and optimizer state all sharded; params re-gathered for backward (ZeRO-3).
    "full_shard": {"reshard_after_forward": True},
    # Params kept gathered between forward and backward: faster, more memory (ZeRO-2).
    "shard_grad_op": {"reshard_after_forward": False},
    # ZeRO-3 with activation checkpointing, for the largest models (FLUX) on 80 GB cards.
    "full_shard_ckpt": {"reshard_after_forward": True, "activation_checkpointing": True},
    # ZeRO-3 with parameters and optimizer state offloaded to CPU memory: slow, but fits anything.
    "offload": {"reshard_after_forward": True, "cpu_offload": True},
}


def fsdp_plugin_kwargs(preset: str = "full_shard", *, wrap: str | Sequence[str] = (), min_num_params: int = 0,
                       mixed_precision: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments of `FullyShardedDataParallelPlugin` for `preset`.

    `wrap`: a family in WRAP_CLASSES or a list of class names to wrap (transformer-based wrapping); else
    `min_num_params` > 0 gives size-based wrapping; else the whole model is one unit. `mixed_precision`: "bf16",
    "fp16" or None (then the Accelerator's autocast alone decides). `overrides` replace any plugin field."""
    if preset not in FSDP_PRESETS:
        raise ValueError(f"unknown FSDP preset {preset!r}; known: {', '.join(FSDP_PRESETS)}")
    kwargs = {**_COMMON, **FSDP_PRESETS[preset]}
    classes = WRAP_CLASSES.get(wrap, [wrap]) if isinstance(wrap, str) and wrap else list(wrap)
    if isinstance(wrap, str) and wrap and wrap not in WRAP_CLASSES and not wrap[:1].isupper():
        raise ValueError(f"unknown wrap family {wrap!r}; known: {', '.join(WRAP_CLASSES)} (or pass class names)")
    if classes:
        kwargs.update(auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=classes)
    elif min_num_params > 0:
        kwargs.update(auto_wrap_policy="size_based_wrap", min_num_params=min_num_params)
    else:
        kwargs.update(auto_wrap_policy="no_wrap")
    if mixed_precision is not None:
        kwargs["mixed_precision_policy"] = mixed_precision
    kwargs.update(overrides)
    return kwargs


def fsdp_plugin(preset: str = "full_shard", **kwargs: Any) -> FullyShardedDataParallelPlugin:
    """An accelerate FSDP plugin for `preset` (see `fsdp_plugin_kwargs`); pass it to `Accelerator(fsdp_plugin=...)`,
    or set `fsdp=<preset>` in a TrainConfig and the Trainer does."""
    return FullyShardedDataParallelPlugin(**fsdp_plugin_kwargs(preset, **kwargs))
