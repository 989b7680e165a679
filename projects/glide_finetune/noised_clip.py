"""GLIDE's noised CLIP: a ViT image encoder conditioned on the diffusion timestep, and a causal text encoder
(written here; state dicts named and shaped as the released clip_image_enc.pt / clip_text_enc.pt).

    clip = create_clip("released")                            # glide-text2im clip/config.yaml, 64 px, patch 4
    clip = load_clip("released")                              # + downloads/glide/clip_{image,text}_enc/*.pt
    clip = load_clip("results/toy/glide/clip")                # a train_clip.py run (clip.json + safetensors)
    z_t = clip.text_embeddings(["a red handwritten seven"])   # (B, n_embd), unit norm
    z_i = clip.image_embeddings(x_t, t)                       # x_t in [-1, 1] at diffusion timestep t (0..T-1)
    s = clip.similarity(x_t, t, z_t)                          # exp(logit_scale) * cos, per sample

The image encoder's class token is a learnt embedding of the timestep (`w_t`, one row per diffusion step), so the
same network scores an image at any noise level of the diffusion it was trained against (GLIDE: 1000 steps of
squaredcos_cap_v2, the base model's). Its input is (x + 1) * 127.5 normalised with CLIP's pixel mean/std.

Structure, as glide-text2im's clip/encoders.py names it (tests/data/glide_noised_clip_state_dicts.json):
    blocks.input   TextEmbedding (w_voc, w_pos) | ImageEmbedding (w_t, patch_proj, w_pos, ln)
    blocks.block_i AttentionResblock f_attn (ln, f_q, f_k without bias, f_v, f_c) + FullyConnectedResblock
                   f_mlp (ln, f_1 to 4x width, GELU, f_2), both pre-norm residual
    blocks.output  ln + f (no bias): the text's end-of-text position / the image's class token -> n_embd
Layer norms keep parameters `g`/`b`, linear layers `w` (n_out, n_in)/`b`. The original pads the context to a
multiple of 32 and masks the padding out; padded keys never receive weight and padded queries are dropped, so
attention over the unpadded context (causal for text) is the same computation, done here with
scaled_dot_product_attention. Not reproduced: the original's `zero_key_bias_grad`, a training-time filter on
the q/v bias gradients (its weights are what it produced; our toy training does not need it).

Text: [start] + BPE ids + [end] padded with 0 to max_text_len, with the length (the end token's position + 1)
selecting the output feature. Paper: CLIP's BPE (49408 ids, open_clip's SimpleTokenizer: 49406 start, 49407
end; the released embedding table has 65536 rows). Toy: the GLIDE toy tokenizer (tokenizer.py), whose end token
serves as start and end.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# CLIP's pixel statistics in 0..255 (the original's image_channel_means / image_channel_stds)
CHANNEL_MEANS = (122.77093945, 116.74601272, 104.09373519)
CHANNEL_STDS = (68.50053285, 66.63215831, 70.32316309)
CONFIG_FILE = "clip.json"
IMAGE_WEIGHTS, TEXT_WEIGHTS = "clip_image_enc.safetensors", "clip_text_enc.safetensors"
RELEASED_DIR = "downloads/glide"  # download.py item=clip_image_enc out_dir=downloads/glide/clip_image_enc (+ text)


@dataclass(frozen=True)
class ClipConfig:
    """glide-text2im's clip/config.yaml keys (same names)."""
    logit_scale: float = 100.0
    beta_schedule: str = "squaredcos_cap_v2"
    n_timesteps: int = 1000
    image_size: int = 64
    patch_size: int = 4
    n_vocab: int = 65536
    max_text_len: int = 77
    n_embd: int = 512
    n_head_state_text: int = 64
    n_head_text: int = 8
    n_xf_blocks_text: int = 12
    n_head_state_image: int = 64
    n_head_image: int = 12
    n_xf_blocks_image: int = 12

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> "ClipConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown noised-CLIP config keys {unknown}; expected {sorted(known)}")
        return cls(**dict(d))


# registry: the released config and the small ones (n_vocab is set from the tokenizer at toy/tiny scale)
CLIP_CONFIGS: dict[str, ClipConfig] = {
    "released": ClipConfig(),
    # the toy base samples 8 px digits: 2 px patches (16 tokens + the timestep token)
    "toy": ClipConfig(logit_scale=100.0, image_size=8, patch_size=2, n_vocab=320, max_text_len=16, n_embd=64,
                      n_head_state_text=16, n_head_text=4, n_xf_blocks_text=2, n_head_state_image=16,
                      n_head_image=4, n_xf_blocks_image=3),
    "tiny": ClipConfig(logit_scale=100.0, image_size=8, patch_size=2, n_vocab=320, max_text_len=16, n_embd=32,
                       n_head_state_text=16, n_head_text=2, n_xf_blocks_text=1, n_head_state_image=16,
                       n_head_image=2, n_xf_blocks_image=1),
}


# ---- layers (parameter names as the released files) ----------------------------------------------------------
class LayerNorm(nn.Module):
    def __init__(self, n: int, device=None):
        super().__init__()
        self.g = nn.Parameter(torch.ones(n, device=device))
        self.b = nn.Parameter(torch.zeros(n, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # in fp32, as the original
        return F.layer_norm(x.float(), self.g.shape, self.g.float(), self.b.float(), 1e-5)


class Affine(nn.Module):
    def __init__(self, n_in: int, n_out: int, bias: bool = True, std: float | None = None, device=None):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in, device=device))
        if bias:
            self.b = nn.Parameter(torch.zeros(n_out, device=device))
        else:
            self.register_parameter("b", None)
        if self.w.device.type != "meta":
            nn.init.normal_(self.w, std=std if std is not None else math.sqrt(2 / (n_in + n_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w.to(x.dtype), None if self.b is None else self.b.to(x.dtype))


class AttentionResblock(nn.Module):
    def __init__(self, n_state: int, n_head: int, depth: int, causal: bool, device=None):
        super().__init__()
        self.n_head, self.causal = n_head, causal
        std = 1 / math.sqrt(n_state)
        self.ln = LayerNorm(n_state, device)
        self.f_q = Affine(n_state, n_state, True, std, device)
        self.f_k = Affine(n_state, n_state, False, std, device)  # a key bias shifts every logit equally: none
        self.f_v = Affine(n_state, n_state, True, std, device)
        self.f_c = Affine(n_state, n_state, True, 1 / math.sqrt(n_state * depth ** 2), device)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        b, n, c = m.shape
        r = self.ln(m)

        def heads(t):
            return t.view(b, n, self.n_head, c // self.n_head).transpose(1, 2)

        a = F.scaled_dot_product_attention(heads(self.f_q(r)), heads(self.f_k(r)), heads(self.f_v(r)),
                                           is_causal=self.causal)
        return m + self.f_c(a.transpose(1, 2).reshape(b, n, c))


class FullyConnectedResblock(nn.Module):
    def __init__(self, n_state: int, depth: int, device=None):
        super().__init__()
        self.ln = LayerNorm(n_state, device)
        self.f_1 = Affine(n_state, 4 * n_state, True, math.sqrt(2 / (4 * n_state)), device)
        self.f_2 = Affine(4 * n_state, n_state, True, 1 / math.sqrt(n_state * depth ** 2), device)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return m + self.f_2(F.gelu(self.f_1(self.ln(m))))


class TransformerBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, depth: int, causal: bool, device=None):
        super().__init__()
        self.f_attn = AttentionResblock(n_state, n_head, depth, causal, device)
        self.f_mlp = FullyConnectedResblock(n_state, depth, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f_mlp(self.f_attn(x))


class TextEmbedding(nn.Module):
    def __init__(self, n_vocab: int, n_context: int, n_state: int, device=None):
        super().__init__()
        self.w_voc = nn.Parameter(torch.empty(n_vocab, n_state, device=device))
        self.w_pos = nn.Parameter(torch.empty(n_context, n_state, device=device))
        if self.w_voc.device.type != "meta":
            nn.init.normal_(self.w_voc, std=0.02)
            nn.init.normal_(self.w_pos, std=0.01)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.w_voc) + self.w_pos[None, :tokens.shape[1]]


class ImageEmbedding(nn.Module):
    def __init__(self, image_size: int, patch_size: int, n_state: int, n_timestep: int, device=None):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}")
        self.image_size, self.patch_size = image_size, patch_size
        n_patch = (image_size // patch_size) ** 2
        # registration order = the released state dict's: w_t, patch_proj, w_pos, ln
        self.w_t = nn.Parameter(torch.empty(n_timestep, n_state, device=device))
        self.patch_proj = nn.Parameter(torch.empty(n_state, 3, patch_size, patch_size, device=device))
        self.w_pos = nn.Parameter(torch.empty(1 + n_patch, n_state, device=device))
        self.ln = LayerNorm(n_state, device)
        if self.w_t.device.type != "meta":
            nn.init.normal_(self.w_t, std=1 / math.sqrt(n_state))
            nn.init.normal_(self.patch_proj, std=math.sqrt(2 / (n_state * patch_size ** 2)))
            nn.init.normal_(self.w_pos, std=1 / math.sqrt(n_state))

    def forward(self, pixels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """pixels in 0..255 (B, 3, S, S); t (B,) integer timesteps."""
        if pixels.dim() != 4 or pixels.shape[1] != 3 or pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"noised CLIP image encoder: expected (B, 3, {self.image_size}, {self.image_size}) "
                             f"images, got {tuple(pixels.shape)}")
        if t.shape != pixels.shape[:1]:
            raise ValueError(f"noised CLIP image encoder: {tuple(t.shape)} timesteps for {pixels.shape[0]} images")
        mean = torch.tensor(CHANNEL_MEANS, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        std = torch.tensor(CHANNEL_STDS, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        x = (pixels - mean) / std
        x = F.conv2d(x, self.patch_proj.to(x.dtype), stride=self.patch_size).flatten(2).transpose(1, 2)
        sot = F.embedding(t.long(), self.w_t)[:, None].to(x.dtype)
        return self.ln(torch.cat([sot, x], dim=1) + self.w_pos[None])


class TextFeatureExtractor(nn.Module):
    def __init__(self, n_state: int, n_embd: int, device=None):
        super().__init__()
        self.ln = LayerNorm(n_state, device)
        self.f = Affine(n_state, n_embd, False, device=device)

    def forward(self, h: torch.Tensor, text_len: torch.Tensor) -> torch.Tensor:
        last = h[torch.arange(h.shape[0], device=h.device), text_len.long() - 1]
        return self.f(self.ln(last))


class ImageFeatureExtractor(nn.Module):
    def __init__(self, n_state: int, n_embd: int, device=None):
        super().__init__()
        self.ln = LayerNorm(n_state, device)
        self.f = Affine(n_state, n_embd, False, device=device)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.f(self.ln(h[:, 0]))


class TextEncoder(nn.Module):
    def __init__(self, cfg: ClipConfig, device=None):
        super().__init__()
        n_state, depth = cfg.n_head_text * cfg.n_head_state_text, cfg.n_xf_blocks_text
        self.n_vocab, self.max_text_len = cfg.n_vocab, cfg.max_text_len
        blocks: dict[str, nn.Module] = {"input": TextEmbedding(cfg.n_vocab, cfg.max_text_len, n_state, device)}
        for i in range(depth):  # the original's init divides the output layers by 2 * depth (two resblocks each)
            blocks[f"block_{i}"] = TransformerBlock(n_state, cfg.n_head_text, 2 * depth, True, device)
        blocks["output"] = TextFeatureExtractor(n_state, cfg.n_embd, device)
        self.blocks = nn.ModuleDict(blocks)
        self.depth = depth

    def forward(self, tokens: torch.Tensor, text_len: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.max_text_len:
            raise ValueError(f"noised CLIP text encoder: expected (B, <= {self.max_text_len}) tokens, "
                             f"got {tuple(tokens.shape)}")
        if int(tokens.max()) >= self.n_vocab or int(tokens.min()) < 0:
            raise ValueError(f"noised CLIP text encoder: token ids must lie in 0..{self.n_vocab - 1}")
        h = self.blocks["input"](tokens)
        for i in range(self.depth):
            h = self.blocks[f"block_{i}"](h)
        return self.blocks["output"](h, text_len)


class ImageEncoder(nn.Module):
    def __init__(self, cfg: ClipConfig, device=None):
        super().__init__()
        n_state, depth = cfg.n_head_image * cfg.n_head_state_image, cfg.n_xf_blocks_image
        blocks: dict[str, nn.Module] = {"input": ImageEmbedding(cfg.image_size, cfg.patch_size, n_state,
                                                                cfg.n_timesteps, device)}
        for i in range(depth):
            blocks[f"block_{i}"] = TransformerBlock(n_state, cfg.n_head_image, 2 * depth, False, device)
        blocks["output"] = ImageFeatureExtractor(n_state, cfg.n_embd, device)
        self.blocks = nn.ModuleDict(blocks)
        self.depth, self.n_timesteps = depth, cfg.n_timesteps

    def forward(self, pixels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.blocks["input"](pixels, t)
        for i in range(self.depth):
            h = self.blocks[f"block_{i}"](h)
        return self.blocks["output"](h)


# ---- tokenizers ------------------------------------------------------------------------------------------------
class ClipTokens:
    """Prompts -> (tokens, lengths) as the noised CLIP reads them: [start] + ids[:ctx - 2] + [end], 0-padded."""

    def __init__(self, encode, start: int, end: int, name: str):
        self.encode, self.start, self.end, self.name = encode, int(start), int(end), name

    def __call__(self, prompts: Sequence[str], ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows, lens = [], []
        for p in prompts:
            ids = [self.start] + list(self.encode(p))[:ctx - 2] + [self.end]
            lens.append(len(ids))
            rows.append(ids + [0] * (ctx - len(ids)))
        return torch.tensor(rows, dtype=torch.long), torch.tensor(lens, dtype=torch.long)


def clip_tokenizer(spec: str) -> ClipTokens:
    """'clip_bpe' = CLIP's BPE (open_clip ships the vocabulary; the released model's tokenizer), else a folder
    with a GLIDE tokenizer (vocab.json + merges.txt; its end token doubles as start)."""
    if spec == "clip_bpe":
        from open_clip.tokenizer import SimpleTokenizer

        tok = SimpleTokenizer()
        return ClipTokens(tok.encode, tok.encoder["<start_of_text>"], tok.encoder["<end_of_text>"], spec)
    from projects.glide_finetune.tokenizer import load_tokenizer

    tok = load_tokenizer(spec)
    return ClipTokens(tok.encode, tok.end_token, tok.end_token, str(spec))


# ---- the model -------------------------------------------------------------------------------------------------
class NoisedCLIP(nn.Module):
    def __init__(self, cfg: ClipConfig, tokenizer: ClipTokens | None = None, device=None):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = TextEncoder(cfg, device)
        self.image_encoder = ImageEncoder(cfg, device)
        self.tokenizer = tokenizer

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale) multiplies the cosine in the guidance (the config's value: 100 released)."""
        return float(self.cfg.logit_scale)

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            raise ValueError("this NoisedCLIP has no tokenizer: give tokenizer= to create_clip/load_clip")
        device = self.text_encoder.blocks["input"].w_voc.device
        tokens, lens = self.tokenizer(prompts, self.cfg.max_text_len)
        return tokens.to(device), lens.to(device)

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        z = self.text_encoder(*self.encode_prompts(prompts))
        return z / (z.norm(dim=-1, keepdim=True) + 1e-12)

    def image_embeddings(self, images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """images in [-1, 1] (x_t of the diffusion at timestep t, or clean images at t = 0)."""
        z = self.image_encoder((images + 1) * 127.5, t)
        return z / (z.norm(dim=-1, keepdim=True) + 1e-12)

    def similarity(self, images: torch.Tensor, t: torch.Tensor, z_text: torch.Tensor) -> torch.Tensor:
        """logit_scale * cos(image, text) per sample (the quantity the guidance climbs)."""
        return self.logit_scale * (self.image_embeddings(images, t) * z_text).sum(-1)


def create_clip(config: str | ClipConfig | Mapping[str, Any] = "released", tokenizer: ClipTokens | None = None,
                device=None, **overrides: Any) -> NoisedCLIP:
    if isinstance(config, str):
        if config not in CLIP_CONFIGS:
            raise ValueError(f"noised CLIP config {config!r}; available: {', '.join(CLIP_CONFIGS)}")
        config = CLIP_CONFIGS[config]
    elif not isinstance(config, ClipConfig):
        config = ClipConfig.from_dict(config)
    return NoisedCLIP(replace(config, **overrides), tokenizer, device)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (weights_only: plain tensors, as the released .pt are)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such noised-CLIP weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    return sd


def _load_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: does not match the noised-CLIP {type(module).__name__} of this config:\n{e}") \
            from None


def load_clip(path: str | Path = "released", *, image_weights: str | Path | None = None,
              text_weights: str | Path | None = None, tokenizer: str | None = None,
              device: torch.device | str = "cpu") -> NoisedCLIP:
    """'released' (downloads/glide/clip_image_enc/clip_image_enc.pt + clip_text_enc/clip_text_enc.pt, CLIP BPE)
    or a train_clip.py run folder (clip.json names the config and tokenizer)."""
    if str(path) == "released":
        cfg, tok = CLIP_CONFIGS["released"], tokenizer or "clip_bpe"
        image_weights = image_weights or Path(RELEASED_DIR) / "clip_image_enc" / "clip_image_enc.pt"
        text_weights = text_weights or Path(RELEASED_DIR) / "clip_text_enc" / "clip_text_enc.pt"
    else:
        folder = Path(path)
        info_file = folder / CONFIG_FILE
        if not info_file.is_file():
            raise FileNotFoundError(f"{folder}: no {CONFIG_FILE} (give a train_clip.py run folder or 'released')")
        info = json.loads(info_file.read_text())
        cfg, tok = ClipConfig.from_dict(info["config"], str(info_file)), tokenizer or info["tokenizer"]
        image_weights = image_weights or folder / IMAGE_WEIGHTS
        text_weights = text_weights or folder / TEXT_WEIGHTS
    clip = NoisedCLIP(cfg, clip_tokenizer(tok), device="meta")
    clip.to_empty(device=device)  # no init: every tensor comes from the files
    _load_strict(clip.image_encoder, read_weights(image_weights), Path(image_weights))
    _load_strict(clip.text_encoder, read_weights(text_weights), Path(text_weights))
    return clip.eval().requires_grad_(False)


def save_clip(clip: NoisedCLIP, folder: str | Path, tokenizer: str, extra: Mapping[str, Any] | None = None) -> None:
    """clip.json (config, tokenizer) + the two encoders' safetensors, each written atomically."""
    from safetensors.torch import save_file

    from shared.io import atomic_path, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, module in ((IMAGE_WEIGHTS, clip.image_encoder), (TEXT_WEIGHTS, clip.text_encoder)):
        with atomic_path(folder / name) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(tmp))
    write_json(folder / CONFIG_FILE, {"config": asdict(clip.cfg), "tokenizer": str(tokenizer), **(extra or {})})
