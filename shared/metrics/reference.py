"""Reference statistics from an image folder, cached as `.npz` and reused while the folder is unchanged."""
from __future__ import annotations

import hashlib
from pathlib import Path

from shared.metrics.extractors import Extractor
from shared.metrics.images import ReadReport, iter_batches, image_files, set_id
from shared.metrics.stats import FeatureStats, ReferenceStats, StatsMismatch


def folder_stats(folder: str | Path, extractor: Extractor, batch_size: int = 64, keep: int = 10000,
                 seed: int = 0) -> tuple[ReferenceStats, ReadReport]:
    """Stream a folder through the extractor: mean/cov in float64 and a random subset of `keep` features."""
    folder = Path(folder)
    files = image_files(folder)
    report = ReadReport()
    stats = FeatureStats(extractor.dim, keep=keep, seed=seed)
    for batch in iter_batches(folder, files, batch_size, report):
        stats.update(extractor.outputs(extractor.batch_tensor(batch.images))["features"])
    if stats.count < 2:
        raise StatsMismatch(f"{folder}: only {stats.count} readable images; cannot compute reference statistics")
    ref = ReferenceStats.from_stats(stats, extractor.id, report.resolution, set_id(folder, files), str(folder))
    return ref, report


def default_cache_path(folder: str | Path, extractor: Extractor, root: str | Path) -> Path:
    folder = Path(folder)
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    return Path(root) / f"{folder.resolve().name}-{tag}-{extractor.name}.npz"


def load_or_compute(folder: str | Path, extractor: Extractor, cache: str | Path, batch_size: int = 64,
                    keep: int = 10000, seed: int = 0, log=print) -> ReferenceStats:
    """Cached statistics of `folder` if the cache matches this extractor and image set, else computed and cached."""
    folder, cache = Path(folder), Path(cache)
    if cache.is_file():
        try:
            ref = ReferenceStats.load(cache)
            expected = set_id(folder, image_files(folder))
            if ref.extractor_id == extractor.id and ref.reference_id == expected and \
                    len(ref.features) >= min(ref.count, keep):
                return ref
            log(f"reference cache {cache} is stale (extractor {ref.extractor_id} vs {extractor.id}, "
                f"images {ref.reference_id} vs {expected}); recomputing")
        except StatsMismatch as e:
            log(f"{e}; recomputing")
    ref, report = folder_stats(folder, extractor, batch_size, keep, seed)
    if report.unreadable:
        log(f"reference {folder}: skipped {len(report.unreadable)} unreadable images")
    ref.save(cache)
    return ref
