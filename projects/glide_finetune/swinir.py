"""SwinIR (Liang et al. 2021, "SwinIR: Image Restoration Using Swin Transformer"), written here, with the state-dict
names and shapes of the released weights (JingyunLiang/SwinIR v0.0 release files), for upscaling GLIDE samples.

    net = build_swinir("classical_x4")                          # 001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth layout
    load_swinir(net, "downloads/glide/swinir_classical_x4/001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth")  # strict
    y = upscale_images(net, x)                                  # (B, 3, H, W) in [0, 1] -> (B, 3, 4H, 4W)

Presets (SWINIR_PRESETS, from upstream main_test_swinir.py's define_model and the release's file names):
classical_x{2,3,4,8} (SwinIR-M, trained on 64 px DF2K patches, window 8, pixel-shuffle reconstruction),
classical48_x{2,3,4,8} (the same trained on 48 px DIV2K patches: only the shifted-window masks' size differs),
lightweight_x{2,3,4} (embed 60, one-step pixel shuffle), real_x{2,4} (the BSRGAN-degradation GAN models,
nearest+conv reconstruction, weights under 'params_ema') and real_large_x4 (SwinIR-L, '3conv' residual convs).

What the released files hold, and so what this module registers (tests/data/swinir_state_dicts.json lists it):
conv_first; patch_embed.norm; per residual Swin transformer block (RSTB) i and Swin block j
layers.i.residual_group.blocks.j.{norm1, attn.relative_position_bias_table, attn.relative_position_index,
attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2} plus attn_mask for the shifted (odd) blocks, sized for the
training patch (img_size); layers.i.conv; norm; conv_after_body; then the reconstruction head. The input mean
(DIV2K's RGB mean) is a constant, not in the state dict.

Inputs are RGB in [0, 1]. Any size works: `upscale_images` pads to a multiple of the window by mirroring (as
upstream's test script does) and crops the output back; shifted-window masks for sizes other than img_size are
computed on the fly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

# DIV2K's RGB mean, subtracted before the network (upstream's rgb_mean for 3-channel models)
RGB_MEAN = (0.4488, 0.4371, 0.4040)
NUM_FEAT = 64  # width of the reconstruction head (upstream's num_feat)
UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")


@dataclass(frozen=True)
class SwinIRConfig:
    img_size: int = 64          # training patch size: fixes the size of the stored shifted-window masks
    in_chans: int = 3
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    upscale: int = 4
    upsampler: str = "pixelshuffle"
    resi_connection: str = "1conv"
    img_range: float = 1.0
    ape: bool = False           # absolute position embedding (no released SR model uses it)
    patch_norm: bool = True
    param_key: str = "params"   # where the release stores the weights in its .pth
    release_file: str = ""      # the release's file name (what the download rule fetches)
    description: str = ""

    def check(self) -> "SwinIRConfig":
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"SwinIR: depths {self.depths} and num_heads {self.num_heads} differ in length")
        if any(self.embed_dim % h for h in self.num_heads):
            raise ValueError(f"SwinIR: embed_dim={self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.upsampler not in UPSAMPLERS:
            raise ValueError(f"SwinIR: upsampler={self.upsampler!r}; expected one of {UPSAMPLERS}")
        if self.upsampler == "pixelshuffle" and not (self.upscale == 3 or _is_pow2(self.upscale)):
            raise ValueError(f"SwinIR: upscale={self.upscale}; pixel-shuffle reconstruction supports 2^n and 3")
        if self.upsampler == "nearest+conv" and self.upscale not in (2, 4):
            raise ValueError(f"SwinIR: upscale={self.upscale}; nearest+conv reconstruction supports 2 and 4")
        if self.resi_connection not in ("1conv", "3conv"):
            raise ValueError(f"SwinIR: resi_connection={self.resi_connection!r}; expected '1conv' or '3conv'")
        return self


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _presets() -> dict[str, SwinIRConfig]:
    out: dict[str, SwinIRConfig] = {}
    for s in (2, 3, 4, 8):  # 001 classical SR, SwinIR-M (main_test_swinir.py task classical_sr)
        out[f"classical_x{s}"] = SwinIRConfig(
            img_size=64, upscale=s, release_file=f"001_classicalSR_DF2K_s64w8_SwinIR-M_x{s}.pth",
            description=f"classical SR x{s}, SwinIR-M trained on DF2K 64 px patches")
        out[f"classical48_x{s}"] = SwinIRConfig(
            img_size=48, upscale=s, release_file=f"001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth",
            description=f"classical SR x{s}, SwinIR-M trained on DIV2K 48 px patches")
    for s in (2, 3, 4):  # 002 lightweight SR
        out[f"lightweight_x{s}"] = SwinIRConfig(
            img_size=64, embed_dim=60, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6), upscale=s,
            upsampler="pixelshuffledirect", release_file=f"002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{s}.pth",
            description=f"lightweight SR x{s}, SwinIR-S")
    for s in (2, 4):  # 003 real-world SR (BSRGAN degradations, GAN-trained; the EMA weights are the ones tested)
        out[f"real_x{s}"] = SwinIRConfig(
            img_size=64, upscale=s, upsampler="nearest+conv", param_key="params_ema",
            release_file=f"003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x{s}_GAN.pth",
            description=f"real-world SR x{s}, SwinIR-M GAN (BSRGAN degradations)")
    out["real_large_x4"] = SwinIRConfig(
        img_size=64, embed_dim=240, depths=(6,) * 9, num_heads=(8,) * 9, upscale=4, upsampler="nearest+conv",
        resi_connection="3conv", param_key="params_ema",
        release_file="003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth",
        description="real-world SR x4, SwinIR-L GAN (BSRGAN degradations, larger training set)")
    return out


SWINIR_PRESETS: dict[str, SwinIRConfig] = _presets()


def tiny_config(upscale: int = 4, upsampler: str = "pixelshuffle", **kw) -> SwinIRConfig:
    """The same code path at test size: embed 16, two RSTBs of two blocks, window 4, 8 px patches."""
    return SwinIRConfig(**{**dict(img_size=8, embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=4,
                                  upscale=upscale, upsampler=upsampler), **kw})


# ---- windows -------------------------------------------------------------------------------------------------------
def to_windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/ws * W/ws, ws*ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def from_windows(win: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of to_windows: (B * nW, ws*ws, C) -> (B, H, W, C)."""
    c = win.shape[-1]
    b = win.shape[0] // ((h // ws) * (w // ws))
    x = win.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws^2, ws^2) index into the (2ws-1)^2 bias table: token i at (yi, xi), token j at (yj, xj) ->
    (yi - yj + ws - 1) * (2ws - 1) + (xi - xj + ws - 1). Built on the CPU even under a meta-device build: a
    constant, and the meta kernels of meshgrid cost seconds to load."""
    r = torch.arange(ws, device="cpu")
    ys, xs = torch.meshgrid(r, r, indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + ws - 1
    dx = xs[:, None] - xs[None, :] + ws - 1
    return dy * (2 * ws - 1) + dx


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, ws^2, ws^2) additive mask for shifted-window attention: after the cyclic shift, tokens that came from
    different image regions must not attend to each other (-100 between regions, 0 within; upstream's values)."""
    region = torch.zeros(1, h, w, 1, device="cpu")  # a constant: on the CPU even under a meta-device build
    label = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            region[:, hs, wsl, :] = label
            label += 1
    win = to_windows(region, ws).squeeze(-1)  # (nW, ws^2)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, -100.0, 0.0)


# ---- blocks --------------------------------------------------------------------------------------------------------
class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative-position bias per head."""

    def __init__(self, dim: int, ws: int, heads: int):
        super().__init__()
        self.ws, self.heads = ws, heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(ws))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1)[None]  # (1, heads, n, n)
        if mask is not None:  # (nW, n, n), repeated over the batch: windows are ordered batch-major
            nw = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.to(bias.dtype)[None, :, None]).expand(bw // nw, -1, -1, -1, -1)
            bias = bias.reshape(bw, self.heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # scale = head_dim^-0.5
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention + MLP, both residual. A window larger than the training patch shrinks to
    it and stops shifting (upstream's rule), which changes the stored shapes; the stored attn_mask is the one
    for img_size x img_size inputs."""

    def __init__(self, dim: int, res: int, heads: int, ws: int, shift: int, mlp_ratio: float):
        super().__init__()
        if res <= ws:
            ws, shift = res, 0
        self.ws, self.shift, self.res = ws, shift, res
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer("attn_mask", shifted_window_mask(res, res, ws, shift) if shift else None)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        mask = None
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
            mask = self.attn_mask if (h, w) == (self.res, self.res) else \
                shifted_window_mask(h, w, self.ws, self.shift).to(x.device)
        y = from_windows(self.attn(to_windows(y, self.ws), mask), self.ws, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BlockGroup(nn.Module):
    """The Swin blocks of one RSTB (upstream's BasicLayer, without patch merging): even blocks plain windows, odd
    blocks shifted by half a window."""

    def __init__(self, dim: int, res: int, depth: int, heads: int, ws: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList([SwinBlock(dim, res, heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio)
                                     for i in range(depth)])

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, size)
        return x


def _residual_conv(dim: int, kind: str) -> nn.Module:
    """'1conv': one 3x3 conv; '3conv': 3x3 to dim/4, 1x1, 3x3 back (LeakyReLU 0.2 between), to save parameters."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    q = dim // 4
    return nn.Sequential(nn.Conv2d(dim, q, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(q, q, 1),
                         nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(q, dim, 3, 1, 1))


class RSTB(nn.Module):
    """Residual Swin Transformer Block: Swin blocks on tokens, a conv on the image layout, plus the input."""

    def __init__(self, dim: int, res: int, depth: int, heads: int, ws: int, mlp_ratio: float, resi: str):
        super().__init__()
        self.residual_group = BlockGroup(dim, res, depth, heads, ws, mlp_ratio)
        self.conv = _residual_conv(dim, resi)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        y = self.residual_group(x, size).transpose(1, 2).reshape(b, c, *size)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class PatchNorm(nn.Module):
    """Upstream's PatchEmbed at patch size 1: tokens are pixels; only its LayerNorm has weights."""

    def __init__(self, dim: int, norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class SwinIR(nn.Module):
    def __init__(self, cfg: SwinIRConfig):
        super().__init__()
        self.cfg = cfg = cfg.check()
        d, out_ch = cfg.embed_dim, cfg.in_chans
        mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1) if cfg.in_chans == 3 else torch.zeros(1, 1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)  # a constant: upstream keeps it out of the state dict
        self.conv_first = nn.Conv2d(cfg.in_chans, d, 3, 1, 1)
        self.patch_embed = PatchNorm(d, cfg.patch_norm)
        if cfg.ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, cfg.img_size ** 2, d))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.layers = nn.ModuleList([RSTB(d, cfg.img_size, depth, heads, cfg.window_size, cfg.mlp_ratio,
                                          cfg.resi_connection) for depth, heads in zip(cfg.depths, cfg.num_heads)])
        self.norm = nn.LayerNorm(d)
        self.conv_after_body = _residual_conv(d, cfg.resi_connection)
        s = cfg.upscale
        if cfg.upsampler == "pixelshuffle":  # classical SR
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(d, NUM_FEAT, 3, 1, 1), nn.LeakyReLU(inplace=True))
            steps = [(4, 2)] * int(math.log2(s)) if _is_pow2(s) else [(9, 3)]
            self.upsample = nn.Sequential(*[m for k, r in steps
                                            for m in (nn.Conv2d(NUM_FEAT, k * NUM_FEAT, 3, 1, 1), nn.PixelShuffle(r))])
            self.conv_last = nn.Conv2d(NUM_FEAT, out_ch, 3, 1, 1)
        elif cfg.upsampler == "pixelshuffledirect":  # lightweight SR: one conv + one shuffle
            self.upsample = nn.Sequential(nn.Conv2d(d, s * s * out_ch, 3, 1, 1), nn.PixelShuffle(s))
        elif cfg.upsampler == "nearest+conv":  # real-world SR: nearest x2 steps with convs (fewer artefacts)
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(d, NUM_FEAT, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.conv_up1 = nn.Conv2d(NUM_FEAT, NUM_FEAT, 3, 1, 1)
            if s == 4:
                self.conv_up2 = nn.Conv2d(NUM_FEAT, NUM_FEAT, 3, 1, 1)
            self.conv_hr = nn.Conv2d(NUM_FEAT, NUM_FEAT, 3, 1, 1)
            self.conv_last = nn.Conv2d(NUM_FEAT, out_ch, 3, 1, 1)
        else:  # restoration at the same size (denoising, JPEG artefacts)
            self.conv_last = nn.Conv2d(d, out_ch, 3, 1, 1)
        for m in self.modules():  # upstream's init: truncated-normal linears, zero biases
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def scale(self) -> int:
        return self.cfg.upscale if self.cfg.upsampler else 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        t = self.patch_embed(x)
        if self.cfg.ape:
            t = t + self.absolute_pos_embed
        for layer in self.layers:
            t = layer(t, size)
        t = self.norm(t)
        return t.transpose(1, 2).reshape(x.shape[0], -1, *size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1], H and W multiples of the window size -> (B, C, sH, sW)."""
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.cfg.img_range
        kind = self.cfg.upsampler
        first = self.conv_first(x)
        feat = self.conv_after_body(self.features(first)) + first
        if kind == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        elif kind == "pixelshuffledirect":
            out = self.upsample(feat)
        elif kind == "nearest+conv":
            h = self.conv_before_upsample(feat)
            h = F.leaky_relu(self.conv_up1(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
            if self.cfg.upscale == 4:
                h = F.leaky_relu(self.conv_up2(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
            out = self.conv_last(F.leaky_relu(self.conv_hr(h), 0.2))
        else:
            out = x + self.conv_last(feat)
        return out / self.cfg.img_range + mean


def build_swinir(preset: str | SwinIRConfig, device: str | torch.device | None = None, **overrides) -> SwinIR:
    """A SwinIR of a preset name (SWINIR_PRESETS) or config; `device="meta"` builds shapes only."""
    if isinstance(preset, str):
        if preset not in SWINIR_PRESETS:
            raise ValueError(f"SwinIR preset {preset!r}; known: {', '.join(SWINIR_PRESETS)}")
        preset = SWINIR_PRESETS[preset]
    cfg = replace(preset, **overrides) if overrides else preset
    with torch.device(device or "cpu"):
        return SwinIR(cfg)


# ---- loading -------------------------------------------------------------------------------------------------------
def read_swinir_state_dict(path: str | Path, param_key: str = "params") -> dict[str, torch.Tensor]:
    """The tensors of a SwinIR weights file: a .safetensors file, or a .pth read with torch.load(weights_only=True),
    unwrapped from the release's {'params': ...} / {'params_ema': ...} (`param_key` first, then the other)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such SwinIR weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a weights-only torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a dict with 'params' or 'params_ema' (SwinIR release layout) or a "
                         f"state dict, got {type(obj).__name__}")
    for key in (param_key, "params_ema" if param_key == "params" else "params"):
        if key in obj and isinstance(obj[key], Mapping):
            return dict(obj[key])
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()) and "conv_first.weight" in obj:
        return dict(obj)  # a bare state dict
    raise ValueError(f"{path}: no SwinIR weights in it: expected a 'params' or 'params_ema' entry holding the "
                     f"state dict (found keys: {', '.join(map(str, list(obj)[:6])) or 'none'})")


def load_swinir(model: SwinIR, path: str | Path) -> SwinIR:
    """Strictly load `path` into `model`; a mismatch names the file, the preset and the first differing keys."""
    sd = read_swinir_state_dict(path, model.cfg.param_key)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or extra or wrong:
        parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + \
                ([f"unexpected {', '.join(extra[:3])}"] if extra else []) + \
                ([f"other shape: {', '.join(wrong[:3])}"] if wrong else [])
        raise ValueError(f"{path}: not the weights of this SwinIR (x{model.cfg.upscale}, {model.cfg.upsampler}, "
                         f"embed {model.cfg.embed_dim}, img_size {model.cfg.img_size}): "
                         f"{len(missing)} missing, {len(extra)} unexpected, {len(wrong)} with other shapes; "
                         + "; ".join(parts))
    model.load_state_dict(sd, strict=True)
    return model


@torch.no_grad()
def upscale_images(model: SwinIR, x: torch.Tensor, tile: int = 0) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, sH, sW) in [0, 1]. Pads by mirroring to the next multiple of the window
    (upstream's test script mirrors too, but always adds up to a whole window) and crops the output back.
    `tile` > 0 runs tiles of that many input pixels (a multiple of the window) one at a time, to bound memory,
    without overlap (so seams can show at tile borders: keep tiles large)."""
    ws, s = model.cfg.window_size, model.scale
    b, c, h, w = x.shape
    ph, pw = (-h) % ws, (-w) % ws
    if ph or pw:  # mirror padding: flip-append, then cut (works for pads up to the image size)
        x = torch.cat([x, x.flip(2)], 2)[:, :, :h + ph] if ph else x
        x = torch.cat([x, x.flip(3)], 3)[:, :, :, :w + pw] if pw else x
    if tile <= 0 or (x.shape[2] <= tile and x.shape[3] <= tile):
        out = model(x)
    else:
        if tile % ws:
            raise ValueError(f"tile={tile} must be a multiple of the window size {ws}")
        out = x.new_zeros(b, c, x.shape[2] * s, x.shape[3] * s)
        for i in range(0, x.shape[2], tile):
            for j in range(0, x.shape[3], tile):
                out[:, :, i * s:(i + tile) * s, j * s:(j + tile) * s] = model(x[:, :, i:i + tile, j:j + tile])
    return out[:, :, :h * s, :w * s].clamp(0, 1)
