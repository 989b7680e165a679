"""MaskGIT generators on TiTok tokens: `ImageBert` (a BERT encoder) and `UViTBert` (U-ViT blocks with long skips),
in the released checkpoints' layout (bytedance/1d-tokenizer modeling/maskgit.py; names/shapes in
../shared/reference/titok_rar_checkpoints.json, `generator:titok_{l32,b64,s128}.yaml`).

    from projects.titok_rar.maskgit import build_maskgit, maskgit_config, maskgit_schedule
    cfg = maskgit_config("titok_l32")                       # the released generator's config (nested, OmegaConf)
    model = build_maskgit(cfg)                              # ImageBert (model_type ViT) or UViTBert (UViT)
    logits = model(masked_tokens, labels, cond_drop_prob=0.1)   # (B, K, codebook)
    tokens = model.generate(labels, seeds=[0, 1], **sampling_kwargs(cfg))

Training masks round(K * arccos(t)/(pi/2)) tokens, t ~ U(0,1) (generator_common.mask_input_tokens) and uses
MLMLoss (label smoothing 0.1, unmasked tokens weighted 0.1). Sampling starts from all-mask and, at step s of N
(ratio r = (s+1)/N), samples every masked position with Gumbel noise of temperature T*(1-r) (T =
randomize_temperature), keeps the sampled tokens, and re-masks the floor(K * arccos(r)/(pi/2)) least confident
(clamped to [1, masked-1]; nothing at the last step), confidence = logit + Gumbel noise at the same temperature.
Guidance: constant g; linear (g * s/N, MUSE); power-cosine (MDT: (g-1)(1-cos((s/N)^p pi))/2 + 1). The exact
per-step numbers are `maskgit_schedule(...)`; tests hold them against the reference file's `schedules`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from projects.titok_rar.generator_common import SampleRNG, masking_ratio, power_cosine

GUIDANCE_DECAYS = ("constant", "linear", "power-cosine")

# The released generators' settings: model sizes from configs/training/generator/maskgit.yaml (TiTok-B-64; L-32
# uses the same ViT), sampling values from configs/infer/titok_{l32,b64,s128}.yaml of bytedance/1d-tokenizer
# (as recorded in the reference file); guidance_scale_pow 3.0 is ImageBert.generate's default.
_VIT = dict(model_type="ViT", hidden_size=768, num_hidden_layers=24, num_attention_heads=16, intermediate_size=3072)
_UVIT = dict(model_type="UViT", hidden_size=1024, num_hidden_layers=20, num_attention_heads=16, intermediate_size=4096)
RELEASED = {
    "titok_l32": dict(**_VIT, num_steps=8, image_seq_len=32, randomize_temperature=9.5, guidance_scale=4.5,
                      guidance_decay="linear"),
    "titok_b64": dict(**_VIT, num_steps=8, image_seq_len=64, randomize_temperature=11.0, guidance_scale=3.0,
                      guidance_decay="linear"),
    "titok_s128": dict(**_UVIT, num_steps=64, image_seq_len=128, randomize_temperature=2.8, guidance_scale=6.9,
                       guidance_decay="power-cosine"),
}

GENERATOR_DEFAULTS = dict(model_type="ViT", hidden_size=768, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=3072, dropout=0.1, attn_drop=0.1, num_steps=8, class_label_dropout=0.1,
                          image_seq_len=32, condition_num_classes=1000, randomize_temperature=1.0,
                          guidance_scale=4.5, guidance_decay="constant", guidance_scale_pow=3.0,
                          softmax_temperature_annealing=False)


def maskgit_config(name: str | None = None, codebook_size: int = 4096, **generator: Any) -> DictConfig:
    """Nested config `{model: {vq_model: {codebook_size}, generator: {...}}}`: a released one by name, or the
    defaults, with `generator` keys overriding."""
    if name is not None and name not in RELEASED:
        raise KeyError(f"unknown MaskGIT generator {name!r}; released: {', '.join(RELEASED)}")
    g = {**GENERATOR_DEFAULTS, **(RELEASED[name] if name else {}), **generator}
    unknown = set(g) - set(GENERATOR_DEFAULTS)
    if unknown:
        raise KeyError(f"model.generator: unknown keys {sorted(unknown)}; known: {sorted(GENERATOR_DEFAULTS)}")
    return OmegaConf.create({"model": {"vq_model": {"codebook_size": int(codebook_size)}, "generator": g}})


def _cfg(config: Mapping | DictConfig) -> DictConfig:
    return config if isinstance(config, DictConfig) else OmegaConf.create(dict(config))


def sampling_kwargs(config) -> dict:
    """generate() keyword arguments from a config's model.generator section."""
    g = _cfg(config).model.generator
    return dict(guidance_scale=float(g.guidance_scale), guidance_decay=str(g.guidance_decay),
                guidance_scale_pow=float(g.get("guidance_scale_pow", 3.0)),
                randomize_temperature=float(g.randomize_temperature), num_sample_steps=int(g.num_steps),
                softmax_temperature_annealing=bool(g.get("softmax_temperature_annealing", False)))


def maskgit_schedule(seq_len: int, num_steps: int, guidance_scale: float, guidance_decay: str,
                     randomize_temperature: float, guidance_scale_pow: float = 3.0) -> list[dict]:
    """Per step: the guidance scale used, the Gumbel temperature, the softmax temperature (when annealing), how
    many tokens are masked before the step and how many it re-masks. generate() reads these very numbers."""
    if guidance_decay not in GUIDANCE_DECAYS:
        raise ValueError(f"guidance_decay={guidance_decay!r}; expected one of {', '.join(GUIDANCE_DECAYS)}")
    rows, masked = [], seq_len
    cfg = guidance_scale if guidance_decay == "constant" else 0.0
    for step in range(num_steps):
        ratio = (step + 1) / num_steps
        if guidance_decay == "power-cosine":
            cfg = power_cosine(step, num_steps, guidance_scale, guidance_scale_pow)
        # floor(K * arccos(r) / (pi/2)) in float64, as numpy computes it in the released sampler
        target = math.floor(seq_len * (np.arccos(ratio) / (math.pi * 0.5)))
        remask = 0 if step == num_steps - 1 else int(max(1, min(masked - 1, target)))
        rows.append({"step": step, "cfg_used": float(cfg), "gumbel_temp": randomize_temperature * (1.0 - ratio),
                     "softmax_temp_if_annealing": 0.5 + 0.8 * (1 - ratio), "masked_before": masked,
                     "remask_after": remask})
        masked = remask
        if guidance_decay == "linear":
            cfg = ratio * guidance_scale  # MUSE: the scale grows with the fraction of tokens already decided
    return rows


class MaskedGenerator(nn.Module):
    """Token layout, conditioning and the iterative decoder, shared by ImageBert and UViTBert."""

    def __init__(self, config):
        super().__init__()
        self.config = config = _cfg(config)
        g = config.model.generator
        self.target_codebook_size = int(config.model.vq_model.codebook_size)
        self.condition_num_classes = int(g.condition_num_classes)
        self.image_seq_len = int(g.image_seq_len)
        self.mask_token_id = self.target_codebook_size
        self.none_condition_id = self.target_codebook_size + 1 + self.condition_num_classes
        self.vocab_size = self.target_codebook_size + self.condition_num_classes + 2
        self.hidden_size = int(g.hidden_size)

    def condition_tokens(self, condition: torch.Tensor, cond_drop_prob: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Class ids -> class tokens; a fraction `cond_drop_prob` (or a per-sample bool mask) -> the null token."""
        condition = condition.long()
        if condition.numel() and (condition.min() < 0 or condition.max() >= self.condition_num_classes):
            raise ValueError(f"class ids must lie in [0, {self.condition_num_classes}); got "
                             f"[{int(condition.min())}, {int(condition.max())}]")
        if torch.is_tensor(cond_drop_prob) and cond_drop_prob.dtype == torch.bool:
            drop = cond_drop_prob.to(condition.device)
        else:
            drop = torch.rand(condition.shape, device=condition.device) < float(cond_drop_prob)
        tokens = condition + self.target_codebook_size + 1
        return torch.where(drop, torch.full_like(tokens, self.none_condition_id), tokens)

    def forward(self, input_ids: torch.Tensor, condition: torch.Tensor,
                cond_drop_prob: float | torch.Tensor = 0.1) -> torch.Tensor:
        """Logits (B, K, codebook) for image tokens `input_ids` (B, K) (mask token = codebook size)."""
        cond = self.condition_tokens(condition, cond_drop_prob)
        return self._backbone(torch.cat([cond.view(-1, 1), input_ids.view(input_ids.shape[0], -1)], dim=1))

    def _backbone(self, ids: torch.Tensor) -> torch.Tensor:  # (B, 1+K) -> (B, K, codebook)
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, condition: torch.Tensor, guidance_scale: float = 3.0, guidance_decay: str = "constant",
                 guidance_scale_pow: float = 3.0, randomize_temperature: float = 4.5,
                 softmax_temperature_annealing: bool = False, num_sample_steps: int = 8,
                 seeds: Sequence[int] | None = None, trace: list | None = None) -> torch.Tensor:
        """Class ids (B,) -> tokens (B, K). `seeds`: one per sample (SampleRNG); `trace`: a list that receives one
        dict per step (masked_before, remask_after, cfg_used, gumbel_temp), for tests and logs."""
        device = condition.device
        b, k, v = condition.shape[0], self.image_seq_len, self.target_codebook_size
        sched = maskgit_schedule(k, num_sample_steps, guidance_scale, guidance_decay, randomize_temperature,
                                 guidance_scale_pow)
        rng = SampleRNG(seeds, device, batch=b)
        ids = torch.full((b, k), self.mask_token_id, device=device, dtype=torch.long)
        keep = torch.zeros(b, dtype=torch.bool, device=device)
        for row in sched:
            cfg, temp = row["cfg_used"], row["gumbel_temp"]
            is_mask = ids == self.mask_token_id
            if cfg != 0:
                both = self(torch.cat([ids, ids]), torch.cat([condition, condition]),
                            cond_drop_prob=torch.cat([keep, ~keep]))
                cond_logits, uncond_logits = both[:b].float(), both[b:].float()
                if guidance_decay == "power-cosine":  # MDT's form: the scale is relative to the unconditional
                    logits = uncond_logits + (cond_logits - uncond_logits) * cfg
                else:  # MUSE's form: cfg = 0 is plain conditional sampling
                    logits = cond_logits + (cond_logits - uncond_logits) * cfg
            else:
                logits = self(ids, condition, cond_drop_prob=0.0).float()
            if softmax_temperature_annealing:
                logits = logits / row["softmax_temp_if_annealing"]
            sampled = (logits + temp * rng.gumbel((k, v))).argmax(-1)
            sampled_logits = torch.gather(logits, -1, sampled[..., None]).squeeze(-1)
            sampled = torch.where(is_mask, sampled, ids)
            sampled_logits = torch.where(is_mask, sampled_logits, torch.full_like(sampled_logits, math.inf))
            if trace is not None:
                trace.append({**row, "masked_before_seen": is_mask.sum(-1).tolist()})
            n = row["remask_after"]
            if n == 0:
                ids = sampled
                break
            confidence = sampled_logits + temp * rng.gumbel((k,))
            cut_off = confidence.sort(dim=-1).values[:, n - 1:n]
            ids = torch.where(confidence <= cut_off, torch.full_like(sampled, self.mask_token_id), sampled)
        return ids


class ImageBert(MaskedGenerator):
    """A HuggingFace BertModel over [class token, K image tokens] with a linear head to the codebook; the
    state dict is `model.embeddings.*`, `model.encoder.layer.*`, `model.lm_head.*` as released."""

    def __init__(self, config):
        super().__init__(config)
        from transformers import BertConfig, BertModel

        g = self.config.model.generator
        self.model = BertModel(BertConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=int(g.num_hidden_layers),
            num_attention_heads=int(g.num_attention_heads), intermediate_size=int(g.intermediate_size),
            hidden_act="gelu", hidden_dropout_prob=float(g.dropout), attention_probs_dropout_prob=float(g.attn_drop),
            max_position_embeddings=self.image_seq_len + 1, initializer_range=0.02, layer_norm_eps=1e-12,
            pad_token_id=None, position_embedding_type="absolute"), add_pooling_layer=False)
        self.model.lm_head = nn.Linear(self.hidden_size, self.target_codebook_size, bias=True)
        self.model.post_init()

    def _backbone(self, ids):
        hidden = self.model(input_ids=ids).last_hidden_state
        return self.model.lm_head(hidden[:, 1:])


class _UViTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)  # U-ViT: qkv_bias=False (no qkv.bias in the release)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class _UViTMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class UViTBlock(nn.Module):
    """Pre-norm transformer block; with `skip`, the long skip from the matching input block is concatenated and
    projected back (skip_linear) before the block, as in U-ViT."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, skip: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _UViTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _UViTMlp(dim, mlp_hidden)
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x, skip=None):
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViTBert(MaskedGenerator):
    """U-ViT over [class token, K tokens]: depth//2 input blocks, a middle block, depth//2 output blocks each fed
    the matching input block's output. (The released U-ViT blocks have no dropout; dropout/attn_drop apply to
    ImageBert only.)"""

    def __init__(self, config):
        super().__init__(config)
        g = self.config.model.generator
        d, heads, depth, mlp = self.hidden_size, int(g.num_attention_heads), int(g.num_hidden_layers), \
            int(g.intermediate_size)
        self.embeddings = nn.Embedding(self.vocab_size, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.image_seq_len + 1, d))
        self.in_blocks = nn.ModuleList([UViTBlock(d, heads, mlp) for _ in range(depth // 2)])
        self.mid_block = UViTBlock(d, heads, mlp)
        self.out_blocks = nn.ModuleList([UViTBlock(d, heads, mlp, skip=True) for _ in range(depth // 2)])
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, self.target_codebook_size, bias=True)
        if not self.pos_embed.is_meta:
            nn.init.trunc_normal_(self.pos_embed, 0.0, 0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if any(p.is_meta for p in m.parameters(recurse=False)):  # meta-device builds: shapes only
            return
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _backbone(self, ids):
        x = self.embeddings(ids)
        x = x + self.pos_embed[:, :x.shape[1]]
        skips = []
        for blk in self.in_blocks:
            x = blk(x)
            skips.append(x)
        x = self.mid_block(x)
        for blk in self.out_blocks:
            x = blk(x, skips.pop())
        return self.lm_head(self.norm(x)[:, 1:])


MASKGIT_MODELS = {"ViT": ImageBert, "UViT": UViTBert}  # model.generator.model_type -> class


def build_maskgit(config) -> MaskedGenerator:
    config = _cfg(config)
    kind = str(config.model.generator.get("model_type", "ViT"))
    if kind not in MASKGIT_MODELS:
        raise ValueError(f"model.generator.model_type={kind!r}; expected one of {', '.join(MASKGIT_MODELS)}")
    return MASKGIT_MODELS[kind](config)
