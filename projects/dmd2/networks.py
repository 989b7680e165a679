"""The trained modules besides the generator: the fake denoiser with its GAN classification head (one module,
one optimizer, one DDP/FSDP unit), the LoRA generator, and weight export.

    FakeScore(unet, head).forward(...)   the whole guidance-side loss in one forward (DDP wants one per backward)
    GANHead(channels, size, layout=)     strided convs from the bottleneck down to one realism logit per sample
    load_published_guidance(fake, sd)    a DMD2 training checkpoint's fake denoiser + GAN head (cls_pred_branch)
    LORA_TARGETS                         the generator's LoRA modules (shared.train.lora.add_lora)
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


GAN_HEAD_LAYOUTS = ("published", "toy")


class GANHead(nn.Module):
    """Bottleneck (C, S, S) -> one realism logit per sample.

    published: DMD2's `cls_pred_branch` (main/sd_guidance.py, main/edm/edm_guidance.py): 4x4 stride-2 convs with
        GroupNorm(32)+SiLU halve S down to 4, a 4x4 stride-4 conv (+GroupNorm+SiLU) takes it to 1x1, a 1x1 conv
        gives the logit. Module indices match, so a published checkpoint's `cls_pred_branch.N.*` is `net.N.*` here
        (`load_published_guidance`). SD1.5 / ImageNet-64: 8x8 -> 4x4 -> 1x1; SDXL: 32 -> 16 -> 8 -> 4 -> 1.
    toy: the same stride-2 convs down to 2 (or 3), then the 1x1 conv to a logit map that is averaged. It never
        goes to 1x1: at toy widths GroupNorm(gcd(32, width)) has one channel per group, which normalises a 1x1 map
        to 0, and every sample would get the same logit (the GAN term silently a constant).
    """

    def __init__(self, channels: int, size: int, width: int = 0, layout: str = "published"):
        super().__init__()
        if layout not in GAN_HEAD_LAYOUTS:
            raise ValueError(f"unknown GAN head layout {layout!r}; use one of {', '.join(GAN_HEAD_LAYOUTS)}")
        width = width or channels
        layers: list[nn.Module] = []
        c, s = channels, size
        if layout == "published":
            if size < 4 or size & (size - 1) or width % 32:
                raise ValueError(f"the published GAN head needs a power-of-two bottleneck of at least 4x4 and a "
                                 f"width divisible by 32 (GroupNorm(32)); got {size}x{size}, width {width}: use "
                                 f"gan_head_layout=toy for small models")
            while s > 4:
                layers += [nn.Conv2d(c, width, 4, stride=2, padding=1), nn.GroupNorm(32, width), nn.SiLU()]
                c, s = width, s // 2
            layers += [nn.Conv2d(c, width, 4, stride=4, padding=0), nn.GroupNorm(32, width), nn.SiLU()]
            c = width
        else:
            while s >= 4:
                layers += [nn.Conv2d(c, width, 4, stride=2, padding=1), nn.GroupNorm(math.gcd(32, width), width),
                           nn.SiLU()]
                c, s = width, s // 2
        layers.append(nn.Conv2d(c, 1, 1))
        self.layout = layout
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # global mean (a no-op on the published 1x1 output): a bottleneck larger than at training time (another
        # resolution) still gives one logit
        return self.net(h.float()).mean(dim=(2, 3)).squeeze(1)


def load_published_guidance(fake: "FakeScore", state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load a DMD2 training checkpoint's guidance model (pytorch_model_1.bin: `fake_unet.*`, `cls_pred_branch.*`,
    and the frozen `real_unet.*`, which is the teacher and is skipped) into `fake`. The fake denoiser must load
    strictly; the head loads when the file has one (a checkpoint from a run without the GAN term has none, and
    DMD2's own resume then starts the head fresh, as here). Returns the head keys that were missing."""
    unet = {k[len("fake_unet."):]: v for k, v in state_dict.items() if k.startswith("fake_unet.")}
    head = {"net." + k[len("cls_pred_branch."):]: v for k, v in state_dict.items() if k.startswith("cls_pred_branch.")}
    if not unet:
        raise KeyError("not a DMD2 guidance checkpoint: no fake_unet.* keys (expected pytorch_model_1.bin)")
    fake.unet.load_state_dict(unet, strict=True)
    if fake.head is None:
        return []
    if not head:
        return sorted(fake.head.state_dict())
    fake.head.load_state_dict(head, strict=True)
    return []


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


def has_lora(net: nn.Module) -> bool:
    return any("lora_" in n for n, _ in net.named_parameters())


def export_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """Weights under the base model's key names (diffusers / EDM), with any LoRA adapter merged into them, so
    sample.py and the released-checkpoint loaders read one format."""
    # clone: on CPU `.cpu()` returns the parameter itself, so weights exported inside `ema.swap(...)` would
    # silently become the live weights again when the swap restores them
    if not has_lora(net):
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
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
