"""LoRA fine-tuning of a diffusers model (UNet, transformer) through diffusers' peft integration.

    from shared.train.lora import add_lora
    params = add_lora(unet, rank=16, alpha=16, targets=["to_q", "to_k", "to_v", "to_out.0"])   # trainable params
    opt = torch.optim.AdamW(params, lr=1e-4)

The model is frozen and an adapter added on the named modules (matched by name suffix, peft's rule); only the
adapter trains. Used by projects/dmd2 (generator as a LoRA on the teacher) and projects/sd_flux_lab/train_flux.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from shared.config import ConfigError


def add_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0, *, targets: Sequence[str],
             init: bool | str = True) -> list[torch.nn.Parameter]:
    """Freeze `model`, attach a LoRA adapter (rank, alpha, dropout) on `targets`, return the trainable parameters.
    init: peft's `init_lora_weights` (True: B = 0, the adapted model starts equal to the base; "gaussian").
    Targets without a dot that name no module are dropped (one target list fits several architectures); none
    left, or nothing trainable, is a ConfigError."""
    from peft import LoraConfig

    model.requires_grad_(False)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    present = [t for t in targets if t.rsplit(".", 1)[-1] in names or "." in t]
    if not present:
        raise ConfigError(f"LoRA targets {list(targets)} match no module of {type(model).__name__}")
    model.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=present,
                                 init_lora_weights=init))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(f"LoRA targets {list(targets)} matched no module of {type(model).__name__}")
    return trainable
