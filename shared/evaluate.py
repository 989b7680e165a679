"""Evaluate a folder of images: FD/FID, KID, precision/recall, Inception Score, prompt accuracy, CLIP score,
PSNR/SSIM, codebooks.

Writes ONE JSON per (experiment, checkpoint, sampler, steps):

    {experiment, checkpoint, sampler, steps, scale, images, reference, resolution, num_images_found,
     num_images_read, num_unreadable, unreadable: ["path: reason (detail)", ...], skip_reasons: {reason: n},
     metrics: [{metric, value, num_samples,
     reference_id, extractor_id, ...extras}, ...], info: {method, paper, project, nfe, parameters,
     seconds_per_image, train_steps: what the leaderboard shows, where given (method=, paper=, info=)}}

fd/fid and prompt_accuracy (joint, _digit, _colour) entries carry a 95% bootstrap interval over the evaluated
images (`bootstrap` resamples, default 200, seed `bootstrap_seed`; off at paper scale): ci [lo, hi], ci_level,
bootstrap_se, bootstrap_bias, bootstrap_resamples, bootstrap_seed, bootstrap_values (shared/metrics/bootstrap.py).

`reference` is an image folder (its statistics are cached in `reference_stats`, default
results/<scale>/reference_stats/<folder>-<hash>-<extractor>.npz, and reused while the folder is unchanged) or a
cached `.npz`. Images: PNG/JPG/... in `images` (recursive), prompts from `<stem>.txt` or metadata.jsonl.
Unreadable images are skipped and counted. Metric names: see shared/metrics/registry.py (fd, fid, rfid, kid,
precision_recall (entries precision, recall), inception_score, prompt_accuracy, clip_score, psnr, ssim,
ssim_reflect, codebook_usage, codebook_perplexity).

    python shared/evaluate.py images=data/toy/digits/test reference=data/toy/digits/train
        extractor=digits:results/toy/digits_features/features.safetensors metrics=[fd,kid,prompt_accuracy]
        experiment=real_test_vs_train checkpoint=none sampler=none steps=0   (one command line)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.config import cli, option, resolve, save_resolved
from shared.io import write_json
from shared.metrics import reference as reference_mod
from shared.metrics.extractors import build_extractor
from shared.metrics.images import ReadReport, iter_batches, image_files, read_captions, set_id
from shared.metrics.registry import METRICS, Context, needs_of
from shared.metrics.stats import ReferenceStats


@dataclass
class Config:
    images: str = option("", help="folder of images to evaluate (recursive)")
    reference: str = option("", help="reference image folder, or cached statistics .npz")
    reference_stats: str = option(
        "", help="cache for a reference folder's statistics; '' = results/<scale>/reference_stats/")
    extractor: str = option("digits:results/toy/digits_features/features.safetensors",
                            help="<name>:<path>, name in digits, inception")
    metrics: list[str] = option(default_factory=lambda: ["fd", "kid", "prompt_accuracy"],
                                help="metric names (shared/metrics/registry.py)")
    experiment: str = option("", help="experiment name (a table row)")
    checkpoint: str = option("none", help="checkpoint evaluated (a table row)")
    sampler: str = option("none", help="sampler used (a table row)")
    steps: int = option(0, help="sampling steps (a table row)")
    scale: str = option("toy", help="tiny | toy | paper; recorded in the JSON and checked by tables.py")
    out: str = option(
        "", help="output JSON; '' = results/<scale>/eval/<experiment>/<checkpoint>__<sampler>__<steps>.json")
    batch_size: int = 64
    device: str = "cpu"
    clip: str = option("", help="local CLIP folder (transformers format) for clip_score")
    clip_prefix: str = option("", help="text put before every caption for clip_score, e.g. 'A photo depicts '")
    codes: str = option("", help=".npy/.npz of token indices for codebook_usage / codebook_perplexity")
    method: str = option("", help="leaderboard: the method's name (default: experiment)")
    paper: str = option("", help="leaderboard: the paper the method comes from")
    project: str = option("", help="leaderboard: the project folder (default: from the output path)")
    info: list[str] = option(default_factory=list,
                             help="leaderboard: JSON files (a sampling step's samples.json, a training metrics.json) "
                                  "whose keys nfe, parameters, seconds_per_image, train_steps are copied into `info`; "
                                  "<images>/samples.json is read first by itself")
    codebook_size: int = option(0, help="codebook size for the codebook metrics")
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_max_features: int = option(10000, help="features kept per set (uniform random subset) for KID")
    is_splits: int = option(10, help="Inception Score splits")
    pr_k: int = option(3, help="precision_recall: k of the k-th nearest neighbour radii (ADM's evaluator: 3)")
    pr_max_samples: int = option(50000, help="precision_recall: evaluated features kept (uniform random subset)")
    check_resolution: bool = option(True, help="refuse a reference whose images have another resolution")
    seed: int = 0
    bootstrap: int = option(200, help="resamples (with replacement) of the evaluated samples for the 95% intervals "
                                      "of fd/fid and the prompt accuracies (shared/metrics/bootstrap.py); 0 = none")
    bootstrap_seed: int = option(0, help="seed of the bootstrap's resample draws")
    threads: int = option(0, help="torch CPU threads; 0 = torch default")


PRESETS = {
    "tiny": {"kid_subsets": 10, "is_splits": 2},
    "toy": {},
    # paper: no bootstrap by default; at Inception's 2048-d it costs one 2048 x 2048 eigendecomposition per resample
    "paper": {"extractor": "inception:downloads/inception/inception-2015-12-05.pt", "batch_size": 50, "bootstrap": 0},
}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(name)).strip("_") or "none"


def out_path(cfg) -> Path:
    if cfg.out:
        return Path(cfg.out)
    return (Path("results") / cfg.scale / "eval" / _safe(cfg.experiment or "unnamed")
            / f"{_safe(cfg.checkpoint)}__{_safe(cfg.sampler)}__{cfg.steps}.json")


def _reference(cfg, extractor) -> ReferenceStats:
    ref = Path(cfg.reference)
    if not cfg.reference:
        raise ValueError("reference: needed by the requested metrics (an image folder or a statistics .npz)")
    if ref.suffix == ".npz" and not ref.is_dir():
        return ReferenceStats.load(ref)
    if not ref.is_dir():
        raise FileNotFoundError(f"reference '{ref}': neither an image folder nor a .npz statistics file")
    cache = Path(cfg.reference_stats) if cfg.reference_stats else reference_mod.default_cache_path(
        ref, extractor, Path("results") / cfg.scale / "reference_stats")
    return reference_mod.load_or_compute(ref, extractor, cache, cfg.batch_size, cfg.kid_max_features, cfg.seed)


def build_context(cfg, needs: set[str]) -> Context:
    ctx = Context(check_resolution=cfg.check_resolution, kid_subsets=cfg.kid_subsets,
                  kid_subset_size=cfg.kid_subset_size, kid_max_features=cfg.kid_max_features,
                  is_splits=cfg.is_splits, pr_k=cfg.pr_k, pr_max_samples=cfg.pr_max_samples, seed=cfg.seed,
                  images_dir=Path(cfg.images),
                  need_logits="logits" in needs, bootstrap=cfg.bootstrap, bootstrap_seed=cfg.bootstrap_seed)
    if "extractor" in needs:
        ctx.extractor = build_extractor(cfg.extractor, cfg.device)
    if "reference_stats" in needs:
        ctx.reference = _reference(cfg, ctx.extractor)
        ctx.reference_id = ctx.reference.reference_id
    if "reference_dir" in needs:
        ref = Path(cfg.reference)
        if not ref.is_dir():
            raise ValueError(f"reference '{cfg.reference}': paired metrics (psnr, ssim) need the originals' folder")
        ctx.reference_dir = ref
        ctx.reference_id = set_id(ref, image_files(ref))
    if "clip" in needs:
        from shared.metrics.clip_score import ClipScorer

        if not cfg.clip:
            raise ValueError("clip: clip_score needs a local CLIP model folder (clip=<path>)")
        ctx.clip = ClipScorer(cfg.clip, cfg.clip_prefix, cfg.device)
    if "codes" in needs:
        from shared.metrics.recon import load_codes

        if not cfg.codes:
            raise ValueError("codes: codebook metrics need a file of token indices (codes=<path.npy>)")
        ctx.codes, ctx.codebook_size = load_codes(cfg.codes), cfg.codebook_size
    return ctx


def evaluate(cfg) -> dict:
    names = list(cfg.metrics)
    needs = needs_of(names)
    images = Path(cfg.images)
    files = image_files(images)
    ctx = build_context(cfg, needs)
    metrics = [METRICS[n](n, ctx) for n in names]
    captions = read_captions(images, files)
    report = ReadReport()
    for batch in iter_batches(images, files, cfg.batch_size, report, captions):
        for m in metrics:
            m.update(batch)
    if report.read == 0:
        raise ValueError(f"{images}: no readable images ({report.found} found, {len(report.unreadable)} unreadable)")
    entries = [e for m in metrics for e in m.results(report)]
    return {
        "experiment": cfg.experiment, "checkpoint": cfg.checkpoint, "sampler": cfg.sampler, "steps": cfg.steps,
        "scale": cfg.scale, "images": str(cfg.images), "reference": str(cfg.reference),
        "resolution": report.resolution, "num_images_found": report.found, "num_images_read": report.read,
        "num_unreadable": len(report.unreadable), "unreadable": report.unreadable[:100],
        "skip_reasons": report.skipped,
        "metrics": entries,
        "info": collect_info(cfg),
    }


INFO_KEYS = ("method", "paper", "project", "nfe", "parameters", "seconds_per_image", "train_steps")


def collect_info(cfg) -> dict:
    """The leaderboard's extra columns (shared/tables.py kind=leaderboard): from the sampling record
    `<images>/samples.json` where a sample step wrote one, then the `info` files, then the method/paper/project
    options (later sources win)."""
    from shared.io import read_json

    info: dict = {}
    record = Path(cfg.get("images") or ".") / "samples.json"
    paths = list(cfg.info)
    if cfg.get("images") and record.is_file() and str(record) not in paths:
        paths.insert(0, str(record))
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"info: {path} does not exist (a JSON file with any of {', '.join(INFO_KEYS)})")
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"info: {path} is not a JSON object")
        info.update({k: data[k] for k in INFO_KEYS if k in data})
    info.update({k: cfg[k] for k in ("method", "paper", "project") if cfg[k]})
    return info


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if not cfg.images:
        raise ValueError("images: set the folder of images to evaluate (images=<folder>)")
    if not cfg.experiment:
        raise ValueError("experiment: name the experiment (experiment=<name>)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    result = evaluate(cfg)
    out = out_path(cfg)
    write_json(out, result)
    save_resolved(cfg, out.parent, name=f"{out.stem}.config.yaml")
    summary = ", ".join(f"{e['metric']}={e['value']:.4g}" for e in result["metrics"])
    reasons = ", ".join(f"{r}={n}" for r, n in result["skip_reasons"].items())
    skipped = f" ({result['num_unreadable']} unreadable skipped: {reasons})" if result["num_unreadable"] else ""
    print(f"{cfg.experiment}/{cfg.checkpoint}/{cfg.sampler}/{cfg.steps}: {summary} "
          f"on {result['num_images_read']} images{skipped} -> {out}")
    return result


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
