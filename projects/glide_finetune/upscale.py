"""Upscale a folder of samples x2 / x4 / x8 with SwinIR (the released weights' layout, swinir.py) or bicubic: an
optional post-step after sample.py, as glide-finetune offers a SwinIR upscaler for its 64 px samples.

    python projects/glide_finetune/upscale.py in_dir=results/paper/glide/samples/base out_dir=.../base_swinir_x4 \\
        factor=4 weights=downloads/glide/swinir_classical_x4/001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth scale=paper
    python -m projects.glide_finetune.upscale in_dir=... out_dir=... factor=4 method=bicubic      # the baseline
    python -m projects.glide_finetune.upscale in_dir=data/toy/digits/test out_dir=... factor=4 downscale_first=true \
        method=bicubic        # held-out: originals / 4 -> x4, same names, for evaluate.py psnr against in_dir
    python -m projects.glide_finetune.upscale in_dir=... out_dir=... factor=4 preset=real_x4 \\
        weights=downloads/glide/swinir_real_x4/003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth  # real-world GAN

`preset` '' picks classical_x<factor> (SwinIR-M, DF2K 64 px patches); any SWINIR_PRESETS name works if its scale
equals `factor`. Weights: a release .pth (read with torch.load(weights_only=True), unwrapped from 'params' /
'params_ema') or a .safetensors state dict, loaded strictly; a file of another preset or another scale is an error
naming the file and the first differing keys. Without weights SwinIR refuses to run unless `random_init=true`
(the tiny tests: random weights check shapes and plumbing, not quality), so no table ever shows an untrained SwinIR.

Outputs in out_dir: <stem>.png at factor x the input size (captions <stem>.txt copied, so evaluate.py reads the
prompts), upscale.json (method, preset, weights, counts, seconds per image, skipped files by reason) and
config.yaml. Unreadable images are skipped and counted; existing outputs are kept (a re-run fills the gaps).
`downscale_first=true` first shrinks each image by `factor` (bicubic, antialiased, quantised to 8 bit: what an
8-bit low-resolution file holds), so the outputs have the originals' size and names and shared.evaluate's paired
metrics (psnr, ssim with reference=in_dir) compare SwinIR and bicubic on held-out images.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from shared.config import ConfigError, cli, option, resolve, save_resolved
from shared.io import atomic_path, write_json
from shared.launch import step_device

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
METHODS = ("swinir", "bicubic")


@dataclass
class Config:
    scale: str = "toy"
    in_dir: str = option("", help="folder of images (sample.py's out_dir)")
    out_dir: str = ""
    factor: int = option(4, choices=(2, 3, 4, 8))
    method: str = option("swinir", choices=METHODS)
    preset: str = option("", help="SwinIR preset (swinir.SWINIR_PRESETS); '' = classical_x<factor>")
    arch: str = option("released", choices=("released", "tiny"), help="tiny = swinir.tiny_config (tests)")
    weights: str = option("", help="SwinIR weights: release .pth ('params'/'params_ema') or .safetensors")
    random_init: bool = option(False, help="allow SwinIR without weights (random; tests only)")
    downscale_first: bool = option(False, help="shrink each image by factor first (held-out PSNR against in_dir)")
    tile: int = option(0, min=0, help="> 0: run tiles of this many input pixels (a multiple of the window)")
    batch_size: int = option(8, min=1)
    device: str = option("auto", help="auto = cuda:<LOCAL_RANK> when available")
    use_fp16: bool = False
    seed: int = 0
    threads: int = 0


PRESETS = {"tiny": {"arch": "tiny", "random_init": True, "batch_size": 4, "threads": 1},
           "toy": {},
           "paper": {"batch_size": 16, "use_fp16": True}}


def build(cfg, device: torch.device):
    """The SwinIR network of the config, with its weights loaded (or seeded random weights if allowed)."""
    from projects.glide_finetune.swinir import SWINIR_PRESETS, build_swinir, load_swinir, tiny_config

    name = cfg.preset or f"classical_x{cfg.factor}"
    if cfg.arch == "tiny":
        base = tiny_config(upscale=cfg.factor, **({"upsampler": SWINIR_PRESETS[name].upsampler}
                                                  if name in SWINIR_PRESETS else {}))
    elif name not in SWINIR_PRESETS:
        raise ConfigError(f"preset={name!r}: not a SwinIR preset; known: {', '.join(SWINIR_PRESETS)}")
    else:
        base = SWINIR_PRESETS[name]
    if base.upscale != cfg.factor:
        raise ConfigError(f"preset={name} upscales x{base.upscale} but factor={cfg.factor}")
    torch.manual_seed(cfg.seed)
    model = build_swinir(base)
    if cfg.weights:
        load_swinir(model, cfg.weights)
    elif not cfg.random_init:
        raise ConfigError(f"method=swinir needs weights= (e.g. {base.release_file or 'the release .pth'}: the "
                          f"download rule puts the x4 files in downloads/glide/swinir_classical_x4/ and "
                          f"downloads/glide/swinir_real_x4/); without them use method=bicubic (random_init=true is "
                          f"for tests only)")
    return model.eval().to(device), name


def read_images(folder: Path, skips) -> list[tuple[str, Path, torch.Tensor]]:
    """(stem, file, (3, H, W) float in [0, 1]) of every readable image; the others are recorded in `skips`."""
    from shared.data import BadSample, decode_image, read_file

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"in_dir={folder}: no images there ({', '.join(IMAGE_SUFFIXES)})")
    out = []
    for p in files:
        skips.add_seen()
        try:
            img = decode_image(read_file(p), str(p))
        except BadSample as e:
            skips.record(e.reason, p.name, e.detail)
            continue
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.size[1], img.size[0], 3)
        out.append((p.stem, p, x.permute(2, 0, 1).float() / 255))
    return out


def save_png(x: torch.Tensor, path: Path) -> None:
    from PIL import Image

    arr = (x.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def bicubic(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False).clamp(0, 1)


def downscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, H/factor, W/factor): bicubic with antialiasing, rounded to 8-bit levels."""
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"downscale_first: a {h}x{w} image is not divisible by factor={factor}")
    y = F.interpolate(x, size=(h // factor, w // factor), mode="bicubic", antialias=True, align_corners=False)
    return (y.clamp(0, 1) * 255).round() / 255


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not cfg.in_dir or not cfg.out_dir:
        raise ConfigError("give in_dir=<folder of images> and out_dir=<folder>")
    from shared.data import SkipCounter
    from projects.glide_finetune.swinir import upscale_images

    device = step_device(cfg.device)
    model, preset = build(cfg, device) if cfg.method == "swinir" else (None, "")
    half = cfg.use_fp16 and device.type == "cuda"
    if model is not None and half:
        model.half()
    skips = SkipCounter(log_first=0)
    items = read_images(Path(cfg.in_dir), skips)
    if skips.bad:
        print(f"in_dir: {skips.summary()}\n{skips.listing()}")
    if not items:
        raise ValueError(f"in_dir={cfg.in_dir}: no readable images ({skips.summary()})")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out)
    todo = [it for it in items if not (out / f"{it[0]}.png").is_file()]
    t0 = time.perf_counter()
    # batches of equal-sized images (samples of one run are; a mixed folder still works, batch by size)
    by_size: dict[tuple[int, int], list] = {}
    for it in todo:
        by_size.setdefault(tuple(it[2].shape[-2:]), []).append(it)
    for group in by_size.values():
        for start in range(0, len(group), cfg.batch_size):
            chunk = group[start:start + cfg.batch_size]
            x = torch.stack([t for _, _, t in chunk]).to(device)
            if cfg.downscale_first:
                x = downscale(x, cfg.factor)
            if model is None:
                y = bicubic(x, cfg.factor)
            else:
                y = upscale_images(model, x.half() if half else x, tile=cfg.tile).float()
            for (stem, src, _), img in zip(chunk, y):
                cap = src.with_suffix(".txt")
                if cap.is_file():
                    shutil.copyfile(cap, out / cap.name)
                save_png(img, out / f"{stem}.png")
    seconds = time.perf_counter() - t0
    sizes = sorted({f"{h}x{w}" for h, w in by_size} | {f"{it[2].shape[1]}x{it[2].shape[2]}" for it in items})
    info = {"method": cfg.method, "factor": cfg.factor, "preset": preset, "arch": cfg.arch if model else "",
            "weights": cfg.weights, "random_init": bool(model is not None and not cfg.weights),
            "downscale_first": cfg.downscale_first,
            "in_dir": cfg.in_dir, "images": len(items), "upscaled_now": len(todo), "input_sizes": sizes,
            "seconds": seconds, "seconds_per_image": seconds / max(1, len(todo)), "device": str(device),
            "parameters": sum(t.numel() for t in model.parameters()) if model is not None else 0,
            "skipped": skips.bad, "skip_reasons": dict(sorted(skips.counts.items()))}
    write_json(out / "upscale.json", info)
    print(f"{len(todo)} images upscaled x{cfg.factor} ({cfg.method}{' ' + preset if preset else ''}) in "
          f"{seconds:.1f} s -> {out}" + (f"; skipped {skips.bad}" if skips.bad else ""))
    return info


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
