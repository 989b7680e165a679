"""The trained modules besides the generator: the fake denoiser with its GAN classification head (one module,
one optimizer, one DDP/FSDP unit), the LoRA generator, and weight export.

    FakeScore(unet, head).forward(...)   the whole guidance-side loss in one forward (DDP wants one per backward)
    GANHead(channels, size)              strided convs from the bottleneck down to one realism logit per sample
    add_lora(unet, rank, alpha)          the generator as a LoRA adapter on a frozen teacher copy (peft)
    export_state_dict(net)               plain weights under the original key names (LoRA merged in)
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

# SDXL's LoRA generator in DMD2 adapts attention, feed-forward, resnet convs, resamplers and the time projection.
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]


class GANHead(nn.Module):
    """Bottleneck (C, S, S) -> logit: 4x4 stride-2 convs with GroupNorm+SiLU halve S down to 2 (or 3), then a 1x1
    conv to a logit map that is averaged. It never goes down to 1x1: GroupNorm of a 1x1 map with one channel per
    group normalises single values to 0, and every sample would get the same logit."""

    def __init__(self, channels: int, size: int, width: int = 0):
        super().__init__()
        width = width or channels
        layers: list[nn.Module] = []
        c, s = channels, size
        while s >= 4:
            layers += [nn.Conv2d(c, width, 4, stride=2, padding=1), nn.GroupNorm(math.gcd(32, width), width), nn.SiLU()]
            c, s = width, s // 2
        layers.append(nn.Conv2d(c, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # global mean: a bottleneck larger than at training time (another resolution) still gives one logit
        return self.net(h.float()).mean(dim=(2, 3)).squeeze(1)


class FakeScore(nn.Module):
    """The fake denoiser (initialised from the teacher) and, with the GAN term, the classification head on its
    bottleneck. forward() returns the guidance-side losses; the losses themselves live in losses.py."""

    def __init__(self, unet: nn.Module, head: GANHead | None = None):
        super().__init__()
        self.unet = unet
        self.head = head

    def forward(self, backbone, denoising_loss, gan_loss, x_fake, cond, x_real=None, cond_real=None):
        loss_fake, logs = denoising_loss(backbone, self.unet, x_fake, cond)
        losses = {"loss_fake": loss_fake}
        if gan_loss is not None:
            losses["loss_d"], gan_logs = gan_loss(backbone, self, x_fake, cond, x_real, cond_real)
            logs = {**logs, **gan_logs}
        return losses, logs


def add_lora(unet: nn.Module, rank: int, alpha: float, dropout: float = 0.0, targets=LORA_TARGETS) -> nn.Module:
    """Freeze `unet` and attach a LoRA adapter (diffusers' peft integration); only the adapter trains."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    names = {n.rsplit(".", 1)[-1] for n, _ in unet.named_modules()}
    present = [t for t in targets if t.rsplit(".", 1)[-1] in names or "." in t]
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=present,
                                init_lora_weights=True))
    return unet


def has_lora(net: nn.Module) -> bool:
    return any("lora_" in n for n, _ in net.named_parameters())


def export_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """Weights under the base model's key names (diffusers / EDM), with any LoRA adapter merged into them, so
    sample.py and the released-checkpoint loaders read one format."""
    if not has_lora(net):
        return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = copy.deepcopy(net)
    for m in merged.modules():
        if isinstance(m, BaseTunerLayer):
            m.merge()
    out = {}
    for k, v in merged.state_dict().items():
        if "lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v.detach().cpu().contiguous()
    return out
