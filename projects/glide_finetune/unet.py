"""GLIDE's text-conditional ADM UNet and its super-resolution / inpainting variants (written here).

    opts = model_and_diffusion_defaults()                  # the released base model's options (64 px)
    model = create_model(opts)                             # variant from opts: super_res, inpaint
    out = model(x_t, t, tokens=tokens, mask=mask)          # (B, 6, H, W): eps (3) + variance interpolation (3)
    up = create_model(model_and_diffusion_defaults_upsampler())
    out = up(x_t, t, low_res=x64, tokens=tokens, mask=mask)

Options carry the names of glide-text2im's `model_and_diffusion_defaults` (image_size, num_channels,
num_res_blocks, channel_mult, num_heads, num_head_channels, num_heads_upsample, attention_resolutions, dropout,
text_ctx, xf_width, xf_layers, xf_heads, xf_final_ln, xf_padding, use_scale_shift_norm, resblock_updown,
use_fp16, cache_text_emb, inpaint, super_res, plus the diffusion keys), so a released options dict builds the
released network. One extra key of ours: `n_vocab` (default 50257, GPT-2's), so tiny models can use a tiny BPE.

State-dict names and shapes equal the released base.pt / upsample.pt / base_inpaint.pt / upsample_inpaint.pt
(../shared/reference/glide_checkpoints.json; tests/test_glide_model.py checks all four on the meta device).

The network: time embedding (sinusoid, cos first -> Linear -> SiLU -> Linear) plus the projection of the text
transformer's last token; ResBlocks with scale-shift norm and resampling inside the block (resblock_updown);
attention blocks whose keys/values are the image tokens with the text tokens (encoder_kv) prepended; a zero-
initialised output conv. Inputs: the base takes x_t (3 channels); super-res concatenates the bilinearly upsampled
low-res image (6); inpaint concatenates image * mask and the mask (7); both together: 10.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from projects.glide_finetune.text import LayerNorm32, TextTransformer

GPT2_VOCAB = 50257


# ---- options -----------------------------------------------------------------------------------------------------
def model_and_diffusion_defaults() -> dict[str, Any]:
    """The released 64 px base model (glide-text2im model_and_diffusion_defaults, filtered model)."""
    return dict(image_size=64, num_channels=192, num_res_blocks=3, channel_mult="", num_heads=1,
                num_head_channels=64, num_heads_upsample=-1, attention_resolutions="32,16,8", dropout=0.1,
                text_ctx=128, xf_width=512, xf_layers=16, xf_heads=8, xf_final_ln=True, xf_padding=True,
                diffusion_steps=1000, noise_schedule="squaredcos_cap_v2", timestep_respacing="",
                use_scale_shift_norm=True, resblock_updown=True, use_fp16=True, cache_text_emb=False,
                inpaint=False, super_res=False)


def model_and_diffusion_defaults_upsampler() -> dict[str, Any]:
    """The released 64 -> 256 upsampler (glide-text2im model_and_diffusion_defaults_upsampler)."""
    return {**model_and_diffusion_defaults(), "image_size": 256, "num_res_blocks": 2, "noise_schedule": "linear",
            "super_res": True}


GLIDE_OPTION_KEYS = tuple(model_and_diffusion_defaults())
EXTRA_OPTION_KEYS = ("n_vocab",)


@dataclass(frozen=True)
class Variant:
    """What a released checkpoint is: which conditioning inputs its first conv sees."""
    super_res: bool
    inpaint: bool
    description: str

    def in_channels(self, channels: int = 3) -> int:
        return channels + channels * self.super_res + (channels + 1) * self.inpaint


VARIANTS: dict[str, Variant] = {
    "base": Variant(False, False, "text-conditional base (Text2ImUNet)"),
    "upsample": Variant(True, False, "text-conditional super-resolution (SuperResText2ImUNet)"),
    "base-inpaint": Variant(False, True, "text-conditional inpainting base (InpaintText2ImUNet)"),
    "upsample-inpaint": Variant(True, True, "text-conditional inpainting upsampler (SuperResInpaintText2ImUnet)"),
}


def variant_of(options: Mapping[str, Any]) -> str:
    for name, v in VARIANTS.items():
        if v.super_res == bool(options["super_res"]) and v.inpaint == bool(options["inpaint"]):
            return name
    raise AssertionError("unreachable")


def default_channel_mult(image_size: int) -> tuple[int, ...]:
    table = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
    if image_size not in table:
        raise ValueError(f"image_size={image_size}: no default channel_mult (GLIDE has them for "
                         f"{', '.join(map(str, table))}); give channel_mult='1,2,...' explicitly")
    return table[image_size]


def parse_channel_mult(channel_mult: str | Any, image_size: int) -> tuple[int, ...]:
    if channel_mult in ("", None):
        return default_channel_mult(image_size)
    if isinstance(channel_mult, str):
        try:
            return tuple(int(c) for c in channel_mult.split(","))
        except ValueError:
            raise ValueError(f"channel_mult={channel_mult!r}: expected comma-separated integers, "
                             f"e.g. '1,2,3,4'") from None
    return tuple(int(c) for c in channel_mult)


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options with every GLIDE key present (missing or unknown keys are an error naming them)."""
    missing = [k for k in GLIDE_OPTION_KEYS if k not in options]
    unknown = [k for k in options if k not in GLIDE_OPTION_KEYS + EXTRA_OPTION_KEYS]
    if missing or unknown:
        raise ValueError("GLIDE options: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else [])
            + ([f"unknown {', '.join(unknown)}"] if unknown else []))
            + f". Expected the keys of model_and_diffusion_defaults(): {', '.join(GLIDE_OPTION_KEYS)} (+ n_vocab)")
    return dict(options)


# ---- building blocks -----------------------------------------------------------------------------------------------
class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32 groups) computed in float32, cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    if channels % 32:
        raise ValueError(f"GroupNorm with 32 groups needs channels divisible by 32 (got {channels}); "
                         f"use num_channels that is a multiple of 32")
    return GroupNorm32(32, channels)


def zero_module(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim), cosines first as in GLIDE / ADM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """in_layers (norm, SiLU, conv), emb_layers (SiLU, Linear -> scale, shift), out_layers (norm, SiLU, dropout,
    zero conv), skip 1x1 conv when the width changes; up/down resample inside the block (resblock_updown)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = True, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.up, self.down = up, down
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm
                                                             else out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        self.grad_checkpointing = False

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm_act, conv = self.in_layers[:-1], self.in_layers[-1]
        h = conv(self._resample(norm_act(x)))
        x = self._resample(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            norm, rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = emb_out.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)


class AttentionBlock(nn.Module):
    """Self-attention over the image tokens, with the text tokens' keys/values (encoder_kv) prepended.

    The fused qkv conv is laid out per head ([q, k, v] of head 0, then head 1, ...), encoder_kv likewise
    ([k, v] per head), as the released weights expect."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 encoder_channels: int | None = None):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"attention width {channels} is not divisible by "
                                 f"num_head_channels={num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, channels * 2, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))
        self.grad_checkpointing = False

    def _forward(self, x: torch.Tensor, encoder_out: torch.Tensor | None) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        heads = self.num_heads
        qkv = self.qkv(self.norm(x))  # (B, 3C, L)
        q, k, v = qkv.reshape(b * heads, -1, qkv.shape[-1]).chunk(3, dim=1)  # (B*H, ch, L)
        if encoder_out is not None and hasattr(self, "encoder_kv"):
            ekv = self.encoder_kv(encoder_out.to(qkv.dtype))
            ek, ev = ekv.reshape(b * heads, -1, ekv.shape[-1]).chunk(2, dim=1)
            k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
        # (B*H, L, ch) for SDPA; softmax(q k^T / sqrt(ch)) v, as GLIDE's scaled einsum
        a = F.scaled_dot_product_attention(q.transpose(1, 2)[None], k.transpose(1, 2)[None],
                                           v.transpose(1, 2)[None])[0]
        h = self.proj_out(a.transpose(1, 2).reshape(b, c, -1))
        return (x + h).reshape(b, c, *spatial)

    def forward(self, x: torch.Tensor, encoder_out: torch.Tensor | None = None) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._forward, x, encoder_out, use_reentrant=False)
        return self._forward(x, encoder_out)


class Downsample(nn.Module):
    """Strided 3x3 conv (ADM's conv_resample downsampling, used when resblock_updown is off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv (ADM's conv_resample upsampling, used when resblock_updown is off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """Passes the timestep embedding to ResBlocks and the text tokens to attention blocks."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, encoder_out: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_out)
            else:
                x = layer(x)
        return x


# ---- the network ---------------------------------------------------------------------------------------------------
class GlideUNet(nn.Module):
    """Text2ImUNet and its variants in one class: `super_res` and `inpaint` only change the input channels and
    what forward() concatenates to x_t."""

    def __init__(self, options: Mapping[str, Any]):
        super().__init__()
        o = check_options(options)
        self.options = o
        self.super_res, self.inpaint = bool(o["super_res"]), bool(o["inpaint"])
        self.image_size = int(o["image_size"])
        self.model_channels = mc = int(o["num_channels"])
        self.channel_mult = mult = parse_channel_mult(o["channel_mult"], self.image_size)
        self.xf_width, self.text_ctx = int(o["xf_width"]), int(o["text_ctx"])
        self.xf_padding = bool(o["xf_padding"])
        self.cache_text_emb = bool(o["cache_text_emb"])
        self.n_vocab = int(o.get("n_vocab", GPT2_VOCAB))
        attention_ds = {self.image_size // int(r) for r in str(o["attention_resolutions"]).split(",") if r.strip()}
        heads, head_ch = int(o["num_heads"]), int(o["num_head_channels"])
        heads_up = heads if int(o["num_heads_upsample"]) == -1 else int(o["num_heads_upsample"])
        dropout, ss, updown = float(o["dropout"]), bool(o["use_scale_shift_norm"]), bool(o["resblock_updown"])
        enc = self.xf_width or None
        self.in_channels = VARIANTS[variant_of(o)].in_channels(3)
        self.out_channels = 6  # eps (3) + learned-range variance interpolation (3)

        # parameters registered on the root module come first in state_dict(), as in the released files
        if self.xf_width:
            self.positional_embedding = nn.Parameter(torch.empty(self.text_ctx, self.xf_width))
            if self.xf_padding:
                self.padding_embedding = nn.Parameter(torch.empty(self.text_ctx, self.xf_width))

        emb_ch = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(self.in_channels, mc, 3, padding=1))])
        skip_chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(int(o["num_res_blocks"])):
                layers: list[nn.Module] = [ResBlock(ch, emb_ch, dropout, m * mc, ss)]
                ch = m * mc
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, heads, head_ch, enc))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(
                    ResBlock(ch, emb_ch, dropout, ch, ss, down=True) if updown else Downsample(ch)))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb_ch, dropout, ch, ss),
                                                    AttentionBlock(ch, heads, head_ch, enc),
                                                    ResBlock(ch, emb_ch, dropout, ch, ss))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(int(o["num_res_blocks"]) + 1):
                layers = [ResBlock(ch + skip_chans.pop(), emb_ch, dropout, m * mc, ss)]
                ch = m * mc
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, heads_up, head_ch, enc))
                if level and i == int(o["num_res_blocks"]):
                    layers.append(ResBlock(ch, emb_ch, dropout, ch, ss, up=True) if updown
                                  else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, self.out_channels, 3, padding=1)))

        if self.xf_width:
            self.transformer = TextTransformer(self.text_ctx, self.xf_width, int(o["xf_layers"]), int(o["xf_heads"]))
            if o["xf_final_ln"]:
                self.final_ln = LayerNorm32(self.xf_width)
            else:
                self.final_ln = None
            self.token_embedding = nn.Embedding(self.n_vocab, self.xf_width)
            self.transformer_proj = nn.Linear(self.xf_width, emb_ch)
        self._init_text_params()

    def _init_text_params(self) -> None:
        if not self.xf_width or self.positional_embedding.is_meta:
            return
        with torch.no_grad():  # GLIDE's init: small normal embeddings
            nn.init.normal_(self.positional_embedding, std=0.01)
            if self.xf_padding:
                nn.init.normal_(self.padding_embedding, std=0.01)
            nn.init.normal_(self.token_embedding.weight, std=0.02)

    # ---- parts --------------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.input_blocks[0][0].weight.dtype

    def unet_parameters(self):
        """Everything but the text side (what `train=unet` trains)."""
        text = {id(p) for p in self.text_parameters()}
        return [p for p in self.parameters() if id(p) not in text]

    def text_parameters(self):
        """The text side: embeddings, transformer, final LN and the projection into the time embedding."""
        if not self.xf_width:
            return []
        mods = [self.transformer, self.token_embedding, self.transformer_proj]
        mods += [self.final_ln] if self.final_ln is not None else []
        params = [p for m in mods for p in m.parameters()] + [self.positional_embedding]
        return params + ([self.padding_embedding] if self.xf_padding else [])

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute ResBlock / attention / transformer-block activations in backward (less memory, ~30% slower)."""
        for m in self.modules():
            if hasattr(m, "grad_checkpointing"):
                m.grad_checkpointing = enabled

    def convert_to_fp16(self) -> None:
        """Inference in half precision as GLIDE's use_fp16 does: convolutions of the UNet blocks and the text
        transformer's linears in fp16; norms (computed in fp32 anyway), embeddings, time embedding, final LN and
        the output layer stay fp32."""
        for blocks in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in blocks.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.half()
        if self.xf_width:
            for m in self.transformer.modules():
                if isinstance(m, nn.Linear):
                    m.half()

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens (B, text_ctx) long, mask (B, text_ctx) bool ->
        {"xf_proj": (B, 4*mc), "xf_out": (B, xf_width, ctx)}."""
        if tokens.shape[-1] != self.text_ctx:
            raise ValueError(f"tokens have length {tokens.shape[-1]}; this model's text_ctx is {self.text_ctx}")
        xf_in = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        if self.xf_padding:
            xf_in = torch.where(mask[..., None].bool(), xf_in, self.padding_embedding[None].to(xf_in.dtype))
        blocks = self.transformer.resblocks
        xf_dtype = blocks[0].attn.c_qkv.weight.dtype if len(blocks) else xf_in.dtype
        xf_out = self.transformer(xf_in.to(xf_dtype))
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        xf_out = xf_out.float()
        xf_proj = self.transformer_proj(xf_out[:, -1])  # the last position (a pad token for short prompts)
        return {"xf_proj": xf_proj, "xf_out": xf_out.permute(0, 2, 1)}

    def model_input(self, x: torch.Tensor, low_res: torch.Tensor | None = None,
                    inpaint_image: torch.Tensor | None = None,
                    inpaint_mask: torch.Tensor | None = None) -> torch.Tensor:
        parts = [x]
        if self.inpaint:
            # as GLIDE: no image/mask = nothing known (zeros), so an inpainting model also samples from text alone
            if inpaint_image is None:
                inpaint_image = torch.zeros_like(x)
            if inpaint_mask is None:
                inpaint_mask = torch.zeros_like(x[:, :1])
            parts += [inpaint_image * inpaint_mask, inpaint_mask]
        if self.super_res:
            if low_res is None:
                raise ValueError("a super-resolution model needs low_res (B,3,h,w), the image to upsample")
            parts.append(F.interpolate(low_res, x.shape[-2:], mode="bilinear", align_corners=False))
        return torch.cat(parts, dim=1) if len(parts) > 1 else x

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, tokens: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, low_res: torch.Tensor | None = None,
                inpaint_image: torch.Tensor | None = None, inpaint_mask: torch.Tensor | None = None,
                xf_proj: torch.Tensor | None = None, xf_out: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 6, H, W). Give tokens+mask, or a precomputed `encode_text` result as xf_proj+xf_out (a frozen
        text side)."""
        x_in = self.model_input(x, low_res, inpaint_image, inpaint_mask)
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype))
        if self.xf_width:
            if xf_proj is None or xf_out is None:
                if tokens is None:
                    raise ValueError("a text-conditional GLIDE model needs tokens and mask (or xf_proj and xf_out)")
                if mask is None:
                    raise ValueError("tokens given without mask")
                enc = self.encode_text(tokens, mask)
                xf_proj, xf_out = enc["xf_proj"], enc["xf_out"]
            emb = emb + xf_proj.to(emb.dtype)
        h = x_in.to(self.dtype)
        xf = xf_out.to(self.dtype) if xf_out is not None else None
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, xf)
            skips.append(h)
        h = self.middle_block(h, emb, xf)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, xf)
        return self.out(h.to(self.out[-1].weight.dtype)).to(x.dtype)


def create_model(options: Mapping[str, Any], device: torch.device | str | None = None) -> GlideUNet:
    """Build the network for `options` (on `device`; "meta" builds shapes only)."""
    with torch.device(device or "cpu"):
        return GlideUNet(options)


# ---- tiny / toy presets (same code path, small widths) -----------------------------------------------------------
def tiny_options(super_res: bool = False, inpaint: bool = False, image_size: int = 8, n_vocab: int = 64,
                 text_ctx: int = 8) -> dict[str, Any]:
    """A GLIDE-architecture network small enough for tests: 32 channels, one level of attention, a 1-layer text
    transformer."""
    return {**model_and_diffusion_defaults(), "image_size": image_size, "num_channels": 32, "num_res_blocks": 1,
            "channel_mult": "1,2", "num_head_channels": 16, "attention_resolutions": str(image_size // 2),
            "dropout": 0.0, "text_ctx": text_ctx, "xf_width": 32, "xf_layers": 1, "xf_heads": 2,
            "noise_schedule": "linear" if super_res else "squaredcos_cap_v2", "use_fp16": False,
            "super_res": super_res, "inpaint": inpaint, "n_vocab": n_vocab}
