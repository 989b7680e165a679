"""EDM's ADM network (DhariwalUNet inside EDMPrecond), written to load the released EDM / DMD2 ImageNet-64 weights.

Module and parameter names follow NVlabs/edm `training/networks.py` exactly (`model.enc.64x64_block0.norm0.weight`,
`model.map_label.weight`, `...down.conv0.resample_filter`, ...), so a state dict saved from their `EDMPrecond`
loads here with strict=True. Only the ADM pieces are implemented (DDPM++/NCSN++ and the VP/VE/iDDPM
preconditionings are not needed by DMD2).

    net = EDMPrecond(**EDM_CONFIGS["imagenet64"])       # ~296M parameters, label_dim 1000
    d = net(x_noisy, sigma, class_labels_onehot)        # the denoised image D(x; sigma)
    h = net(x_noisy, sigma, labels, return_bottleneck=True)   # encoder output (DMD2's GAN head reads it)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Network shapes by name. "imagenet64" is EDM's edm-imagenet-64x64-cond-adm (the teacher of DMD2's ImageNet run).
EDM_CONFIGS: dict[str, dict[str, Any]] = {
    "imagenet64": dict(img_resolution=64, img_channels=3, label_dim=1000, model_channels=192,
                       channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[32, 16, 8], dropout=0.0),
    # toy digits: 32x32, 80 classes (digit x colour); small enough to train in minutes on 2 cores (tiny runs use it too)
    "digits": dict(img_resolution=32, img_channels=3, label_dim=80, model_channels=16, channel_mult=[1, 2, 2],
                   num_blocks=1, attn_resolutions=[8], dropout=0.0, channels_per_head=16),
}


def _init(shape, mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    raise ValueError(f"unknown init mode {mode!r}")


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_mode: str = "kaiming_normal",
                 init_weight: float = 1.0, init_bias: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(_init([out_features, in_features], init_mode, in_features, out_features)
                                   * init_weight)
        self.bias = nn.Parameter(_init([out_features], init_mode, in_features, out_features) * init_bias) \
            if bias else None

    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class Conv2d(nn.Module):
    """Conv with optional 2x up/down resampling by a separable FIR filter (a buffer, as in EDM: it is in the
    state dict). kernel=0 means resampling only, no weights."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False,
                 down: bool = False, resample_filter=(1, 1), init_mode: str = "kaiming_normal",
                 init_weight: float = 1.0, init_bias: float = 0.0):
        super().__init__()
        assert not (up and down)
        self.in_channels, self.out_channels, self.up, self.down = in_channels, out_channels, up, down
        fan_in, fan_out = in_channels * kernel * kernel, out_channels * kernel * kernel
        self.weight = nn.Parameter(_init([out_channels, in_channels, kernel, kernel], init_mode, fan_in, fan_out)
                                   * init_weight) if kernel else None
        self.bias = nn.Parameter(_init([out_channels], init_mode, fan_in, fan_out) * init_bias) \
            if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum().square()
        self.register_buffer("resample_filter", f if (up or down) else None)

    def forward(self, x):
        w = None if self.weight is None else self.weight.to(x.dtype)
        if self.resample_filter is not None:
            f = self.resample_filter.to(x.dtype)
            pad = (f.shape[-1] - 1) // 2
            if self.up:
                x = F.conv_transpose2d(x, (f * 4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels,
                                       stride=2, padding=pad)
            else:
                x = F.conv2d(x, f.tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2, padding=pad)
        if w is not None:
            x = F.conv2d(x, w, padding=w.shape[-1] // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


class GroupNorm(nn.Module):
    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
    """ADM residual block: GN-SiLU-conv, adaptive scale/shift from the embedding, GN-SiLU-dropout-conv, skip;
    optional self-attention with 64 channels per head."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False, down: bool = False,
                 attention: bool = False, channels_per_head: int = 64, dropout: float = 0.0, eps: float = 1e-5,
                 init: dict | None = None, init_zero: dict | None = None):
        super().__init__()
        init, init_zero = init or {}, init_zero or {"init_weight": 0}
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout = dropout
        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, **init)
        self.affine = Linear(emb_channels, out_channels * 2, **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3, **init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            # a 1x1 projection only when channels change; a pure resampling otherwise (weightless, as in ADM)
            self.skip = Conv2d(in_channels, out_channels, 1 if out_channels != in_channels else 0, up=up, down=down,
                               **init)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1, **init)
            self.proj = Conv2d(out_channels, out_channels, 1, **init_zero)

    def forward(self, x, emb):
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].to(x.dtype).chunk(2, dim=1)
        x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = x + (self.skip(orig) if self.skip is not None else orig)
        if self.num_heads:
            n, c, h, w = x.shape
            # channel layout of qkv is (head, channel-in-head, q/k/v): the released weights depend on it
            q, k, v = self.qkv(self.norm2(x)).reshape(n * self.num_heads, c // self.num_heads, 3, h * w).unbind(2)
            a = F.scaled_dot_product_attention(q.transpose(1, 2).float(), k.transpose(1, 2).float(),
                                               v.transpose(1, 2).float()).to(x.dtype)
            x = self.proj(a.transpose(1, 2).reshape(n, c, h, w)) + x
        return x


class PositionalEmbedding(nn.Module):
    def __init__(self, num_channels: int, max_positions: int = 10000):
        super().__init__()
        self.num_channels, self.max_positions = num_channels, max_positions

    def forward(self, x):
        half = self.num_channels // 2
        freqs = (1 / self.max_positions) ** (torch.arange(half, dtype=torch.float32, device=x.device) / half)
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class DhariwalUNet(nn.Module):
    """The ADM U-Net (Dhariwal & Nichol 2021) as EDM re-implemented it."""

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 192, channel_mult=(1, 2, 3, 4), channel_mult_emb: int = 4,
                 num_blocks: int = 3, attn_resolutions=(32, 16, 8), dropout: float = 0.10, label_dropout: float = 0.0,
                 channels_per_head: int = 64):
        super().__init__()
        self.label_dropout = label_dropout
        emb = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        # channels_per_head is 64 in ADM; the small configs lower it so their attention blocks exist at all
        block = dict(emb_channels=emb, channels_per_head=channels_per_head, dropout=dropout, init=init, init_zero=init_zero)

        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb, **init)
        self.map_layer1 = Linear(emb, emb, **init)
        self.map_label = Linear(label_dim, emb, bias=False, init_mode="kaiming_normal",
                                init_weight=math.sqrt(label_dim)) if label_dim else None

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for i in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{i}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        skips = [b.out_channels for b in self.enc.values()]
        self.bottleneck_channels = cout
        self.bottleneck_resolution = img_resolution >> (len(channel_mult) - 1)

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for i in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{i}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, 3, **init_zero)

    def embed(self, noise_labels, class_labels, augment_labels=None):
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            labels = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([labels.shape[0], 1], device=labels.device) >= self.label_dropout
                labels = labels * keep.to(labels.dtype)
            emb = emb + self.map_label(labels)
        return F.silu(emb)

    def forward(self, x, noise_labels, class_labels, augment_labels=None, return_bottleneck: bool = False):
        emb = self.embed(noise_labels, class_labels, augment_labels)
        skips = []
        for b in self.enc.values():
            x = b(x, emb) if isinstance(b, UNetBlock) else b(x)
            skips.append(x)
        if return_bottleneck:  # DMD2's GAN head reads the encoder output; the decoder is skipped
            return x
        for b in self.dec.values():
            if x.shape[1] != b.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = b(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


class EDMPrecond(nn.Module):
    """EDM preconditioning: D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), c_noise = ln(sigma)/4."""

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 sigma_min: float = 0.0, sigma_max: float = float("inf"), sigma_data: float = 0.5,
                 model_type: str = "DhariwalUNet", **model_kwargs):
        super().__init__()
        if model_type != "DhariwalUNet":
            raise ValueError(f"only the ADM network (DhariwalUNet) is implemented, not {model_type!r}")
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.use_fp16, self.sigma_min, self.sigma_max, self.sigma_data = use_fp16, sigma_min, sigma_max, sigma_data
        self.model = DhariwalUNet(img_resolution, img_channels, img_channels, label_dim=label_dim, **model_kwargs)

    def precondition(self, sigma):
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def forward(self, x, sigma, class_labels=None, return_bottleneck: bool = False, **model_kwargs):
        x = x.float()
        sigma = torch.as_tensor(sigma, device=x.device).float().reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)
        if self.label_dim == 0:
            class_labels = None
        elif class_labels is None:  # the unconditional model (what label dropout trained)
            class_labels = torch.zeros([x.shape[0], self.label_dim], device=x.device)
        else:
            class_labels = class_labels.float().reshape(-1, self.label_dim)
        dtype = torch.float16 if (self.use_fp16 and x.device.type == "cuda") else torch.float32
        c_skip, c_out, c_in, c_noise = self.precondition(sigma)
        out = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels, return_bottleneck=return_bottleneck,
                         **model_kwargs)
        if return_bottleneck:
            return out.float()
        return c_skip * x + c_out * out.float()


def build_edm(name_or_kwargs: str | dict, **overrides) -> EDMPrecond:
    kwargs = dict(EDM_CONFIGS[name_or_kwargs]) if isinstance(name_or_kwargs, str) else dict(name_or_kwargs)
    kwargs.update(overrides)
    return EDMPrecond(**kwargs)


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """n noise levels spaced as in EDM (rho=7), ASCENDING: index 0 is sigma_min, n-1 is sigma_max, so a larger
    index means more noise, as a DDPM timestep does."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return ((hi + ramp * (lo - hi)) ** rho).flip(0).float()


def load_state_dict_file(path: str | Path, strip_prefixes=("module.",)) -> dict[str, torch.Tensor]:
    """Weights from .safetensors, or from a .pt/.pth/.bin state dict (loaded with weights_only=True: a pickled
    module, such as EDM's network-snapshot .pkl, is refused; convert it to a state dict where you trust it)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "ema", "model"):  # common wrappers around the actual state dict
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: not a flat state dict of tensors")
    for p in strip_prefixes:
        if p and all(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items()}
    return sd


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["EDM_CONFIGS", "EDMPrecond", "DhariwalUNet", "UNetBlock", "build_edm", "karras_sigmas",
           "load_state_dict_file", "count_parameters"]
