"""Noised-CLIP score of a folder of samples against their prompts, streamed in batches that fit a memory limit.

    python projects/glide_finetune/clip_score.py images=results/toy/glide/samples/clip_g3 \
        clip=results/toy/glide/clip out=results/toy/glide/eval/clip_g3.json max_memory_mb=256
    python -m projects.glide_finetune.clip_score images=samples/ clip=released scale=paper device=cuda

Each <name>.png is scored against <name>.txt (sample.py writes both) with the noised CLIP at timestep 0 (clean
images): mean cosine and mean exp(logit_scale) * cosine (the quantity CLIP guidance climbs). Images are read one
batch at a time (never the whole folder), resized to the CLIP's input size; unreadable files and images without
a prompt are skipped and counted. The batch is the largest that fits `max_memory_mb` by `per_image_bytes` (the
image encoder's activations at inference: see there), capped by `batch_size`, and on CUDA the measured peak
is reported beside the limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from shared.config import cli, option, resolve
from shared.io import write_json


@dataclass
class Config:
    scale: str = "toy"
    images: str = ""
    clip: str = option("results/toy/glide/clip", help="train_clip.py run folder or 'released'")
    out: str = option("", help="JSON result ('' = print only)")
    batch_size: int = option(256, min=1, help="upper bound; the memory limit may choose fewer")
    max_memory_mb: float = option(512.0, help="activation budget for one batch (0 = no limit)")
    device: str = "cpu"
    threads: int = 0


PRESETS = {"tiny": {"threads": 1}, "toy": {}, "paper": {"clip": "released", "device": "cuda", "max_memory_mb": 4096}}


def per_image_bytes(cfg) -> int:
    """fp32 bytes one image costs at the widest point of an inference forward of the image encoder: the input
    and its resized copy, the residual stream plus q, k, v and the attention output (5 x n_ctx x width), the
    MLP's 4x hidden twice (pre/post GELU), and one head's-worth of attention weights for every head (scaled-dot
    attention materialises them on CPU)."""
    n_ctx = 1 + (cfg.image_size // cfg.patch_size) ** 2
    width = cfg.n_head_image * cfg.n_head_state_image
    floats = 2 * 3 * cfg.image_size ** 2 + 5 * n_ctx * width + 8 * n_ctx * width + cfg.n_head_image * n_ctx ** 2
    return 4 * floats


def batch_size_for(clip_cfg, max_memory_mb: float, cap: int) -> int:
    if max_memory_mb <= 0:
        return cap
    fit = int(max_memory_mb * 2 ** 20 // per_image_bytes(clip_cfg))
    if fit < 1:
        raise ValueError(f"max_memory_mb={max_memory_mb}: one image needs about "
                         f"{per_image_bytes(clip_cfg) / 2 ** 20:.2f} MB in this noised CLIP; raise the limit")
    return min(cap, fit)


def _read(path: Path, size: int) -> torch.Tensor:
    from PIL import Image

    from shared.data import decode_image, read_file

    img = decode_image(read_file(path), str(path))
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3)
    x = x.permute(2, 0, 1).float()[None] / 127.5 - 1
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x[0].clamp(-1, 1)


@torch.no_grad()
def score_folder(clip, folder: str | Path, batch_size: int, device="cpu", skips=None) -> dict:
    """Streamed: sums of cosine over batches of `batch_size` files, one batch in memory at a time."""
    from shared.data import BadSample, SkipCounter
    from shared.metrics.images import image_files

    skips = skips if skips is not None else SkipCounter(log_first=0)
    files = image_files(folder)
    if not files:
        raise FileNotFoundError(f"images={folder}: no images there")
    total, n, batches = 0.0, 0, 0
    peak = 0
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for start in range(0, len(files), batch_size):
        xs, prompts = [], []
        for p in files[start:start + batch_size]:
            skips.add_seen()
            cap = p.with_suffix(".txt")
            if not cap.is_file() or not cap.read_text().strip():
                skips.record("no_prompt", p.name, f"{cap.name} missing or empty")
                continue
            try:
                xs.append(_read(p, clip.image_size))
            except BadSample as e:
                skips.record(e.reason, p.name, e.detail)
                continue
            prompts.append(cap.read_text().strip())
        if not xs:
            continue
        x = torch.stack(xs).to(device)
        z_i = clip.image_embeddings(x, torch.zeros(len(x), dtype=torch.long, device=device))
        cos = (z_i * clip.text_embeddings(prompts)).sum(-1)
        total += float(cos.double().sum())
        n += len(x)
        batches += 1
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    if not n:
        raise ValueError(f"images={folder}: nothing could be scored ({skips.summary()})")
    return {"num_images": n, "clip_cosine": total / n, "clip_score": clip.logit_scale * total / n,
            "batches": batches, "batch_size": batch_size, "skipped": skips.bad,
            "skip_reasons": dict(sorted(skips.counts.items())),
            **({"cuda_peak_mb": round(peak / 2 ** 20, 1)} if peak else {})}


def main(cfg=None):
    from projects.glide_finetune.noised_clip import load_clip

    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not cfg.images:
        raise ValueError("give images=<folder of samples with .txt prompts>")
    clip = load_clip(cfg.clip, device=cfg.device)
    bs = batch_size_for(clip.cfg, cfg.max_memory_mb, cfg.batch_size)
    result = {"images": cfg.images, "clip": cfg.clip, "max_memory_mb": cfg.max_memory_mb,
              "per_image_mb": round(per_image_bytes(clip.cfg) / 2 ** 20, 4),
              **score_folder(clip, cfg.images, bs, cfg.device)}
    if cfg.out:
        write_json(Path(cfg.out), result)
    print(f"noised-CLIP score {result['clip_score']:.3f} (cosine {result['clip_cosine']:.4f}) over "
          f"{result['num_images']} images in {result['batches']} batches of <= {bs}")
    return result


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
