"""Exponential moving average of a model's parameters, with decay warm-up; saved with the checkpoints.

Only parameters are averaged (buffers such as BatchNorm statistics are taken from the live model when the EMA
weights are copied in). The shadow copy is kept in float32 whatever the training dtype, so small updates to bf16
weights are not lost.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

WARMUPS = ("none", "linear", "power")


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: str = "power", inv_gamma: float = 1.0,
                 power: float = 2 / 3, update_every: int = 1, trainable_only: bool = True):
        """`warmup`: "none" (always `decay`), "linear" (min(decay, (1+n)/(10+n))), or "power"
        (min(decay, 1 - (1 + n/inv_gamma)^-power), the diffusion-model default), with n = number of updates.
        `trainable_only`: average only parameters that require grad (frozen ones never change)."""
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if warmup not in WARMUPS:
            raise ValueError(f"unknown EMA warmup {warmup!r}; choose one of {', '.join(WARMUPS)}")
        self.decay, self.warmup, self.inv_gamma, self.power = decay, warmup, inv_gamma, power
        self.update_every = max(1, update_every)
        self.num_updates = 0
        self._calls = 0
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad or not trainable_only]
        self.names = [n for n, _ in named]
        self.shadow = [p.detach().float().clone() for _, p in named]

    def current_decay(self) -> float:
        n = self.num_updates
        if self.warmup == "linear":
            return min(self.decay, (1 + n) / (10 + n))
        if self.warmup == "power":
            return min(self.decay, max(0.0, 1.0 - (1.0 + n / self.inv_gamma) ** -self.power))
        return self.decay

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        try:
            return [params[n] for n in self.names]
        except KeyError as e:
            raise KeyError(f"EMA tracks parameter {e} that the model does not have") from None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's current parameters (call after each optimizer step)."""
        self._calls += 1
        if self._calls % self.update_every:
            return
        weight = 1.0 - self.current_decay()
        params = [p.detach() for p in self._params(model)]
        same = [i for i, p in enumerate(params) if p.dtype == torch.float32]
        if same:  # one fused kernel for the common all-fp32 case
            torch._foreach_lerp_([self.shadow[i] for i in same], [params[i] for i in same], weight)
        for i, p in enumerate(params):
            if p.dtype != torch.float32:
                self.shadow[i].lerp_(p.float(), weight)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow, self._params(model)):
            p.copy_(s.to(p.dtype))

    @contextlib.contextmanager
    def swap(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into `model` (e.g. to evaluate or sample), then put the live ones back."""
        backup = [p.detach().clone() for p in self._params(model)]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for b, p in zip(backup, self._params(model)):
                    p.copy_(b)

    # Tensors go to a safetensors file, counters to the weights-only state; see Trainer.save.
    def tensors(self) -> dict[str, torch.Tensor]:
        """Full (unsharded) averages by parameter name. Under FSDP2 the shadows are sharded DTensors like the
        parameters they follow, and gathering them is collective: call on every process."""
        return {n: s.full_tensor() if hasattr(s, "full_tensor") else s for n, s in zip(self.names, self.shadow)}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise KeyError(f"EMA checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
        with torch.no_grad():
            for n, s in zip(self.names, self.shadow):
                src = tensors[n].to(device=s.device, dtype=s.dtype)
                if hasattr(s, "device_mesh"):  # a DTensor shadow keeps only this process's shard
                    from torch.distributed.tensor import distribute_tensor
                    src = distribute_tensor(src, s.device_mesh, s.placements)
                s.copy_(src)

    def state_dict(self) -> dict:
        return {"num_updates": self.num_updates, "calls": self._calls, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
        self._calls = int(state["calls"])
