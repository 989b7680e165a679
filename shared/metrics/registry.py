"""Metrics by name, for `shared/evaluate.py`: each is a small accumulator fed image batches.

    METRICS[name](name, ctx) -> Metric;  metric.update(batch);  metric.results(report) -> [entry, ...]

An entry is {metric, value, num_samples, reference_id, extractor_id} plus optional extras (e.g. std).
Add a metric by writing a class and registering it with `@register("name", ...)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from shared.metrics.extractors import DigitsExtractor, Extractor
from shared.metrics.frechet import frechet_distance
from shared.metrics.images import Batch, ReadReport, read_image
from shared.metrics.inception_score import InceptionScore
from shared.metrics.kid import kernel_distance
from shared.toy.prompt_accuracy import PromptAccuracy
from shared.metrics.stats import FeatureStats, ReferenceStats, check_compatible, require_samples


@dataclass
class Context:
    """What metrics may use; `evaluate` fills only what the requested metrics need."""

    extractor: Extractor | None = None
    reference: ReferenceStats | None = None  # statistics of the reference set (fd, kid)
    reference_dir: Path | None = None  # folder of paired originals (psnr, ssim)
    reference_id: str | None = None
    images_dir: Path | None = None
    clip: Any = None  # shared.metrics.clip_score.ClipScorer
    codes: np.ndarray | None = None
    codebook_size: int = 0
    need_logits: bool = False
    check_resolution: bool = True
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_max_features: int = 10000
    pr_k: int = 3  # precision/recall neighbourhood size (ADM's evaluator)
    pr_max_samples: int = 50000  # evaluated features kept for precision/recall (ADM: all 50k)
    is_splits: int = 10
    seed: int = 0
    bootstrap: int = 0  # resamples of the evaluated samples for the intervals of fd and the accuracies; 0 = none
    bootstrap_seed: int = 0

    def outputs(self, batch: Batch) -> dict:
        """Extractor outputs for a batch, computed once and shared by all metrics."""
        if "features" not in batch.cache:
            x = self.extractor.batch_tensor(batch.images)
            batch.cache.update({k: v.cpu().numpy() for k, v in
                                self.extractor.outputs(x, logits=self.need_logits).items()})
        return batch.cache


def entry(metric: str, value: float, num_samples: int, reference_id: str | None = None,
          extractor_id: str | None = None, **extra) -> dict:
    return {"metric": metric, "value": float(value), "num_samples": int(num_samples),
            "reference_id": reference_id, "extractor_id": extractor_id, **extra}


class Metric:
    needs: frozenset = frozenset()  # of: extractor, logits, digits, reference_stats, reference_dir, clip, codes

    def __init__(self, name: str, ctx: Context):
        self.name, self.ctx = name, ctx

    def update(self, batch: Batch) -> None:
        pass

    def results(self, report: ReadReport) -> list[dict]:
        raise NotImplementedError

    def checked_reference(self, report: ReadReport):
        """(reference statistics, extractor), the statistics checked to be of this extractor and resolution."""
        ref, ext = self.ctx.reference, self.ctx.extractor
        check_compatible(ref, ext.id, report.resolution, where=f"{self.name}: reference '{ref.source or ref.reference_id}'",
                         check_resolution=self.ctx.check_resolution)
        return ref, ext


METRICS: dict[str, Callable[[str, Context], Metric]] = {}


def register(*names: str):
    def deco(cls):
        for n in names:
            METRICS[n] = cls
        return cls
    return deco


@register("fd", "fid", "rfid")
class FrechetMetric(Metric):
    """Frechet distance to the reference statistics in the extractor's feature space (FID with Inception;
    rFID when the images are reconstructions and the reference their originals)."""
    needs = frozenset({"extractor", "reference_stats"})

    def __init__(self, name, ctx):
        super().__init__(name, ctx)
        self.stats = FeatureStats(ctx.extractor.dim)
        self.features = []  # every evaluated feature vector, only for the bootstrap

    def update(self, batch):
        self.stats.update(self.ctx.outputs(batch)["features"])
        if self.ctx.bootstrap:
            self.features.append(np.asarray(self.ctx.outputs(batch)["features"], np.float64))

    def results(self, report):
        ref, ext = self.checked_reference(report)
        require_samples(ref.count, ref.dim, f"{self.name}: reference '{ref.reference_id}'")
        require_samples(self.stats.count, ext.dim, f"{self.name}: evaluated images")
        value = frechet_distance(self.stats.mean, self.stats.cov, ref.mu, ref.sigma)
        extra = {}
        if self.ctx.bootstrap:
            from shared.metrics import bootstrap as bs

            idx = bs.resample_indices(self.stats.count, self.ctx.bootstrap, self.ctx.bootstrap_seed)
            values = bs.frechet_bootstrap(np.concatenate(self.features), ref.mu, ref.sigma, idx)
            extra = bs.summary(value, values, self.ctx.bootstrap_seed)
        return [entry(self.name, value, self.stats.count, ref.reference_id, ext.id, **extra)]


@register("kid")
class KIDMetric(Metric):
    """KID against the reference's stored feature subset (x1000 is NOT applied; the value is raw MMD^2)."""
    needs = frozenset({"extractor", "reference_stats"})

    def __init__(self, name, ctx):
        super().__init__(name, ctx)
        self.stats = FeatureStats(ctx.extractor.dim, keep=ctx.kid_max_features, seed=ctx.seed)

    def update(self, batch):
        self.stats.update(self.ctx.outputs(batch)["features"])

    def results(self, report):
        ref, ext = self.checked_reference(report)
        if len(ref.features) < 2:
            raise ValueError(f"{self.name}: reference statistics '{ref.reference_id}' hold no feature samples; "
                             f"recompute them from the reference folder (kid_max_features > 0)")
        mean, std = kernel_distance(self.stats.kept, ref.features, self.ctx.kid_subsets, self.ctx.kid_subset_size,
                                    rng=self.ctx.seed)
        return [entry(self.name, mean, self.stats.count, ref.reference_id, ext.id, std=std,
                      subset_size=min(len(self.stats.kept), len(ref.features), self.ctx.kid_subset_size),
                      num_subsets=self.ctx.kid_subsets)]


@register("precision_recall")
class PrecisionRecallMetric(Metric):
    """Improved precision and recall (k-NN manifolds, k=`pr_k`, ADM's evaluator): entries `precision` (samples
    inside the reference manifold) and `recall` (reference inside the samples' manifold), against the reference's
    stored feature subset (`kid_max_features` of them, 10k by default: ADM's reference batch size)."""
    needs = frozenset({"extractor", "reference_stats"})

    def __init__(self, name, ctx):
        super().__init__(name, ctx)
        self.stats = FeatureStats(ctx.extractor.dim, keep=ctx.pr_max_samples, seed=ctx.seed)

    def update(self, batch):
        self.stats.update(self.ctx.outputs(batch)["features"])

    def results(self, report):
        from shared.metrics.precision_recall import precision_recall

        ref, ext = self.checked_reference(report)
        if len(ref.features) <= self.ctx.pr_k:
            raise ValueError(f"{self.name}: reference statistics '{ref.reference_id}' hold {len(ref.features)} feature "
                             f"samples; precision/recall needs the features, not only mu/sigma (recompute them from "
                             f"the reference image folder with kid_max_features > {self.ctx.pr_k})")
        device = ext.device if ext.device.type == "cuda" else "cpu"
        dtype = torch.float32 if device != "cpu" else torch.float64  # float64 on CPU: exact ties, as brute force
        p, r = precision_recall(ref.features, self.stats.kept, self.ctx.pr_k, device=device, dtype=dtype)
        extra = {"k": self.ctx.pr_k, "num_reference": len(ref.features)}
        return [entry("precision", p, len(self.stats.kept), ref.reference_id, ext.id, **extra),
                entry("recall", r, len(self.stats.kept), ref.reference_id, ext.id, **extra)]


@register("inception_score", "is")
class InceptionScoreMetric(Metric):
    """Inception Score on the extractor's class logits (Inception-v3: the paper metric; digits: toy analogue)."""
    needs = frozenset({"extractor", "logits"})

    def __init__(self, name, ctx):
        super().__init__(name, ctx)
        self.score = InceptionScore(ctx.is_splits)

    def update(self, batch):
        self.score.update(self.ctx.outputs(batch)["logits"])

    def results(self, report):
        mean, std = self.score.compute()
        return [entry(self.name, mean, self.score.seen, None, self.ctx.extractor.id, std=std,
                      splits=self.score.splits)]


@register("prompt_accuracy")
class PromptAccuracyMetric(Metric):
    """Digits classifier vs the caption's digit/colour: entries <name> (joint), <name>_digit, <name>_colour."""
    needs = frozenset({"extractor", "logits", "digits"})

    def __init__(self, name, ctx):
        super().__init__(name, ctx)
        if not isinstance(ctx.extractor, DigitsExtractor):
            raise ValueError(f"{name}: needs the digits classifier (extractor=digits:<features.safetensors>), "
                             f"got '{ctx.extractor.id}'")
        self.acc = PromptAccuracy()

    def update(self, batch):
        out = self.ctx.outputs(batch)
        self.acc.update(out["logits"], out["colour_logits"], batch.captions)

    def results(self, report):
        r, n, ext = self.acc.compute(), self.acc.total, self.ctx.extractor.id
        extra = {"unparsed_captions": self.acc.unparsed}
        spread = {"joint": {}, "digit": {}, "colour": {}}
        if self.ctx.bootstrap:
            from shared.metrics import bootstrap as bs

            # one set of draws for the three, so a claim on the digit alone has the noise of the same resamples
            idx = bs.resample_indices(n, self.ctx.bootstrap, self.ctx.bootstrap_seed)
            spread = {k: bs.summary(r[k], bs.mean_bootstrap(self.acc.per_image[k], idx), self.ctx.bootstrap_seed)
                      for k in spread}
        return [entry(self.name, r["joint"], n, None, ext, **extra, **spread["joint"]),
                entry(f"{self.name}_digit", r["digit"], n, None, ext, **extra, **spread["digit"]),
                entry(f"{self.name}_colour", r["colour"], n, None, ext, **extra, **spread["colour"])]


@register("clip_score")
class ClipScoreMetric(Metric):
    """Mean image-caption cosine similarity (`clip_score`) and torchmetrics' max(100 * mean cosine, 0)
    (`clip_score_x100`) from a local CLIP model; images without a caption are skipped and counted."""
    needs = frozenset({"clip"})

    def __init__(self, name, ctx):
        super().__init__(name, ctx)
        self.total, self.n, self.uncaptioned = 0.0, 0, 0

    def update(self, batch):
        pairs = [(im, c) for im, c in zip(batch.images, batch.captions) if c]
        self.uncaptioned += len(batch.images) - len(pairs)
        if pairs:
            cos = self.ctx.clip.cosine([p[0] for p in pairs], [p[1] for p in pairs])
            self.total += float(cos.sum())
            self.n += len(pairs)

    def results(self, report):
        if not self.n:
            raise ValueError(f"{self.name}: no image has a caption")
        mean, clip = self.total / self.n, self.ctx.clip
        extra = {"uncaptioned": self.uncaptioned, "prefix": clip.prefix}
        return [entry(self.name, mean, self.n, None, clip.id, **extra),
                entry(f"{self.name}_x100", max(100.0 * mean, 0.0), self.n, None, clip.id, **extra)]


class _PairedMetric(Metric):
    """Images paired with the reference folder's file of the same relative path stem."""
    needs = frozenset({"reference_dir"})

    def __init__(self, name, ctx):
        super().__init__(name, ctx)
        ref = ctx.reference_dir
        from shared.metrics.images import image_files

        self.refs = {p.relative_to(ref).with_suffix("").as_posix(): p for p in image_files(ref)}
        self.values: list[float] = []
        self.unpaired = 0

    def pair(self, path: Path, image: np.ndarray):
        key = path.relative_to(self.ctx.images_dir).with_suffix("").as_posix()
        ref = self.refs.get(key)
        if ref is None:
            return None
        try:
            original = read_image(ref)
        except Exception:
            return None
        return original if original.shape == image.shape else None

    def update(self, batch):
        for path, image in zip(batch.paths, batch.images):
            original = self.pair(path, image)
            if original is None:
                self.unpaired += 1
            else:
                self.values.append(self.score(image, original))

    def results(self, report):
        if not self.values:
            raise ValueError(f"{self.name}: no image has a same-named, same-size original in {self.ctx.reference_dir}")
        return [entry(self.name, float(np.mean(self.values)), len(self.values), self.ctx.reference_id, None,
                      unpaired=self.unpaired)]


@register("psnr")
class PSNRMetric(_PairedMetric):
    """Mean per-image PSNR (dB, data range 255) between reconstructions and their originals."""

    def score(self, image, original):
        from shared.metrics.recon import psnr

        return psnr(image, original)


@register("ssim", "ssim_reflect")
class SSIMMetric(_PairedMetric):
    """Mean per-image SSIM (Gaussian window 11, sigma 1.5, data range 255) against the originals:
    `ssim` over valid windows (skimage, pytorch-msssim), `ssim_reflect` reflect-padded (torchmetrics)."""

    def score(self, image, original):
        from shared.metrics.recon import ssim

        return ssim(image, original, border="reflect" if self.name == "ssim_reflect" else "valid")


@register("codebook_usage", "codebook_perplexity")
class CodebookMetric(Metric):
    """Tokenizer codebook usage (fraction of codes used) or perplexity (exp of code-frequency entropy)."""
    needs = frozenset({"codes"})

    def results(self, report):
        from shared.metrics.recon import codebook_stats

        stats = codebook_stats(self.ctx.codes, self.ctx.codebook_size)
        key = "usage" if self.name == "codebook_usage" else "perplexity"
        return [entry(self.name, stats[key], stats["num_tokens"], None, None, codebook_size=self.ctx.codebook_size)]


def needs_of(names) -> set[str]:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    return set().union(*(METRICS[n].needs for n in names)) if names else set()
