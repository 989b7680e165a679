"""GLIDE's text encoder: a non-causal transformer over GPT-2 BPE tokens (written here; key names as released).

    xf = TextTransformer(n_ctx=128, width=512, layers=16, heads=8)
    out = xf(x)            # x: (B, n_ctx, width) token + position embeddings -> (B, n_ctx, width)

State-dict names follow glide_text2im's xf.py so the released files load: `resblocks.N.attn.c_qkv`, `.attn.c_proj`,
`.ln_1`, `.mlp.c_fc`, `.mlp.c_proj`, `.ln_2`. The fused qkv projection is laid out per head ([q, k, v] of head 0,
then of head 1, ...), which is what the released weights expect; it matters for the numbers, not the shapes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activations' dtype (fp16 statistics overflow)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


class MultiheadAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"xf_width={width} is not divisible by xf_heads={heads}")
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        qkv = self.c_qkv(x).view(b, n, self.heads, -1)  # per head: [q | k | v]
        q, k, v = qkv.transpose(1, 2).chunk(3, dim=-1)  # (B, heads, n, ch)
        # no mask: GLIDE's text transformer attends over the whole context, padding included (padding tokens
        # carry their own learned embedding instead)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.c_proj(out.transpose(1, 2).reshape(b, n, w))


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.c_proj = nn.Linear(width * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm32(width)
        self.mlp = MLP(width)
        self.ln_2 = LayerNorm32(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    def __init__(self, n_ctx: int, width: int, layers: int, heads: int):
        super().__init__()
        self.n_ctx, self.width = n_ctx, width
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and x.requires_grad:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x
