"""TiTok, the 1D image tokenizer (an image as K = 32..256 tokens), and TA-TiTok, its text-aware variant.

    from projects.titok_rar.titok import TiTok, TiTokConfig
    model = TiTok(TiTokConfig(num_latent_tokens=32, vit_enc_model_size="large", vit_dec_model_size="large"))
    tokens = model.encode(images)               # images float [0,1] (B,3,256,256) -> LongTensor (B, 32)
    recon = model.decode_tokens(tokens)         # -> (B,3,256,256) in [0,1]
    TiTok.from_pretrained("downloads/titok_rar/tokenizer_titok_l32_imagenet")   # config.json + weights

Our own implementation; tensor names and shapes follow the released checkpoints
(`shared/reference/titok_rar_checkpoints.json`), so those files load strictly:

- encoder: patch embedding (conv k=s=patch), a class token, the image patches and K learnable `latent_tokens`
  (each with its own positional embedding) through a ViT; only the K latent outputs are kept, projected to
  `token_size` by a 1x1 `conv_out` (2 x token_size for the VAE: mean and log-variance).
- quantiser: VQ (`VectorQuantizer`, L2-normalised codebook for the 4096-code models, plain for VQ8k,
  commitment 0.25, straight-through) or VAE (`DiagonalGaussian`).
- decoder: the K tokens, projected back to the ViT width, beside grid**2 copies of a `mask_token` plus a class
  token; the ViT's outputs at the mask positions form the image. Two heads:
  * legacy (`is_legacy`, the first TiTok release): `ffn` = 1x1 conv, tanh, 1x1 conv to logits over the
    MaskGIT-VQGAN's 1024 codes at every grid cell. Stage 1 trains these logits against the VQGAN's codes
    (proxy codes); with `finetune_decoder` (stage 2) a softmax over them weights the VQGAN codebook
    (`pixel_quantize`) and the VQGAN decoder (`pixel_decoder`) turns that into pixels.
  * pixel (VQ8k / VAE releases): `ffn` = 1x1 conv to patch*patch*3 values per cell, unpatchified, then a 3x3
    `conv_out`.
- TA-TiTok (MaskGen's tokenizer): the decoder also attends to a CLIP text embedding (77 x 768), projected to
  the ViT width with its own positional embedding and appended to the decoder's sequence.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from projects.titok_rar.hub import HubMixin
from projects.titok_rar.vqgan import VectorQuantizer, VQGANConfig, VQGANDecoder

# ViT sizes of the original (width, layers, heads); tiny/toy are ours, for CPU tests and the digits.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (32, 1, 2),
    "toy": (64, 2, 4),
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}
QUANTIZE_MODES = ("vq", "vae")


@dataclass
class TiTokConfig:
    """`model.vq_model` of the original's configs (same names, same defaults) plus a few of ours, marked."""
    codebook_size: int = 4096
    token_size: int = 12
    use_l2_norm: bool = True
    commitment_cost: float = 0.25
    vit_enc_model_size: str = "large"
    vit_dec_model_size: str = "large"
    vit_enc_patch_size: int = 16
    vit_dec_patch_size: int = 16
    num_latent_tokens: int = 32
    finetune_decoder: bool = True
    is_legacy: bool = True
    quantize_mode: str = "vq"
    # ours: image side (the original reads dataset.preprocessing.crop_size), the legacy head's VQGAN
    # (1024 codes, the MaskGIT-VQGAN conf), and TA-TiTok's text input (CLIP ViT-L/14: 77 x 768)
    image_size: int = 256
    pixel_vqgan: dict = field(default_factory=lambda: VQGANConfig().to_dict())
    text_conditioned: bool = False
    text_context_length: int = 77
    text_embed_dim: int = 768

    def __post_init__(self):
        for key in ("vit_enc_model_size", "vit_dec_model_size"):
            if getattr(self, key) not in VIT_SIZES:
                raise ValueError(f"model.vq_model.{key}: {getattr(self, key)!r}; allowed: {', '.join(VIT_SIZES)}")
        if self.quantize_mode not in QUANTIZE_MODES:
            raise ValueError(f"model.vq_model.quantize_mode: {self.quantize_mode!r}; allowed: vq, vae")
        for key in ("vit_enc_patch_size", "vit_dec_patch_size"):
            if self.image_size % getattr(self, key):
                raise ValueError(f"model.vq_model.{key}={getattr(self, key)} does not divide image_size={self.image_size}")
        if self.is_legacy and self.quantize_mode != "vq":
            raise ValueError("model.vq_model.is_legacy: the legacy (VQGAN-code) decoder exists only with quantize_mode=vq")
        if self.is_legacy and self.image_size // self.vit_dec_patch_size != self.pixel.resolution // self.pixel.downsample:
            raise ValueError(f"model.vq_model: legacy decoder grid {self.image_size // self.vit_dec_patch_size} must equal "
                             f"the VQGAN's latent grid {self.pixel.resolution // self.pixel.downsample} (pixel_vqgan)")

    @property
    def pixel(self) -> VQGANConfig:
        return VQGANConfig.from_dict(self.pixel_vqgan)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TiTokConfig":
        """Accepts the original's whole training config ({"model": {"vq_model": ...}, "dataset": ...}) or the
        `vq_model` section alone; keys of the original we have no use for (e.g. `pretrained_tokenizer_weight`)
        are ignored, unknown keys are an error."""
        d = dict(d)
        image_size = None
        if "model" in d:
            ds = d.get("dataset") or {}
            image_size = ((ds.get("preprocessing") or {}).get("crop_size"))
            d = dict(d["model"].get("vq_model") or {}) if isinstance(d["model"], Mapping) else {}
            if not d:
                raise ValueError("config: expected a 'model.vq_model' section")
        # keys of the original's training configs that do not change the architecture: the teacher's path
        # (train_tokenizer.py reads it) and TA-TiTok's clustering_vq (a codebook training trick, not built here)
        ignored = {"pretrained_tokenizer_weight", "clustering_vq"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - ignored)
        if unknown:
            raise ValueError(f"model.vq_model: unknown keys {unknown}; allowed: {sorted(names)}")
        kw = {k: v for k, v in d.items() if k in names}
        if image_size is not None and "image_size" not in kw:
            kw["image_size"] = int(image_size)
        if "pixel_vqgan" in kw:
            kw["pixel_vqgan"] = dict(kw["pixel_vqgan"])
        return cls(**kw)

    def to_dict(self) -> dict:
        """The original's shape: what TiTok's config.json on the hub holds."""
        vq = dataclasses.asdict(self)
        return {"model": {"vq_model": vq}, "dataset": {"preprocessing": {"crop_size": self.image_size}}}


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block; names (ln_1, attn.in_proj_weight, mlp.c_fc, ...) as the release."""
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, hidden), gelu=nn.GELU(),
                                             c_proj=nn.Linear(hidden, width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


def _param(*shape: int, scale: float) -> nn.Parameter:
    return nn.Parameter(scale * torch.randn(*shape))


class TiTokEncoder(nn.Module):
    def __init__(self, cfg: TiTokConfig):
        super().__init__()
        self.cfg = cfg
        self.width, layers, heads = VIT_SIZES[cfg.vit_enc_model_size]
        self.patch_size = cfg.vit_enc_patch_size
        self.grid_size = cfg.image_size // self.patch_size
        self.num_latent_tokens = cfg.num_latent_tokens
        self.token_size = cfg.token_size * (2 if cfg.quantize_mode == "vae" else 1)
        scale = self.width ** -0.5
        self.class_embedding = _param(1, self.width, scale=scale)
        self.positional_embedding = _param(self.grid_size ** 2 + 1, self.width, scale=scale)
        self.latent_token_positional_embedding = _param(self.num_latent_tokens, self.width, scale=scale)
        self.patch_embed = nn.Conv2d(3, self.width, self.patch_size, stride=self.patch_size, bias=True)
        self.ln_pre = nn.LayerNorm(self.width)
        self.transformer = nn.ModuleList([ResidualAttentionBlock(self.width, heads) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(self.width)
        self.conv_out = nn.Conv2d(self.width, self.token_size, 1, bias=True)

    def forward(self, images: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        """images (B,3,H,W) [0,1], latent_tokens (K, width) -> (B, token_size, 1, K)."""
        b = images.shape[0]
        if images.shape[-1] != self.cfg.image_size or images.shape[-2] != self.cfg.image_size:
            raise ValueError(f"TiTok encoder: images are {tuple(images.shape[-2:])}, the model expects "
                             f"{self.cfg.image_size}x{self.cfg.image_size}")
        x = self.patch_embed(images).flatten(2).transpose(1, 2)                    # (B, grid^2, width)
        cls = self.class_embedding.to(x.dtype).expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        lat = (latent_tokens + self.latent_token_positional_embedding).to(x.dtype).expand(b, -1, -1)
        x = self.ln_pre(torch.cat([x, lat], dim=1))
        for block in self.transformer:
            x = block(x)
        lat = self.ln_post(x[:, 1 + self.grid_size ** 2:])                        # (B, K, width)
        if self.cfg.is_legacy:
            # The first release reshapes (B, K, width) to (B, width, K, 1) without a transpose, mixing token
            # and channel axes; its weights were trained through that, so the legacy models keep it.
            lat = lat.reshape(b, self.width, self.num_latent_tokens, 1)
        else:
            lat = lat.transpose(1, 2).unsqueeze(-1)                                 # (B, width, K, 1)
        lat = self.conv_out(lat)                                                    # (B, token_size, K, 1)
        return lat.reshape(b, self.token_size, 1, self.num_latent_tokens)


class TiTokDecoder(nn.Module):
    def __init__(self, cfg: TiTokConfig):
        super().__init__()
        self.cfg = cfg
        self.width, layers, heads = VIT_SIZES[cfg.vit_dec_model_size]
        self.patch_size = cfg.vit_dec_patch_size
        self.grid_size = cfg.image_size // self.patch_size
        self.num_latent_tokens = cfg.num_latent_tokens
        scale = self.width ** -0.5
        self.class_embedding = _param(1, self.width, scale=scale)
        self.positional_embedding = _param(self.grid_size ** 2 + 1, self.width, scale=scale)
        self.mask_token = _param(1, 1, self.width, scale=scale)
        self.latent_token_positional_embedding = _param(self.num_latent_tokens, self.width, scale=scale)
        self.decoder_embed = nn.Linear(cfg.token_size, self.width, bias=True)
        self.ln_pre = nn.LayerNorm(self.width)
        self.transformer = nn.ModuleList([ResidualAttentionBlock(self.width, heads) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(self.width)
        if cfg.is_legacy:
            self.ffn = nn.Sequential(nn.Conv2d(self.width, 2 * self.width, 1, bias=True), nn.Tanh(),
                                     nn.Conv2d(2 * self.width, cfg.pixel.codebook_size, 1, bias=True))
        else:
            self.ffn = nn.Sequential(nn.Conv2d(self.width, self.patch_size ** 2 * 3, 1, bias=True))
            self.conv_out = nn.Conv2d(3, 3, 3, padding=1, bias=True)

    def _extra(self, b: int, dtype, text_guidance) -> torch.Tensor | None:
        return None

    def forward(self, z: torch.Tensor, text_guidance: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, token_size, 1, K) -> legacy: VQGAN code logits (B, 1024, g, g); pixel: images (B, 3, H, W)."""
        b, c, h, k = z.shape
        x = self.decoder_embed(z.reshape(b, c * h, k).transpose(1, 2))           # (B, K, width)
        masks = self.mask_token.to(x.dtype).expand(b, self.grid_size ** 2, -1)
        cls = self.class_embedding.to(x.dtype).expand(b, 1, -1)
        masks = torch.cat([cls, masks], dim=1) + self.positional_embedding.to(x.dtype)
        x = x + self.latent_token_positional_embedding[:k].to(x.dtype)
        seq = [masks, x]
        extra = self._extra(b, x.dtype, text_guidance)
        if extra is not None:
            seq.append(extra)
        x = self.ln_pre(torch.cat(seq, dim=1))
        for block in self.transformer:
            x = block(x)
        x = self.ln_post(x[:, 1:1 + self.grid_size ** 2])                          # (B, g*g, width)
        x = x.transpose(1, 2).reshape(b, self.width, self.grid_size, self.grid_size)
        x = self.ffn(x)
        if self.cfg.is_legacy:
            return x
        p, g = self.patch_size, self.grid_size
        # (B, p*p*3, g, g) -> (B, 3, g*p, g*p): channel index = (p1 * p + p2) * 3 + c
        x = x.reshape(b, p, p, 3, g, g).permute(0, 3, 4, 1, 5, 2).reshape(b, 3, g * p, g * p)
        return self.conv_out(x)


class TATiTokDecoder(TiTokDecoder):
    """TiTok decoder that also attends to a text embedding (B, text_context_length, text_embed_dim)."""
    def __init__(self, cfg: TiTokConfig):
        super().__init__(cfg)
        self.text_guidance_proj = nn.Linear(cfg.text_embed_dim, self.width)
        self.text_guidance_positional_embedding = _param(cfg.text_context_length, self.width,
                                                         scale=self.width ** -0.5)

    def _extra(self, b, dtype, text_guidance):
        if text_guidance is None:
            raise ValueError("TA-TiTok decoder needs text_guidance (B, "
                             f"{self.cfg.text_context_length}, {self.cfg.text_embed_dim})")
        want = (b, self.cfg.text_context_length, self.cfg.text_embed_dim)
        if tuple(text_guidance.shape) != want:
            raise ValueError(f"TA-TiTok decoder: text_guidance is {tuple(text_guidance.shape)}, expected {want}")
        t = self.text_guidance_proj(text_guidance.to(dtype))
        return t + self.text_guidance_positional_embedding.to(dtype)


class DiagonalGaussian:
    """The VAE posterior over (B, 2C, 1, K) moments: mean and log-variance (clamped as in LDM's VAE)."""
    def __init__(self, moments: torch.Tensor, deterministic: bool = False):
        self.mean, logvar = moments.float().chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.deterministic = deterministic

    def sample(self) -> torch.Tensor:
        if self.deterministic:
            return self.mean
        return self.mean + self.std * torch.randn_like(self.mean)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over channels and tokens."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class TiTok(HubMixin, nn.Module):
    class_name = "TiTok"
    decoder_class = TiTokDecoder

    def __init__(self, config: TiTokConfig | Mapping | None = None):
        super().__init__()
        if config is None:
            config = TiTokConfig()
        elif not isinstance(config, TiTokConfig):
            config = TiTokConfig.from_dict(config)
        self.config = cfg = config
        width = VIT_SIZES[cfg.vit_enc_model_size][0]
        self.latent_tokens = _param(cfg.num_latent_tokens, width, scale=width ** -0.5)
        self.encoder = TiTokEncoder(cfg)
        self.decoder = self.decoder_class(cfg)
        if cfg.quantize_mode == "vq":
            self.quantize = VectorQuantizer(cfg.codebook_size, cfg.token_size, cfg.commitment_cost, cfg.use_l2_norm)
        if cfg.is_legacy and cfg.finetune_decoder:
            pix = cfg.pixel
            # stage 2 of the legacy models: the VQGAN codebook and decoder, fed a softmax over the logits
            self.pixel_quantize = VectorQuantizer(pix.codebook_size, pix.z_channels)
            self.pixel_decoder = VQGANDecoder(pix)

    # --- tokenizer interface -------------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return self.config.num_latent_tokens

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def is_continuous(self) -> bool:
        return self.config.quantize_mode == "vae"

    @property
    def outputs_pixels(self) -> bool:
        """False for a legacy stage-1 model: its decoder gives VQGAN code logits, which need the VQGAN."""
        return not self.config.is_legacy or self.config.finetune_decoder

    def config_dict(self) -> dict:
        return self.config.to_dict()

    @classmethod
    def from_config_dict(cls, d: Mapping) -> "TiTok":
        return cls(TiTokConfig.from_dict(d))

    # --- model ---------------------------------------------------------------------------------------------------
    def encode_latent(self, images: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict]:
        """images [0,1] -> z (B, token_size, 1, K) after quantisation (VQ) or sampling (VAE), plus extras."""
        z = self.encoder(images, self.latent_tokens)
        if self.config.quantize_mode == "vq":
            return self.quantize(z)
        post = DiagonalGaussian(z, deterministic=not sample)
        return post.sample(), {"posterior": post, "kl": post.kl()}

    def decode_latent(self, z: torch.Tensor, text_guidance: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, token_size, 1, K) -> images (unclamped), or VQGAN code logits for a legacy stage-1 model."""
        out = self.decoder(z, text_guidance)
        if self.config.is_legacy and self.config.finetune_decoder:
            # softmax over the 1024 VQGAN codes weights the VQGAN codebook: a soft code map the VQGAN decodes
            zq = torch.einsum("nchw,cd->ndhw", out.softmax(1), self.pixel_quantize.codebook().to(out.dtype))
            out = self.pixel_decoder(zq)
        return out

    def forward(self, images: torch.Tensor, text_guidance: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        z, extra = self.encode_latent(images)
        return self.decode_latent(z, text_guidance), extra

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images float [0,1] (B,3,H,W) -> LongTensor (B, K) codebook indices (VQ models)."""
        if self.is_continuous:
            raise TypeError("TiTok VAE has no discrete tokens: use encode_latents(images) -> (B, K, token_size)")
        _, q = self.encode_latent(images)
        return q["indices"].reshape(images.shape[0], -1)

    @torch.no_grad()
    def encode_latents(self, images: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Continuous tokens (B, K, token_size): the VAE's posterior mean (or a sample), or VQ codewords."""
        z, _ = self.encode_latent(images, sample=sample)
        return z.squeeze(2).transpose(1, 2)

    def tokens_to_latent(self, tokens: torch.Tensor) -> torch.Tensor:
        b, k = tokens.shape
        return self.quantize.lookup(tokens.long()).view(b, 1, k, -1).permute(0, 3, 1, 2)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor, text_guidance: torch.Tensor | None = None) -> torch.Tensor:
        """LongTensor (B, K) -> images in [0,1]; a VAE model takes continuous tokens (B, K, token_size)."""
        if self.is_continuous:
            z = tokens.float().transpose(1, 2).unsqueeze(2)
        else:
            z = self.tokens_to_latent(tokens)
        if not self.outputs_pixels:
            raise TypeError("a legacy stage-1 TiTok decodes to VQGAN code logits, not pixels: decode its "
                            "argmax codes with the MaskGIT-VQGAN (decode_with_vqgan)")
        return self.decode_latent(z, text_guidance).clamp(0.0, 1.0)

    @torch.no_grad()
    def decode_with_vqgan(self, tokens: torch.Tensor, vqgan) -> torch.Tensor:
        """Legacy stage-1 models: predicted VQGAN codes (argmax of the logits), decoded by the VQGAN."""
        logits = self.decoder(self.tokens_to_latent(tokens))
        return vqgan.decode_tokens(logits.argmax(1).flatten(1))


class TATiTok(TiTok):
    """Text-aware TiTok (MaskGen's tokenizer): `decode_tokens(tokens, text_guidance)` needs the text embedding."""
    class_name = "TATiTok"
    decoder_class = TATiTokDecoder

    def __init__(self, config: TiTokConfig | Mapping | None = None):
        if config is not None and not isinstance(config, TiTokConfig):
            config = TiTokConfig.from_dict(config)
        config = dataclasses.replace(config or TiTokConfig(is_legacy=False, finetune_decoder=False),
                                     text_conditioned=True)
        if config.is_legacy:
            raise ValueError("TA-TiTok has only the pixel decoder: set model.vq_model.is_legacy=false")
        super().__init__(config)
