"""The MaskGIT-VQGAN (f16, 1024 codes): the proxy-code teacher of TiTok's stage 1 and its legacy pixel decoder.

    from projects.titok_rar.vqgan import MaskGITVQGAN
    vq = MaskGITVQGAN.from_released("downloads/titok_rar/maskgit_vqgan/maskgit-vqgan-imagenet-f16-256.bin")
    codes = vq.encode(images)            # images float [0,1] (B,3,256,256) -> LongTensor (B, 256)
    recon = vq.decode_tokens(codes)      # -> (B,3,256,256) in [0,1]

Our own implementation of the architecture whose state dict is listed in
`shared/reference/titok_rar_checkpoints.json` ("maskgit_vqgan_f16_256 (PretrainedTokenizer keys)"): the PyTorch
port of MaskGIT's JAX VQGAN used by bytedance/1d-tokenizer. Its particulars, all read off those names and shapes:
no downsampling convolutions (the encoder halves resolution by 2x2 average pooling: `down.i` holds only residual
blocks), nearest upsampling followed by a 3x3 `upsample_conv`, no attention blocks, bias-free convolutions inside
the residual blocks and in the encoder's `conv_in`, and a 1x1 `nin_shortcut` of shape (out, out), i.e. applied to
the block's *output*, not to its input (see `ResnetBlock.forward`). Images are in [0, 1] in and out, as there.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from projects.titok_rar.hub import HubMixin


@dataclass
class VQGANConfig:
    """`conf` of the released MaskGIT-VQGAN, plus the codebook (size, and dim = z_channels) and GroupNorm groups."""
    channel_mult: tuple = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    hidden_channels: int = 128
    num_channels: int = 3
    z_channels: int = 256
    resolution: int = 256
    dropout: float = 0.0
    codebook_size: int = 1024
    norm_groups: int = 32          # 32 in the release; tiny models use fewer channels, hence fewer groups

    @property
    def num_resolutions(self) -> int:
        return len(self.channel_mult)

    @property
    def downsample(self) -> int:
        return 2 ** (self.num_resolutions - 1)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VQGANConfig":
        d = dict(d)
        d.pop("num_resolutions", None)  # derived from channel_mult (the release stores both)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"VQGAN config: unknown keys {unknown}; allowed: {sorted(names)}")
        if "channel_mult" in d:
            d["channel_mult"] = tuple(d["channel_mult"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["num_resolutions"] = self.num_resolutions
        return d


# The released file's `conf` (reference JSON) and codebook (1024 x 256).
MASKGIT_VQGAN_F16_256 = VQGANConfig()


def _norm(cfg: VQGANConfig, ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(cfg.norm_groups, ch, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cfg: VQGANConfig, in_ch: int, out_ch: int):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.norm1 = _norm(cfg, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _norm(cfg, out_ch)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        if in_ch != out_ch:
            self.nin_shortcut = nn.Conv2d(out_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_ch != self.out_ch:
            # The released weights' nin_shortcut is (out, out): the port maps the block's output, so a
            # channel-changing block has no true skip. Kept as is: the weights were trained this way.
            return h + self.nin_shortcut(h)
        return h + x


class _Level(nn.Module):
    """One resolution of the encoder/decoder: `block` (residual blocks) and, in the decoder, `upsample_conv`."""
    def __init__(self, blocks: list[nn.Module], upsample_ch: int | None = None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if upsample_ch is not None:
            self.upsample_conv = nn.Conv2d(upsample_ch, upsample_ch, 3, padding=1)


class VQGANEncoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.hidden_channels
        self.conv_in = nn.Conv2d(cfg.num_channels, ch, 3, padding=1, bias=False)
        in_mult = (1,) + tuple(cfg.channel_mult)
        levels = []
        for i, mult in enumerate(cfg.channel_mult):
            block_in, block_out = ch * in_mult[i], ch * mult
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(cfg, block_in, block_out))
                block_in = block_out
            levels.append(_Level(blocks))
        self.down = nn.ModuleList(levels)
        top = ch * cfg.channel_mult[-1]
        self.mid = nn.ModuleList([ResnetBlock(cfg, top, top) for _ in range(cfg.num_res_blocks)])
        self.norm_out = _norm(cfg, top)
        self.conv_out = nn.Conv2d(top, cfg.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            for block in level.block:
                h = block(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2, 2)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQGANDecoder(nn.Module):
    """Codebook vectors (B, z_channels, h, w) -> pixels (B, 3, h*f, w*f). Also TiTok's legacy `pixel_decoder`."""
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch, n = cfg.hidden_channels, cfg.num_resolutions
        block_in = ch * cfg.channel_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = nn.ModuleList([ResnetBlock(cfg, block_in, block_in) for _ in range(cfg.num_res_blocks)])
        levels: list[nn.Module | None] = [None] * n
        for i in reversed(range(n)):
            block_out = ch * cfg.channel_mult[i]
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(cfg, block_in, block_out))
                block_in = block_out
            levels[i] = _Level(blocks, upsample_ch=block_out if i > 0 else None)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cfg, block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.num_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for block in level.block:
                h = block(h)
            if i > 0:
                h = level.upsample_conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codeword quantiser with straight-through gradients (TiTok's and the VQGAN's).

    `use_l2_norm`: compare unit vectors (TiTok's 4096-code VQ, "use_l2_norm: True"), which keeps every code in
    play; the VQ8k variants and the VQGAN use plain L2 distance. Loss = codebook + commitment_cost x commitment.
    """
    def __init__(self, codebook_size: int, token_size: int, commitment_cost: float = 0.25, use_l2_norm: bool = False):
        super().__init__()
        self.codebook_size, self.token_size = codebook_size, token_size
        self.commitment_cost, self.use_l2_norm = commitment_cost, use_l2_norm
        self.embedding = nn.Embedding(codebook_size, token_size)
        self.embedding.weight.data.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.use_l2_norm else w

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """z (B, C, H, W) -> quantised (B, C, H, W), {indices (B, H, W), quantizer_loss, commitment_loss, codebook_loss}."""
        z = z.permute(0, 2, 3, 1).float()
        flat = z.reshape(-1, self.token_size)
        if self.use_l2_norm:
            z, flat = F.normalize(z, dim=-1), F.normalize(flat, dim=-1)
        code = self.codebook().float()
        dist = flat.pow(2).sum(1, keepdim=True) + code.pow(2).sum(1)[None] - 2.0 * flat @ code.t()
        idx = dist.argmin(1)
        zq = code[idx].view(z.shape)
        commitment = self.commitment_cost * F.mse_loss(z, zq.detach())
        codebook = F.mse_loss(zq, z.detach())
        zq = z + (zq - z).detach()  # straight-through
        out = {"indices": idx.view(z.shape[:-1]), "quantizer_loss": commitment + codebook,
               "commitment_loss": commitment, "codebook_loss": codebook}
        return zq.permute(0, 3, 1, 2).contiguous(), out

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (...) -> codebook vectors (..., C)."""
        return F.embedding(indices, self.codebook())


class MaskGITVQGAN(HubMixin, nn.Module):
    """The MaskGIT-VQGAN tokenizer: `encode(images [0,1]) -> (B, h*w)` codes, `decode_tokens` -> images [0,1]."""
    class_name = "MaskGITVQGAN"

    def __init__(self, config: VQGANConfig | Mapping | None = None):
        super().__init__()
        if config is None:
            config = VQGANConfig()
        elif not isinstance(config, VQGANConfig):
            config = VQGANConfig.from_dict(config)
        self.config = config
        self.encoder = VQGANEncoder(config)
        self.decoder = VQGANDecoder(config)
        self.quantize = VectorQuantizer(config.codebook_size, config.z_channels, commitment_cost=0.25)

    @property
    def grid_size(self) -> int:
        return self.config.resolution // self.config.downsample

    @property
    def num_tokens(self) -> int:
        return self.grid_size ** 2

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def config_dict(self) -> dict:
        return {"conf": self.config.to_dict()}

    @classmethod
    def from_config_dict(cls, d: Mapping) -> "MaskGITVQGAN":
        if "conf" not in d:
            raise ValueError("MaskGITVQGAN config.json: expected a 'conf' section (channel_mult, hidden_channels, ...)")
        return cls(VQGANConfig.from_dict(d["conf"]))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Training forward: images [0,1] -> reconstruction (unclamped), quantiser outputs."""
        zq, q = self.quantize(self.encoder(images))
        return self.decoder(zq), q

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        _, q = self.quantize(self.encoder(images))
        return q["indices"].flatten(1)

    def decode_code_vectors(self, zq: torch.Tensor) -> torch.Tensor:
        return self.decoder(zq)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n = tokens.shape
        g = int(round(n ** 0.5))
        if g * g != n:
            raise ValueError(f"MaskGITVQGAN.decode_tokens: {n} tokens is not a square grid")
        zq = self.quantize.lookup(tokens.long()).view(b, g, g, -1).permute(0, 3, 1, 2)
        return self.decoder(zq).clamp(0.0, 1.0)

    @classmethod
    def from_released(cls, path: str, config: VQGANConfig | None = None) -> "MaskGITVQGAN":
        """Load `maskgit-vqgan-imagenet-f16-256.bin` (a plain torch state dict), strictly."""
        from projects.titok_rar.hub import read_state_dict
        model = cls(config or VQGANConfig())
        model.load_state_dict(read_state_dict(path), strict=True)
        return model.eval()
