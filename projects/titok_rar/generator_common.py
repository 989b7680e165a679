"""Pieces every token generator here shares: masking schedules, Gumbel noise, guidance schedules, per-sample RNG,
the masked-token loss, toy class ids, and loading/saving a generator folder.

    from projects.titok_rar.generator_common import masking_ratio, power_cosine, SampleRNG, MLMLoss
    rng = SampleRNG([100, 101, 102], device)      # one stream per sample: a shard re-run gives the same images
    noise = rng.uniform((K, V))                    # (3, K, V)

Token space shared by MaskGIT (ImageBert/UViTBert) and RAR, as in the released checkpoints:
    [0, C)            image codes (C = codebook size)
    C                 the mask token (MaskGIT; unused by RAR, kept for the embedding size)
    C+1 .. C+N        the N class tokens (class c -> C + 1 + c)
    C+1+N             the "no class" token used for classifier-free guidance
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# toy scale: one class per (digit, colour) pair of shared/toy, as shared/toy/train_diffusion.py numbers them
NUM_DIGIT_COLOURS = 8


def toy_class(digit: int, colour: int) -> int:
    return int(digit) * NUM_DIGIT_COLOURS + int(colour)


def toy_caption(label: int) -> str:
    """The digits caption a toy class stands for ("a red handwritten seven"), read by prompt accuracy."""
    from shared.toy.dataset import COLOUR_NAMES, caption

    return caption(int(label) // NUM_DIGIT_COLOURS, COLOUR_NAMES[int(label) % NUM_DIGIT_COLOURS])


# ---- masking ------------------------------------------------------------------------------------------------
MASK_SCHEDULES = ("arccos", "cosine", "linear", "square", "root")


def masking_ratio(progress, mode: str = "arccos"):
    """Fraction of tokens still masked at `progress` in [0, 1] (MaskGIT's gamma). Works on floats and tensors."""
    r = torch.as_tensor(progress, dtype=torch.float64 if not torch.is_tensor(progress) else None)
    if mode == "arccos":  # the TiTok/MaskGen choice: more steps spent at high mask ratios
        out = torch.acos(r) / (math.pi * 0.5)
    elif mode == "cosine":
        out = torch.cos(r * math.pi * 0.5)
    elif mode == "linear":
        out = 1 - r
    elif mode == "square":
        out = 1 - r ** 2
    elif mode == "root":
        out = 1 - r ** 0.5
    else:
        raise ValueError(f"mask schedule {mode!r}; expected one of {', '.join(MASK_SCHEDULES)}")
    return out if torch.is_tensor(progress) else float(out)


def mask_input_tokens(tokens: torch.Tensor, mask_token_id: int, mode: str = "arccos",
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time masking: per sample draw t ~ U(0,1), mask round(K * gamma(t)) (at least one) random positions.
    Returns (masked tokens, bool mask of the masked positions)."""
    b, k = tokens.shape
    t = torch.rand(b, device=tokens.device, generator=generator)
    ratio = masking_ratio(t, mode).clamp(1e-6, 1.0)
    n_masked = (k * ratio).round().clamp(min=1)
    perm = torch.rand(b, k, device=tokens.device, generator=generator).argsort(dim=-1)  # a random permutation
    masks = perm < n_masked[:, None]  # the positions holding the n smallest values: n random positions
    return torch.where(masks, torch.full_like(tokens, mask_token_id), tokens), masks


class MLMLoss(nn.Module):
    """Cross-entropy with label smoothing over all positions, the unmasked ones weighted down
    (losses.label_smoothing, losses.loss_weight_unmasked_token in configs/training/generator/maskgit.yaml)."""

    def __init__(self, label_smoothing: float = 0.1, loss_weight_unmasked_token: float = 0.1):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.unmasked_weight = loss_weight_unmasked_token

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor):
        loss = F.cross_entropy(logits.transpose(1, 2).float(), targets, label_smoothing=self.label_smoothing,
                               reduction="none")
        m = masks.to(loss.dtype)
        w = (1.0 - m) * self.unmasked_weight + m
        loss = (loss * w).sum() / (w.sum() + 1e-8)
        correct = ((logits.argmax(-1) == targets).to(loss.dtype) * m).sum(1) / (m.sum(1) + 1e-8)
        return loss, {"loss": loss.detach(), "correct_tokens": correct.mean().detach()}


# ---- guidance -------------------------------------------------------------------------------------------
def power_cosine(step: int, num_steps: int, guidance_scale: float, power: float, dtype=torch.float64) -> float:
    """(g - 1) * (1 - cos((step / N)^p * pi)) / 2 + 1: MDT's guidance schedule, used by RAR (per token) and
    MaskGIT's 'power-cosine' decay (per step). dtype float32 reproduces RAR's released sampler to the bit."""
    p = torch.tensor(power, dtype=dtype)
    s = (1 - torch.cos((torch.tensor(step / num_steps, dtype=dtype) ** p) * math.pi)) / 2
    return float((guidance_scale - 1) * s + 1)


# ---- per-sample randomness ---------------------------------------------------------------------------------
class SampleRNG:
    """One torch.Generator per sample, so the noise of sample i depends only on its seed, never on which other
    samples share its batch or shard. `None` seeds use the global RNG (training-time generation)."""

    def __init__(self, seeds: Sequence[int] | None, device: torch.device | str = "cpu", batch: int = 0):
        self.device = torch.device(device)
        self.gens = None if seeds is None else [torch.Generator(device=self.device).manual_seed(int(s))
                                                for s in seeds]
        self.batch = len(seeds) if seeds is not None else batch

    def uniform(self, shape: Sequence[int]) -> torch.Tensor:
        if self.gens is None:
            return torch.rand((self.batch, *shape), device=self.device)
        return torch.stack([torch.rand(tuple(shape), generator=g, device=self.device) for g in self.gens])

    def gumbel(self, shape: Sequence[int]) -> torch.Tensor:
        u = self.uniform(shape)
        return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))


def categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from `probs` (B, V) with uniforms `u` (B,): a multinomial draw whose randomness comes
    from the caller's per-sample streams."""
    cdf = probs.float().cumsum(-1)
    idx = torch.searchsorted(cdf, (u[:, None] * cdf[:, -1:]).contiguous())
    return idx.clamp(max=probs.shape[-1] - 1).squeeze(-1)


# ---- weights --------------------------------------------------------------------------------------------------
def load_state_dict_file(path: str | Path) -> dict:
    """A released .bin/.pt (weights-only torch.load) or a .safetensors file, as a state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def load_strict(model: nn.Module, sd: dict, source: str) -> nn.Module:
    """load_state_dict(strict) with an error that names the file and the first differing keys/shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in own
           if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(f"{source}: state dict does not match {type(model).__name__} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]}, shape {bad[:5]}; "
                         f"{len(missing)}/{len(unexpected)}/{len(bad)} in all)")
    model.load_state_dict(sd, strict=True)
    return model
