"""RAR sampling speed with and without the KV cache, as a ratio measured in one run.

    python bench/bench_rar_kv_cache.py                                   # ~1 min on a quiet 2-core CPU
    python bench/bench_rar_kv_cache.py size=rar_b tokens=256 batch_size=32 device=cuda rounds=3   # a GPU

One RAR (random weights: speed does not depend on them) generates the same batch of class-conditional samples,
with guidance (the batch doubles for the unconditional half, as when sampling for FID), alternately with the KV
cache (each step feeds one new position and attends to the cached keys/values) and without (each step re-runs the
whole prefix, the cost RAR's cache avoids). Rounds alternate the two so both see the same machine load; the
median of each is kept. Both must produce identical tokens from the same seeds (checked), so the ratio compares
the same computation. Prints images/s of each and uncached/cached time (the speed-up).
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

import torch

from shared.config import cli, resolve


@dataclass
class Config:
    size: str = ""               # '' = the small model below; rar_b..rar_xxl = a released size
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    tokens: int = 64             # image tokens (RAR: 256)
    codebook_size: int = 1024
    batch_size: int = 8
    guidance_scale: float = 4.0
    rounds: int = 3
    device: str = "cpu"
    threads: int = 1


def main(cfg=None):
    from projects.titok_rar.rar import RAR, rar_config

    cfg = resolve(Config, cfg)
    torch.set_num_threads(cfg.threads)
    g = {} if cfg.size else dict(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                                 num_attention_heads=cfg.num_attention_heads,
                                 intermediate_size=4 * cfg.hidden_size)
    torch.manual_seed(0)
    model = RAR(rar_config(cfg.size or None, codebook_size=cfg.codebook_size, image_seq_len=cfg.tokens,
                           dropout=0.0, attn_drop=0.0, **g)).to(cfg.device).eval()
    labels = torch.arange(cfg.batch_size, device=cfg.device) % 1000
    seeds = list(range(cfg.batch_size))

    def run(kv: bool):
        if cfg.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(labels, guidance_scale=cfg.guidance_scale, guidance_scale_pow=1.0, kv_cache=kv,
                             seeds=seeds)
        if cfg.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    run(True)  # warm-up (allocator, kernels)
    cached, plain, same = [], [], True
    for _ in range(cfg.rounds):
        t, a = run(True)
        cached.append(t)
        t, b = run(False)
        plain.append(t)
        same &= bool(torch.equal(a, b))
    tc, tp = statistics.median(cached), statistics.median(plain)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"RAR {cfg.size or 'small'} ({params:.1f}M params), {cfg.tokens} tokens, batch {cfg.batch_size} "
          f"(x2 for guidance), {cfg.device}, {cfg.rounds} rounds")
    print(f"  with KV cache:    {tc:8.3f} s/batch  {cfg.batch_size / tc:8.2f} images/s")
    print(f"  without KV cache: {tp:8.3f} s/batch  {cfg.batch_size / tp:8.2f} images/s")
    print(f"  speed-up (uncached / cached time): {tp / tc:.2f}x; identical tokens: {same}")
    if not same:
        print("error: cached and uncached sampling disagree", file=sys.stderr)
        raise SystemExit(1)
    return {"cached_s": tc, "uncached_s": tp, "ratio": tp / tc}


if __name__ == "__main__":
    cli(main, Config, None, __doc__)
