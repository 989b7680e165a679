"""MaskGen (VQ): text-to-image masked generation on TA-TiTok tokens (arXiv:2501.07730; the layout of
bytedance/1d-tokenizer modeling/maskgen.py `MaskGen_VQ`: MM-DiT blocks (diffusers JointTransformerBlock) over image
tokens with the text tokens as the joint stream, adaLN on the pooled text embedding).

    from projects.titok_rar.maskgen import MaskGen, maskgen_config, build_text_encoder
    text = build_text_encoder({"kind": "toy"})                 # or {"kind": "open_clip", "pretrained": file}
    model = MaskGen(maskgen_config("toy", codebook_size=64, num_latent_tokens=16, text_embed_dim=text.width))
    hidden, pooled = text(captions)                            # (B, L, D), (B, D)
    logits, masks = model(tokens, hidden, pooled)              # training: masks the tokens itself (arccos)
    tokens = model.generate(hidden, pooled, null_hidden, null_pooled, seeds=[...], **sampling_kwargs(cfg))

Text encoders (TEXT_ENCODERS): `open_clip` is the paper's (ViT-L-14-336 text tower, QuickGELU, from a weights file
the download rule provides; MaskGen reads the penultimate layer's states and the projected pooled embedding, as the
original's open_clip_text_encoding); `toy` is a small word-level transformer over the digits captions' vocabulary, trained
together with MaskGen at toy scale (a frozen random one leaves "red three" and "blue three" nearly alike).
Classifier-free guidance uses the encoding of the empty caption; during training a fraction `text_drop_prob` of
captions is replaced by it. Sampling: MaskGIT decoding (Gumbel-perturbed confidence, arccos re-mask schedule) with
MaskGen's guidance decays (linear / cosine / flippedcosine / none) and softmax temperature annealing.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from projects.titok_rar.generator_common import SampleRNG, mask_input_tokens, masking_ratio

GUIDANCE_DECAYS = ("linear", "cosine", "flippedcosine", "none")

# model.maskgen of configs/training/MaskGen/maskgen_vq_{l,xl}_stage1.yaml (bytedance/1d-tokenizer); toy: ours
MASKGEN_SIZES = {
    "maskgen_vq_l": dict(decoder_embed_dim=1024, decoder_depth=16, decoder_num_heads=16, micro_condition=True),
    "maskgen_vq_xl": dict(decoder_embed_dim=1280, decoder_depth=20, decoder_num_heads=16, micro_condition=True),
    "toy": dict(decoder_embed_dim=64, decoder_depth=3, decoder_num_heads=4, micro_condition=False),
    "tiny": dict(decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4, micro_condition=False),
}
MASKGEN_DEFAULTS = dict(decoder_embed_dim=1024, decoder_depth=16, decoder_num_heads=16, micro_condition=True,
                        micro_condition_embed_dim=256, text_drop_prob=0.1, condition_num_classes=1000, cfg=12.0,
                        num_iter=16, temperature=2.0, sample_aesthetic_score=6.0, weight_tying=True,
                        mask_schedule_strategy="arccos", guidance_decay="cosine", guidance_decay_scale_pow=1.0,
                        softmax_temperature_annealing=True, prob_sorting=True)


def maskgen_config(size: str = "toy", codebook_size: int = 8192, num_latent_tokens: int = 128,
                   text_embed_dim: int = 768, **maskgen: Any) -> DictConfig:
    if size not in MASKGEN_SIZES:
        raise KeyError(f"unknown MaskGen size {size!r}; known: {', '.join(MASKGEN_SIZES)}")
    m = {**MASKGEN_DEFAULTS, **MASKGEN_SIZES[size], **maskgen}
    unknown = set(m) - set(MASKGEN_DEFAULTS)
    if unknown:
        raise KeyError(f"model.maskgen: unknown keys {sorted(unknown)}; known: {sorted(MASKGEN_DEFAULTS)}")
    return OmegaConf.create({"model": {"vq_model": {"codebook_size": int(codebook_size),
                                                    "num_latent_tokens": int(num_latent_tokens),
                                                    "text_embed_dim": int(text_embed_dim)},
                                       "maskgen": m}})


def sampling_kwargs(config) -> dict:
    m = config.model.maskgen
    return dict(guidance_scale=float(m.cfg), randomize_temperature=float(m.temperature),
                num_sample_steps=int(m.num_iter), guidance_decay=str(m.guidance_decay),
                guidance_decay_scale_pow=float(m.guidance_decay_scale_pow),
                softmax_temperature_annealing=bool(m.softmax_temperature_annealing),
                prob_sorting=bool(m.prob_sorting))


def guidance_at(step: int, num_steps: int, guidance_scale: float, decay: str, power: float = 1.0) -> float:
    """MaskGen's guidance scale at a step (ratio r = (step+1)/N); note the cosine forms use r, not step/N."""
    r = (step + 1) / num_steps
    if decay == "none":
        return guidance_scale
    if decay == "linear":
        return r * (guidance_scale - 1) + 1
    if decay == "cosine":
        return (guidance_scale - 1) * (1 - math.cos((r ** power) * math.pi)) / 2 + 1
    if decay == "flippedcosine":
        return (guidance_scale - 1) * math.cos((r ** power) * math.pi) / 2 + 1
    raise ValueError(f"guidance_decay={decay!r}; expected one of {', '.join(GUIDANCE_DECAYS)}")


# ---- text encoders ----------------------------------------------------------------------------------------
class ToyTextEncoder(nn.Module):
    """Word-level transformer over the digits captions' words: (hidden (B, L, width), pooled (B, width)), pooled
    at the end-of-text token (as CLIP pools at its EOT)."""

    def __init__(self, width: int = 64, layers: int = 2, heads: int = 4, context_length: int = 8):
        super().__init__()
        from shared.toy.dataset import COLOUR_NAMES, DIGIT_WORDS

        self.vocab = ["<pad>", "<eot>", "<unk>", "a", "an", "handwritten", "digit", *COLOUR_NAMES, *DIGIT_WORDS]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.width, self.context_length = width, context_length
        self.token_embedding = nn.Embedding(len(self.vocab), width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Linear(width, width, bias=False)

    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        ids = torch.zeros(len(captions), self.context_length, dtype=torch.long)
        for i, text in enumerate(captions):
            words = [self.index.get(w, 2) for w in re.findall(r"[a-z]+", str(text).lower())]
            words = words[:self.context_length - 1] + [1]  # always room for the end-of-text token
            ids[i, :len(words)] = torch.tensor(words)
        return ids

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenize(captions).to(self.token_embedding.weight.device)
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x, src_key_padding_mask=None))
        eot = (ids == 1).int().argmax(-1)
        pooled = self.text_projection(x[torch.arange(len(ids)), eot])
        return x, pooled


class OpenCLIPText(nn.Module):
    """open_clip's text tower from a local weights file (no download): MaskGen's text condition is the
    penultimate block's output and the projected pooled embedding (the original's open_clip_text_encoding)."""

    # the original's 'openai' ViT-L-14-336 uses QuickGELU; open_clip switches it on only for the 'openai' tag, so
    # weights loaded from a file need the "-quickgelu" architecture (as schema.TextEncoder and the configs say)
    def __init__(self, model_name: str = "ViT-L-14-336-quickgelu", pretrained: str = ""):
        super().__init__()
        import open_clip

        if not pretrained:
            raise ValueError("text_encoder.pretrained: the open_clip weights file (from the download rule)")
        model = open_clip.create_model(model_name, pretrained=pretrained)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.token_embedding, self.positional_embedding = model.token_embedding, model.positional_embedding
        self.transformer, self.ln_final = model.transformer, model.ln_final
        self.text_projection, self.attn_mask = model.text_projection, model.attn_mask
        self.text_pool_type = getattr(model, "text_pool_type", "argmax")
        self.eos_id = getattr(model, "text_eos_id", None)
        self.width = int(self.token_embedding.weight.shape[1])

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from open_clip.transformer import text_global_pool

        ids = self.tokenizer(list(captions)).to(self.token_embedding.weight.device)
        x = self.token_embedding(ids) + self.positional_embedding
        for block in self.transformer.resblocks[:-1]:
            x = block(x, attn_mask=self.attn_mask)
        penultimate = x
        x = self.ln_final(self.transformer.resblocks[-1](x, attn_mask=self.attn_mask))
        try:
            pooled = text_global_pool(x, ids, self.text_pool_type, eos_token_id=self.eos_id)
        except TypeError:  # older open_clip: no eos_token_id argument
            pooled = text_global_pool(x, ids, self.text_pool_type)
        pooled = pooled[0] if isinstance(pooled, tuple) else pooled  # older open_clip returns (pooled, tokens)
        proj = self.text_projection
        return penultimate, proj(pooled) if isinstance(proj, nn.Module) else pooled @ proj

    def decoder_guidance(self, captions: Sequence[str]) -> torch.Tensor:
        """TA-TiTok's text guidance: the final (ln_final) token states of the text tower."""
        ids = self.tokenizer(list(captions)).to(self.token_embedding.weight.device)
        x = self.token_embedding(ids) + self.positional_embedding
        for block in self.transformer.resblocks:
            x = block(x, attn_mask=self.attn_mask)
        return self.ln_final(x)


TEXT_ENCODERS = {"toy": ToyTextEncoder, "open_clip": OpenCLIPText}


def build_text_encoder(spec: dict) -> nn.Module:
    spec = dict(spec)
    kind = spec.pop("kind", "toy")
    if kind not in TEXT_ENCODERS:
        raise ValueError(f"text_encoder.kind={kind!r}; expected one of {', '.join(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[kind](**spec)


# ---- the generator ----------------------------------------------------------------------------------------
class WeightTiedLMHead(nn.Module):
    """Logits from the (shared) token embedding matrix, first `num_codes` rows, plus a bias."""

    def __init__(self, embeddings: nn.Embedding, num_codes: int):
        super().__init__()
        self.embeddings, self.num_codes = embeddings, num_codes
        self.bias = nn.Parameter(torch.zeros(num_codes))

    def forward(self, x):
        return x @ self.embeddings.weight[:self.num_codes].t() + self.bias


def sinusoidal(x: torch.Tensor, dim: int, max_period: int = 1000) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
    arg = x.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class MaskGen(nn.Module):
    def __init__(self, config):
        super().__init__()
        from diffusers.models.attention import JointTransformerBlock
        from diffusers.models.normalization import AdaLayerNormContinuous

        self.config = config = config if isinstance(config, DictConfig) else OmegaConf.create(dict(config))
        m, vq = config.model.maskgen, config.model.vq_model
        d, depth, heads = int(m.decoder_embed_dim), int(m.decoder_depth), int(m.decoder_num_heads)
        self.image_seq_len, self.target_codebook_size = int(vq.num_latent_tokens), int(vq.codebook_size)
        self.mask_token_id = self.target_codebook_size
        self.text_embed_dim = int(vq.get("text_embed_dim", 768))
        self.micro_condition, self.micro_dim = bool(m.micro_condition), int(m.micro_condition_embed_dim)
        self.text_drop_prob = float(m.text_drop_prob)
        self.mask_schedule = str(m.mask_schedule_strategy)
        self.sample_aesthetic_score = float(m.sample_aesthetic_score)
        self.text_embed_proj = nn.Linear(self.text_embed_dim, d)
        self.cond_pooled_proj = nn.Linear(self.text_embed_dim + (self.micro_dim if self.micro_condition else 0), d)
        self.blocks = nn.ModuleList([JointTransformerBlock(dim=d, num_attention_heads=heads,
                                                           attention_head_dim=d // heads,
                                                           context_pre_only=i == depth - 1) for i in range(depth)])
        self.norm = AdaLayerNormContinuous(d, d, elementwise_affine=False, eps=1e-6)
        # one extra token for masking and the unused class range, kept for the original's embedding size
        self.embeddings = nn.Embedding(self.target_codebook_size + 1 + int(m.condition_num_classes) + 1, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.image_seq_len, d))
        self.lm_head = WeightTiedLMHead(self.embeddings, self.target_codebook_size) if m.weight_tying \
            else nn.Linear(d, self.target_codebook_size)
        if not self.pos_embed.is_meta:
            self._init_weights()

    def _init_weights(self):
        from diffusers.models.normalization import AdaLayerNormContinuous

        nn.init.trunc_normal_(self.pos_embed, 0.0, 0.02)
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(mod.weight, 0.0, 0.02)
                if isinstance(mod, nn.Linear) and mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.LayerNorm) and mod.weight is not None:
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
        for mod in self.modules():
            if isinstance(mod, AdaLayerNormContinuous):  # the final adaLN starts as a plain LayerNorm
                nn.init.zeros_(mod.linear.weight)
                nn.init.zeros_(mod.linear.bias)

    def drop_text(self, hidden, pooled, null_hidden, null_pooled, prob: float | None = None):
        """Replace a fraction of the captions by the empty caption's encoding (classifier-free guidance)."""
        p = self.text_drop_prob if prob is None else prob
        drop = (torch.rand(hidden.shape[0], device=hidden.device) < p).to(hidden.dtype)
        hidden = hidden * (1 - drop[:, None, None]) + null_hidden.expand_as(hidden) * drop[:, None, None]
        pooled = pooled * (1 - drop[:, None]) + null_pooled.expand_as(pooled) * drop[:, None]
        return hidden, pooled

    def forward(self, input_tokens, text_hidden, text_pooled, aesthetic_score=None):
        """Training mode masks `input_tokens` itself and returns (logits, masks); eval mode takes them as given."""
        if self.training:
            input_ids, masks = mask_input_tokens(input_tokens, self.mask_token_id, self.mask_schedule)
        else:
            input_ids, masks = input_tokens, None
        x = self.embeddings(input_ids) + self.pos_embed[:, :input_ids.shape[1]]
        context = self.text_embed_proj(text_hidden)
        pooled = text_pooled.reshape(text_pooled.shape[0], -1)
        if self.micro_condition:
            score = aesthetic_score if aesthetic_score is not None else torch.full(
                (pooled.shape[0],), self.sample_aesthetic_score, device=pooled.device)
            pooled = torch.cat([pooled, sinusoidal(score * 100, self.micro_dim).to(pooled.dtype)], dim=-1)
        temb = self.cond_pooled_proj(pooled)
        for blk in self.blocks:
            context, x = blk(x, context, temb)
        return self.lm_head(self.norm(x, temb)), masks

    @torch.no_grad()
    def generate(self, text_hidden, text_pooled, null_hidden, null_pooled, guidance_scale: float = 12.0,
                 randomize_temperature: float = 2.0, num_sample_steps: int = 16, guidance_decay: str = "cosine",
                 guidance_decay_scale_pow: float = 1.0, softmax_temperature_annealing: bool = True,
                 prob_sorting: bool = True, seeds: Sequence[int] | None = None) -> torch.Tensor:
        b, k, v = text_hidden.shape[0], self.image_seq_len, self.target_codebook_size
        device = text_hidden.device
        rng = SampleRNG(seeds, device, batch=b)
        null_hidden, null_pooled = null_hidden.expand_as(text_hidden), null_pooled.expand_as(text_pooled)
        ids = torch.full((b, k), self.mask_token_id, dtype=torch.long, device=device)
        for step in range(num_sample_steps):
            ratio = (step + 1) / num_sample_steps
            temp = randomize_temperature * (1.0 - ratio)
            is_mask = ids == self.mask_token_id
            cfg = guidance_at(step, num_sample_steps, guidance_scale, guidance_decay, guidance_decay_scale_pow)
            if cfg != 0:
                both = self(torch.cat([ids, ids]), torch.cat([text_hidden, null_hidden]),
                            torch.cat([text_pooled, null_pooled]))[0].float()
                logits = both[:b] + (both[:b] - both[b:]) * cfg
            else:
                logits = self(ids, text_hidden, text_pooled)[0].float()
            if softmax_temperature_annealing:
                logits = logits / (0.5 + 0.8 * (1 - ratio))
            # (without annealing the original divides by the Gumbel temperature, which is 0 at the last step;
            # we leave the logits as they are instead)
            sampled = (logits + temp * rng.gumbel((k, v))).argmax(-1)
            sampled_logits = torch.gather(logits, -1, sampled[..., None]).squeeze(-1)
            sampled = torch.where(is_mask, sampled, ids)
            sampled_logits = torch.where(is_mask, sampled_logits, torch.full_like(sampled_logits, math.inf))
            if step == num_sample_steps - 1:
                return sampled
            n = int(max(1, min(int(is_mask.sum(-1).min()) - 1, math.floor(k * masking_ratio(ratio, self.mask_schedule)))))
            confidence = sampled_logits + temp * rng.gumbel((k,)) if prob_sorting else sampled_logits
            cut_off = confidence.sort(dim=-1).values[:, n - 1:n]
            ids = torch.where(confidence <= cut_off, torch.full_like(sampled, self.mask_token_id), sampled)
        return ids
