"""Measure what two training options buy on a given architecture: activation checkpointing (memory) and the
text-encoder output cache (speed), as numbers instead of claims.

    python projects/glide_finetune/measure.py arch=toy batch_size=32 out=results/toy/glide/measure.json
    python -m projects.glide_finetune.measure arch=released batch_size=4 device=cuda      (the released 64 px base)

Activation memory is the bytes autograd saves for backward during one training forward (counted with
torch.autograd.graph.saved_tensors_hooks, so it is exact on any device and independent of the allocator),
with and without `set_grad_checkpointing(True)`; the gradients of both are compared. The cache speed-up is the
time of a forward+backward step of the UNet with the text side frozen, computing the text transformer each step
(tokens, mask) against feeding its cached outputs (xf_proj, xf_out), median of `repeats` timed steps.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from shared.config import cli, option, resolve
from shared.io import write_json
from projects.glide_finetune.train import ARCHS
from projects.glide_finetune.unet import create_model


@dataclass
class Config:
    scale: str = "toy"
    arch: str = option("toy", choices=tuple(ARCHS))
    upsampler: bool = False
    batch_size: int = 8
    repeats: int = 5
    device: str = "cpu"
    threads: int = 0
    out: str = ""


PRESETS = {"tiny": {"arch": "tiny", "batch_size": 2, "repeats": 2}, "toy": {}, "paper": {"arch": "released",
                                                                                        "device": "cuda"}}


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while `fn()` runs (distinct storages counted once)."""
    seen, total = set(), [0]

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = torch.device(cfg.device)
    torch.manual_seed(0)
    opts = dict(ARCHS[cfg.arch](cfg.upsampler))
    opts["dropout"] = 0.0  # the same forward with and without checkpointing
    model = create_model(opts).to(dev).train()
    with torch.no_grad():  # trained-like weights: the zero-initialised output convs would hide most of the graph
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.02)
    s, b = int(opts["image_size"]), cfg.batch_size
    x, t = torch.randn(b, 3, s, s, device=dev), torch.randint(0, 1000, (b,), device=dev)
    kw = {"tokens": torch.randint(0, model.n_vocab, (b, model.text_ctx), device=dev),
          "mask": torch.ones(b, model.text_ctx, dtype=torch.bool, device=dev)}
    if model.super_res:
        kw["low_res"] = torch.randn(b, 3, s // 4, s // 4, device=dev)
    result = {"arch": cfg.arch, "variant": "upsample" if cfg.upsampler else "base", "image_size": s, "batch_size": b,
              "params": sum(p.numel() for p in model.parameters()), "device": str(dev),
              "threads": torch.get_num_threads()}
    grads = {}
    for ckpt in (False, True):
        model.set_grad_checkpointing(ckpt)
        model.zero_grad()
        nbytes, out = saved_bytes(lambda: model(x, t, **kw))
        out.square().mean().backward()
        grads[ckpt] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        result[f"saved_activation_mb{'_checkpointed' if ckpt else ''}"] = nbytes / 2 ** 20
    model.set_grad_checkpointing(False)
    result["grads_equal"] = all(torch.allclose(a, c, rtol=1e-4, atol=1e-6) for a, c in zip(grads[False], grads[True]))
    result["activation_memory_ratio"] = result["saved_activation_mb_checkpointed"] / result["saved_activation_mb"]

    for p in model.text_parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        enc = model.encode_text(kw["tokens"], kw["mask"])
    cached = {k: v for k, v in kw.items() if k not in ("tokens", "mask")} | enc

    def step(inputs):
        model.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        model(x, t, **inputs).square().mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    step(kw), step(cached)  # warm-up
    live, hit = [], []
    for _ in range(cfg.repeats):  # interleaved, so both see the same machine load
        live.append(step(kw))
        hit.append(step(cached))
    result.update(step_seconds_text_live=statistics.median(live), step_seconds_text_cached=statistics.median(hit))
    result["text_cache_speedup"] = result["step_seconds_text_live"] / result["step_seconds_text_cached"]
    if cfg.out:
        write_json(cfg.out, result)
    for k, v in result.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    return result


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
