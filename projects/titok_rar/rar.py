"""RAR: randomized autoregressive generation on MaskGIT-VQGAN tokens (256 tokens, 1024 codes), sizes B/L/XL/XXL,
in the released checkpoints' layout (bytedance/1d-tokenizer modeling/rar.py; names/shapes in
../shared/reference/titok_rar_checkpoints.json, `rar_b` .. `rar_xxl`).

    from projects.titok_rar.rar import RAR, rar_config, random_ratio, ARLoss
    model = RAR(rar_config("rar_b"))
    model.set_random_ratio(random_ratio(step, start=125_000, end=187_500))   # 1 -> 0 over epochs 200-300 of 400
    logits, labels = model(tokens, model.preprocess_condition(labels, 0.1), return_labels=True)
    loss = ARLoss()(logits, labels)
    tokens = model.generate(labels, guidance_scale=16.0, randomize_temperature=1.0, guidance_scale_pow=2.75,
                            seeds=[0, 1], kv_cache=True)

Layout: [cls, class token, t_0 .. t_{N-1}] with causal attention; the output at the class token predicts the first
token. adaLN conditioning (DiT, zero-initialised) on the class embedding plus a learned per-position
"timestep" embedding. Training permutes the image tokens with probability `random_ratio` per sample; the
positional embedding of a token follows it through the permutation, and the *target-aware* positional embedding
added at position i is that of the token to be predicted next (nothing at the last position). Sampling is raster
order with a KV cache; the guidance scale of token i of N is (g-1)(1-cos((i/N)^p pi))/2+1 (MDT's power-cosine,
`cfg_schedule`), logits are divided by `randomize_temperature` before the multinomial draw.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from projects.titok_rar.generator_common import SampleRNG, categorical, power_cosine

# Sizes and sampling settings of the released RAR models: README_RAR.md of bytedance/1d-tokenizer (the
# sample_imagenet_rar.py commands); FIDs are the RAR paper's (arXiv:2411.00776, Table 3), also in that README.
RAR_SIZES = {
    "rar_b": dict(hidden_size=768, num_hidden_layers=24, num_attention_heads=16, intermediate_size=3072,
                  randomize_temperature=1.0, guidance_scale=16.0, guidance_scale_pow=2.75, paper_fid=1.95),
    "rar_l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  randomize_temperature=1.02, guidance_scale=15.5, guidance_scale_pow=2.5, paper_fid=1.70),
    "rar_xl": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120,
                   randomize_temperature=1.02, guidance_scale=6.9, guidance_scale_pow=1.5, paper_fid=1.50),
    "rar_xxl": dict(hidden_size=1408, num_hidden_layers=40, num_attention_heads=16, intermediate_size=6144,
                    randomize_temperature=1.02, guidance_scale=8.0, guidance_scale_pow=1.2, paper_fid=1.48),
}

# configs/training/generator/rar.yaml, model.generator (RAR-B)
GENERATOR_DEFAULTS = dict(hidden_size=768, num_hidden_layers=24, num_attention_heads=16, intermediate_size=3072,
                          dropout=0.1, attn_drop=0.1, class_label_dropout=0.1, image_seq_len=256,
                          condition_num_classes=1000, randomize_temperature=1.0, guidance_scale=16.0,
                          guidance_scale_pow=2.75, use_checkpoint=False, randomness_anneal_start=125_000,
                          randomness_anneal_end=187_500)
POS_EXTRA = 1024  # pos_embed / target_aware_pos_embed have image_seq_len + 1024 rows in the release
STEP_EXTRA = 100  # timesteps_embeddings has image_seq_len + 100 rows


def rar_config(name: str | None = None, codebook_size: int = 1024, **generator: Any) -> DictConfig:
    """Nested config `{model: {vq_model: {codebook_size}, generator: {...}}}` of a released size (or rar.yaml's
    defaults), `generator` keys overriding."""
    if name is not None and name not in RAR_SIZES:
        raise KeyError(f"unknown RAR size {name!r}; released: {', '.join(RAR_SIZES)}")
    size = {k: v for k, v in (RAR_SIZES[name] if name else {}).items() if k != "paper_fid"}
    g = {**GENERATOR_DEFAULTS, **size, **generator}
    unknown = set(g) - set(GENERATOR_DEFAULTS)
    if unknown:
        raise KeyError(f"model.generator: unknown keys {sorted(unknown)}; known: {sorted(GENERATOR_DEFAULTS)}")
    return OmegaConf.create({"model": {"vq_model": {"codebook_size": int(codebook_size)}, "generator": g}})


def random_ratio(step: int, start: int, end: int) -> float:
    """Probability of a random order at optimizer step `step`: 1 before `start`, 0 from `end`, linear between
    (RAR's randomness annealing; start == end is a hard switch: 0/0 = raster from the start, N/N = random)."""
    if step < start:
        return 1.0
    if step >= end:
        return 0.0
    return 1.0 - (step - start) / (end - start)


def cfg_schedule(num_tokens: int, guidance_scale: float, power: float) -> list[float]:
    """The guidance scale RAR's sampler uses for each token (float32, as it computes them)."""
    return [power_cosine(i, num_tokens, guidance_scale, power, dtype=torch.float32) for i in range(num_tokens)]


def sampling_kwargs(config) -> dict:
    g = config.model.generator
    return dict(guidance_scale=float(g.guidance_scale), guidance_scale_pow=float(g.guidance_scale_pow),
                randomize_temperature=float(g.randomize_temperature))


class ARLoss(nn.Module):
    """Next-token cross-entropy: output i predicts label i (the last output predicts nothing)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor):
        logits = logits[:, :-1].float()
        loss = F.cross_entropy(logits.transpose(1, 2), labels)
        correct = (logits.argmax(-1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "correct_tokens": correct.detach()}


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head attention with LayerNorm'd queries and keys and an optional KV cache for sampling."""

    def __init__(self, dim: int, heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.kv_cache = False
        self.k_cache = self.v_cache = None

    def reset_kv_cache(self):
        self.k_cache = self.v_cache = None

    def forward(self, x, attn_mask=None):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.kv_cache:
            if self.k_cache is not None:
                k, v = torch.cat([self.k_cache, k], dim=-2), torch.cat([self.v_cache, v], dim=-2)
            self.k_cache, self.v_cache = k, v
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop1, self.drop2 = nn.Dropout(drop), nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm block with adaLN modulation (shift/scale/gate for attention and MLP) from the condition."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden, drop)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, bias=True))

    def forward(self, x, attn_mask=None, c=None):
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_a * self.attn(modulate(self.norm1(x), shift_a, scale_a), attn_mask=attn_mask)
        return x + gate_m * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        scale, shift = self.adaLN_modulation(c).chunk(2, dim=-1)  # (scale, shift): the release's order
        return modulate(self.norm_final(x), shift, scale)


class RAR(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config = config if isinstance(config, DictConfig) else OmegaConf.create(dict(config))
        g = config.model.generator
        d = int(g.hidden_size)
        self.image_seq_len = n = int(g.image_seq_len)
        self.target_codebook_size = int(config.model.vq_model.codebook_size)
        self.condition_num_classes = int(g.condition_num_classes)
        self.none_condition_id = self.condition_num_classes + self.target_codebook_size + 1
        self.use_checkpoint = bool(g.get("use_checkpoint", False))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList([Block(d, int(g.num_attention_heads), int(g.intermediate_size),
                                           float(g.dropout), float(g.attn_drop))
                                     for _ in range(int(g.num_hidden_layers))])
        self.embeddings = nn.Embedding(self.target_codebook_size + 1 + self.condition_num_classes + 1, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, n + POS_EXTRA, d))
        self.target_aware_pos_embed = nn.Parameter(torch.zeros(1, n + POS_EXTRA, d))
        self.timesteps_embeddings = nn.Parameter(torch.zeros(1, n + STEP_EXTRA, d))
        self.adaln_before_head = FinalLayer(d)
        self.lm_head = nn.Linear(d, self.target_codebook_size, bias=True)
        self.register_buffer("attn_mask", torch.full((n + 2, n + 2), float("-inf")).triu(1), persistent=False)
        self.random_ratio = 0.0
        if not self.cls_token.is_meta:
            self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, 0.0, 0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.pos_embed, self.target_aware_pos_embed, self.timesteps_embeddings):
            nn.init.trunc_normal_(p, 0.0, 0.02)
        for mod in [self.adaln_before_head, *self.blocks]:  # adaLN-zero: every block starts as the identity
            nn.init.zeros_(mod.adaLN_modulation[-1].weight)
            nn.init.zeros_(mod.adaLN_modulation[-1].bias)

    # ---- conditioning and orders ------------------------------------------------------------------------
    def preprocess_condition(self, condition: torch.Tensor, cond_drop_prob: float = 0.0) -> torch.Tensor:
        condition = condition.long()
        if condition.numel() and (condition.min() < 0 or condition.max() >= self.condition_num_classes):
            raise ValueError(f"class ids must lie in [0, {self.condition_num_classes}); got "
                             f"[{int(condition.min())}, {int(condition.max())}]")
        drop = torch.rand(condition.shape, device=condition.device) < cond_drop_prob
        tokens = condition + self.target_codebook_size + 1
        return torch.where(drop, torch.full_like(tokens, self.none_condition_id), tokens)

    def get_none_condition(self, condition: torch.Tensor) -> torch.Tensor:
        return torch.full_like(condition, self.none_condition_id)

    def set_random_ratio(self, ratio: float) -> None:
        self.random_ratio = float(ratio)

    def sample_orders(self, x: torch.Tensor) -> torch.Tensor:
        """Per sample: a random permutation with probability random_ratio, else raster order."""
        b, n = x.shape[0], self.image_seq_len
        raster = torch.arange(n, device=x.device).expand(b, n)
        if self.random_ratio <= 0:
            return raster.clone()
        perms = torch.rand(b, n, device=x.device).argsort(-1)
        use = (torch.rand(b, device=x.device) < self.random_ratio)[:, None]
        return torch.where(use, perms, raster)

    @staticmethod
    def shuffle(x: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, 1, orders.view(*orders.shape, *([1] * (x.dim() - 2))).expand(*orders.shape, *x.shape[2:]))

    # ---- KV cache -------------------------------------------------------------------------------------
    def enable_kv_cache(self):
        for blk in self.blocks:
            blk.attn.kv_cache = True
            blk.attn.reset_kv_cache()

    def disable_kv_cache(self):
        for blk in self.blocks:
            blk.attn.kv_cache = False
            blk.attn.reset_kv_cache()

    # ---- forward ---------------------------------------------------------------------------------------
    def forward(self, input_ids, condition, return_labels: bool = False):
        """Training: `condition` are class *tokens* (preprocess_condition, with label dropout)."""
        return self.forward_fn(input_ids, condition, return_labels, self.sample_orders(input_ids))

    def forward_fn(self, input_ids, condition, return_labels=False, orders=None, is_sampling=False):
        b = input_ids.shape[0]
        if orders is None:
            orders = torch.arange(self.image_seq_len, device=input_ids.device).expand(b, -1)
        labels = input_ids
        ids = torch.cat([condition.view(b, -1), input_ids.view(b, -1)], dim=1)
        emb = self.embeddings(ids)
        cond = emb[:, 0]
        n = self.image_seq_len
        pos = torch.cat([self.pos_embed[:, :2].expand(b, -1, -1),
                         self.shuffle(self.pos_embed[:, 2:2 + n].expand(b, -1, -1), orders)], dim=1)
        target = self.shuffle(self.target_aware_pos_embed[:, 2:2 + n].expand(b, -1, -1), orders)
        if not is_sampling:  # training sees the tokens in their (possibly random) order
            labels = self.shuffle(labels, orders)
            emb = torch.cat([emb[:, :1], self.shuffle(emb[:, 1:], orders)], dim=1)
        x = torch.cat([self.cls_token.expand(b, -1, -1), emb], dim=1)
        length = x.shape[1]
        x = x + pos[:, :length]
        # position i carries the position of the token it predicts: cls -> nothing, class token -> order[0], ...
        zero = torch.zeros_like(x[:, :1])
        x = x + torch.cat([zero, target, zero], dim=1)[:, :length]
        attn_mask = self.attn_mask[:length, :length]
        c = cond[:, None] + self.timesteps_embeddings[:, :length]
        cached = self.blocks[0].attn.kv_cache
        if cached and self.blocks[0].attn.k_cache is not None:  # only the newest position is new
            x, c, attn_mask = x[:, -1:], c[:, -1:], None
        for blk in self.blocks:
            if self.use_checkpoint and self.training:
                x = torch.utils.checkpoint.checkpoint(blk, x, attn_mask, c, use_reentrant=False)
            else:
                x = blk(x, attn_mask=attn_mask, c=c)
        if not cached:
            x, c = x[:, 1:], c[:, 1:]  # drop the cls position: output j predicts token j
        logits = self.lm_head(self.adaln_before_head(x, c))
        return (logits, labels) if return_labels else logits

    # ---- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, condition: torch.Tensor, guidance_scale: float = 16.0, randomize_temperature: float = 1.0,
                 guidance_scale_pow: float = 2.75, kv_cache: bool = True, seeds: Sequence[int] | None = None,
                 return_logits: bool = False):
        """Class ids (B,) -> tokens (B, N) in raster order. guidance_scale 0 = no guidance (one pass)."""
        cond = self.preprocess_condition(condition, 0.0)
        b, n = cond.shape[0], self.image_seq_len
        rng = SampleRNG(seeds, cond.device, batch=b)
        ids = torch.zeros((b, 0), dtype=torch.long, device=cond.device)
        scales = cfg_schedule(n, guidance_scale, guidance_scale_pow)
        all_logits = []
        if kv_cache:
            self.enable_kv_cache()
        try:
            for step in range(n):
                if guidance_scale != 0:
                    out = self.forward_fn(torch.cat([ids, ids]), torch.cat([cond, self.get_none_condition(cond)]),
                                          is_sampling=True)[:, -1].float()
                    c_l, u_l = out[:b], out[b:]
                    logits = u_l + (c_l - u_l) * scales[step]
                else:
                    logits = self.forward_fn(ids, cond, is_sampling=True)[:, -1].float()
                if return_logits:
                    all_logits.append(logits)
                probs = torch.softmax(logits / randomize_temperature, dim=-1)
                ids = torch.cat([ids, categorical(probs, rng.uniform(())).view(b, 1)], dim=1)
        finally:
            self.disable_kv_cache()
        return (ids, torch.stack(all_logits, 1)) if return_logits else ids


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
