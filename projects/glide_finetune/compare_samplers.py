"""Compare samplers x step counts on a GLIDE base model: one labelled grid and a Markdown/CSV table per run.

Every (sampler, steps) cell starts from the same per-sample seeds. Per row: model forward calls (NFE; one call
evaluates the doubled [uncond; cond] batch under guidance), wall time per image (after an untimed warm-up), and,
when the digits feature CNN is given (toy), FD against the reference split with its 95% bootstrap interval over
the row's images (shared/metrics/bootstrap.py, as evaluate.py), prompt accuracy, and the row's FD minus the
reference cell's (the first sampler at the most steps: PLMS 100, GLIDE's default) with the 95% interval of that
difference: every cell draws the same prompts from the same seeds, so the two are resampled in pairs and the
difference's interval is far narrower than either FD's (an interval that excludes 0 = a real gap). These are the
numbers behind the claims "Euler is ~15-20% faster than PLMS" and "DPM++ reaches good quality in 20-30 steps
instead of 50-100": the table tests them on this model instead of repeating them.

    python projects/glide_finetune/compare_samplers.py --model results/toy/glide/base \
        --prompt "a red handwritten seven" --steps 50 --guidance-scale 3.0 --output-dir results/toy/glide/compare
    python -m projects.glide_finetune.compare_samplers model=... prompts=data/toy/glide/eval_prompts.txt \
        samplers=[plms,euler,dpm++] steps=10,25,50,100 output_dir=...

Outputs in output_dir: grid.png (rows = samplers, columns = step counts), results.md, results.csv, config.yaml.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shared.config import cli, option, resolve, save_resolved
from shared.io import atomic_path, write_text
from shared.toy.sampler_compare import draw_grid, to_uint8
from projects.glide_finetune.glide_util import load_model
from projects.glide_finetune.sampling import SAMPLERS, generate

COLUMNS = ("sampler", "steps", "nfe", "images", "seconds_per_image", "fd", "fd_ci95", "fd_minus_reference",
           "fd_minus_reference_ci95", "digit_accuracy", "colour_accuracy", "prompt_accuracy")
BOOTSTRAP_RESAMPLES = 200  # evaluate.py's default


@dataclass
class Config:
    scale: str = "toy"
    model: str = option("results/toy/glide/base", help="run folder or weights file of a GLIDE base model")
    tokenizer: str = ""
    prompt: str = ""
    prompts: str = option("", help="text file, one prompt per line (instead of prompt)")
    num_images: int = option(0, help="0 = one per prompt (a single prompt: 8)")
    samplers: list[str] = field(default_factory=lambda: ["plms", "ddim", "euler", "euler_a", "dpm++", "glide"])
    steps: str = option("50", help="comma-separated step counts, e.g. 10,25,50,100")
    guidance_scale: float = 3.0
    sampler_eta: float = 0.0
    dpm_order: int = option(2, choices=(1, 2))
    output_dir: str = "results/toy/glide/compare"
    features: str = option("", help="digits CNN (toy): adds FD and prompt accuracy")
    reference_dir: str = "data/toy/digits/test"
    reference_captions: str = option("", help="prompts file: keep only the reference images with these captions "
                                              "(evaluate.py's reference_captions)")
    grid_per_cell: int = 8
    batch_size: int = 64
    seed: int = 0
    threads: int = 0


PRESETS = {"tiny": {"samplers": ["plms", "euler", "dpm++", "glide"], "steps": "2,3", "grid_per_cell": 2,
                    "threads": 1},
           # 200 images per cell: the 24 cells at 360 took 26 of the toy chain's ~40 min (commit 54706a6)
           "toy": {"steps": "10,25,50,100", "num_images": 200},
           "paper": {"steps": "25,50,100", "batch_size": 16}}


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"steps={text!r}: expected comma-separated integers, e.g. 10,25,50") from None
    if not steps or min(steps) < 1:
        raise ValueError(f"steps={text!r}: expected positive step counts")
    return steps


def markdown(rows: list[dict], title: str) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def reference_features(net, reference_dir: Path, size: int, captions: str = "") -> "numpy.ndarray":
    """Digits-CNN features of the reference images at the samples' size (evaluate.py's bicubic cache), only those
    with a caption in the `captions` prompts file if given. The CNN pools over any size, so 32 px test images
    against 8 px samples gave an FD floor of ~1.7 where evaluate.py, which resizes, reads ~0.6 for the same
    sampler."""
    from projects.glide_finetune.evaluate import captioned_subset, resized_reference
    from shared.toy.dataset import load_arrays

    if captions:
        reference_dir = captioned_subset(reference_dir, Path(captions))
    ref = torch.from_numpy(load_arrays(resized_reference(reference_dir, size))[0]).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return torch.cat([net.features(ref[i:i + 256]) for i in range(0, len(ref), 256)]).numpy()


def _interval(lo: float, hi: float) -> str:
    return f"[{lo:.4g}, {hi:.4g}]"


def frechet_with_interval(feats, ref_feats, seed: int) -> tuple[float, str, "numpy.ndarray"]:
    """FD of `feats` to the reference, its 95% bootstrap interval as "[lo, hi]" (evaluate.py's statistic: the
    samples resampled, the reference fixed) and the resampled FDs (the same draws for every cell: paired)."""
    import numpy as np

    from shared.metrics import frechet_from_features
    from shared.metrics.bootstrap import frechet_bootstrap, resample_indices, summary

    fd = frechet_from_features(feats, ref_feats)
    values = frechet_bootstrap(feats, ref_feats.mean(0), np.cov(ref_feats, rowvar=False),
                               resample_indices(len(feats), BOOTSTRAP_RESAMPLES, seed))
    return fd, _interval(*summary(fd, values, seed)["ci"]), values


def add_reference_difference(rows: list[dict], boot: dict, seed: int) -> None:
    """`fd_minus_reference` of each row (FD minus the first row's: the first sampler at the most steps once sorted
    by main) with the 95% interval of the paired resampled differences."""
    from shared.metrics.bootstrap import summary

    ref = rows[0]
    if (ref["sampler"], ref["steps"]) not in boot:
        return
    for r in rows[1:]:
        key = (r["sampler"], r["steps"])
        if key in boot:
            r["fd_minus_reference"] = r["fd"] - ref["fd"]
            r["fd_minus_reference_ci95"] = _interval(*summary(r["fd_minus_reference"],
                                                              boot[key] - boot[(ref["sampler"], ref["steps"])],
                                                              seed)["ci"])


@torch.no_grad()
def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    unknown = [s for s in cfg.samplers if s not in SAMPLERS]
    if unknown:
        raise ValueError(f"samplers: unknown {', '.join(unknown)}; available: {', '.join(SAMPLERS)}")
    steps = parse_steps(cfg.steps)
    if cfg.prompts:
        prompts = [p.strip() for p in Path(cfg.prompts).read_text().splitlines() if p.strip()]
    elif cfg.prompt:
        prompts = [cfg.prompt]
    else:
        raise ValueError("give prompt=<text> or prompts=<file>")
    n = cfg.num_images or (len(prompts) if len(prompts) > 1 else 8)
    prompts = [prompts[i % len(prompts)] for i in range(n)]
    seeds = [cfg.seed + i for i in range(n)]
    tok = None
    if cfg.tokenizer:
        from projects.glide_finetune.tokenizer import load_tokenizer
        tok = load_tokenizer(cfg.tokenizer)
    model, _, opts = load_model(path=cfg.model, tokenizer=tok)
    size = int(opts["image_size"])
    net = ref_feats = None
    if cfg.features:
        from shared.toy import features as digits_features

        net = digits_features.load(cfg.features)
        ref_feats = reference_features(net, Path(cfg.reference_dir), size, cfg.reference_captions)
    generate(model, opts, model.tokenizer, prompts[:1], seeds=seeds[:1], sampler="ddim", steps=2,
             guidance_scale=cfg.guidance_scale)  # warm-up, untimed

    rows, cells, boot = [], {}, {}
    for name in cfg.samplers:
        for n_steps in steps:
            calls, elapsed, images = [0], 0.0, []
            for start in range(0, n, cfg.batch_size):
                t0 = time.perf_counter()
                x = generate(model, opts, model.tokenizer, prompts[start:start + cfg.batch_size],
                             seeds=seeds[start:start + cfg.batch_size], sampler=name, steps=str(n_steps),
                             guidance_scale=cfg.guidance_scale, sampler_eta=cfg.sampler_eta,
                             dpm_order=cfg.dpm_order, count_nfe=lambda b: calls.__setitem__(0, calls[0] + 1))
                elapsed += time.perf_counter() - t0
                images.append(to_uint8(x))
            images = torch.cat(images)
            row = {"sampler": name, "steps": n_steps, "nfe": calls[0] // -(-n // cfg.batch_size), "images": n,
                   "seconds_per_image": elapsed / n}
            if net is not None:
                from shared.toy.prompt_accuracy import PromptAccuracy

                f = net.features(images.float())
                acc = PromptAccuracy()
                acc.update(net.digit_head(f).numpy(), net.colour_head(f).numpy(), prompts)
                a = acc.compute()
                fd, ci, values = (frechet_with_interval(f.numpy(), ref_feats, cfg.seed) if n > f.shape[1]
                                  else (float("nan"), "", None))
                if values is not None:
                    boot[(name, n_steps)] = values
                row.update(fd=fd, fd_ci95=ci, digit_accuracy=a["digit"], colour_accuracy=a["colour"],
                           prompt_accuracy=a["joint"])
            rows.append(row)
            cells[(name, n_steps)] = images[:cfg.grid_per_cell]
            print(f"{name:>8} {n_steps:>4} steps: {row['nfe']} NFE, {row['seconds_per_image'] * 1000:.1f} ms/image"
                  + (f", FD {row['fd']:.3f}, prompt accuracy {row['prompt_accuracy']:.3f}" if net is not None else ""),
                  flush=True)

    # the reference cell (first sampler, most steps) leads the table; the differences are against it
    reference = next(r for r in rows if (r["sampler"], r["steps"]) == (cfg.samplers[0], max(steps)))
    rows = [reference] + [r for r in rows if r is not reference]
    add_reference_difference(rows, boot, cfg.seed)
    out = Path(cfg.output_dir)
    grid = draw_grid(cells, list(cfg.samplers), steps)
    with atomic_path(out / "grid.png") as tmp:
        grid.save(tmp, format="PNG")
    title = (f"GLIDE samplers on {cfg.model} ({cfg.scale} scale, {size} px, {n} images per row, guidance "
             f"{cfg.guidance_scale}, seconds on {torch.get_num_threads()} CPU threads)")
    write_text(out / "results.md", markdown(rows, title))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows([{k: r.get(k, "") for k in COLUMNS} for r in rows])
    write_text(out / "results.csv", buf.getvalue())
    save_resolved(cfg, out)
    print(f"wrote {out / 'grid.png'}, {out / 'results.md'}, {out / 'results.csv'}")
    return rows


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
