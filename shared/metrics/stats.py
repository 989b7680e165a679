"""Streaming feature statistics and cached reference statistics (`.npz`).

`FeatureStats` accumulates the mean and covariance of feature vectors batch by batch in float64, so a folder
of any size is summarised without holding its images (or all its features) in memory. It can also keep a
uniform random subset of the feature vectors (reservoir sampling) for KID, which needs features, not moments.

`ReferenceStats` is what gets cached: mu, sigma, count, the extractor id, the image resolution, an id of the
image set, and optionally that feature subset. `check_compatible` refuses to compare statistics taken with a
different extractor or at a different resolution, and `require_samples` refuses too few samples for the
feature dimension (the covariance would be singular and the Frechet distance meaningless).

Hand-written because no pinned library has these pieces: clean-fid keeps all features of a folder in memory and
caches only its own named datasets' statistics; torchmetrics' FID keeps raw float64 sums inside a metric bound to
one network, with no cached, labelled reference and no feature subset for KID. Its raw sums also lose digits on
features with an offset (measured, 1000 x 16-d, covariance max error relative to np.cov: offset 1e3: raw sums
1.2e-9, ours 4e-16; offset 1e5: raw sums 1.4e-5, ours 5e-15), which the shift by the first batch's mean avoids.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.io import atomic_path

FORMAT_VERSION = 1


class StatsMismatch(ValueError):
    """Two sets of statistics that must not be compared (different extractor, resolution, too few samples)."""


class FeatureStats:
    """Running sum and sum of outer products in float64; `mean`/`cov` match `np.mean`/`np.cov(rowvar=False)`."""

    def __init__(self, dim: int | None = None, keep: int = 0, seed: int = 0):
        self.dim = dim
        self.count = 0
        self._sum = None if dim is None else np.zeros(dim, np.float64)
        self._outer = None if dim is None else np.zeros((dim, dim), np.float64)
        self._shift = None  # first batch's mean: subtracting it keeps the sums well conditioned
        self.keep = keep
        self.kept = np.zeros((0, dim or 0), np.float32)
        self._rng = np.random.default_rng(seed)

    def update(self, feats) -> None:
        x = np.asarray(feats.detach().cpu() if hasattr(feats, "detach") else feats, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (batch, dim), got shape {x.shape}")
        if self.dim is None:
            self.dim = x.shape[1]
            self._sum = np.zeros(self.dim, np.float64)
            self._outer = np.zeros((self.dim, self.dim), np.float64)
            self.kept = np.zeros((0, self.dim), np.float32)
        if x.shape[1] != self.dim:
            raise ValueError(f"feature dimension changed: {x.shape[1]} after {self.dim}")
        if len(x) == 0:
            return
        if self._shift is None:
            self._shift = x.mean(0)
        xc = x - self._shift
        self._sum += xc.sum(0)
        self._outer += xc.T @ xc
        if self.keep:
            self._reservoir(x.astype(np.float32))
        self.count += len(x)

    def _reservoir(self, x: np.ndarray) -> None:
        """Algorithm R: after n rows seen, `kept` is a uniform random subset of min(n, keep) of them."""
        seen = self.count
        room = max(0, self.keep - len(self.kept))
        if room:
            self.kept = np.concatenate([self.kept, x[:room]])
        for i in range(room, len(x)):
            j = self._rng.integers(0, seen + i + 1)
            if j < self.keep:
                self.kept[j] = x[i]

    @property
    def mean(self) -> np.ndarray:
        return self._shift + self._sum / self.count

    @property
    def cov(self) -> np.ndarray:
        if self.count < 2:
            raise StatsMismatch(f"covariance needs at least 2 samples, got {self.count}")
        m = self._sum / self.count
        return (self._outer - self.count * np.outer(m, m)) / (self.count - 1)


@dataclass
class ReferenceStats:
    mu: np.ndarray
    sigma: np.ndarray
    count: int
    extractor_id: str
    resolution: str  # "32x32", or "mixed" when the images differ in size
    reference_id: str  # which image set: "<name>:<count>:<fingerprint>"
    source: str = ""  # the folder the statistics came from, as given
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # subset, for KID

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @classmethod
    def from_stats(cls, stats: FeatureStats, extractor_id: str, resolution: str, reference_id: str,
                   source: str = "") -> "ReferenceStats":
        return cls(stats.mean, stats.cov, stats.count, extractor_id, resolution, reference_id, source,
                   stats.kept.copy())

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # np.savez on a path would append ".npz" to the temp name
                np.savez(f, mu=self.mu, sigma=self.sigma, count=np.int64(self.count),
                         extractor_id=np.str_(self.extractor_id), resolution=np.str_(self.resolution),
                         reference_id=np.str_(self.reference_id), source=np.str_(self.source),
                         features=self.features, format_version=np.int64(FORMAT_VERSION))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceStats":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: reference statistics not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"mu", "sigma", "count", "extractor_id", "resolution"} - set(z.files)
                if missing:
                    raise StatsMismatch(f"{path}: not a reference-statistics file (missing {sorted(missing)})")
                return cls(
                    mu=z["mu"].astype(np.float64), sigma=z["sigma"].astype(np.float64), count=int(z["count"]),
                    extractor_id=str(z["extractor_id"]), resolution=str(z["resolution"]),
                    reference_id=str(z["reference_id"]) if "reference_id" in z.files else f"{path.stem}",
                    source=str(z["source"]) if "source" in z.files else "",
                    features=z["features"] if "features" in z.files else np.zeros((0, 0), np.float32))
        except StatsMismatch:
            raise
        except Exception as e:  # zip/pickle/format errors of a broken file
            raise StatsMismatch(f"{path}: cannot read reference statistics ({e})") from None


def require_samples(count: int, dim: int, what: str) -> None:
    """Refuse statistics from fewer samples than the feature dimension needs (singular covariance)."""
    if count <= dim:
        raise StatsMismatch(
            f"{what}: {count} samples for {dim}-d features; the covariance is singular and the Frechet distance "
            f"meaningless. Use more than {dim} images (papers use 10k-50k for 2048-d Inception features).")


def check_compatible(ref: ReferenceStats, extractor_id: str, resolution: str, where: str = "reference",
                     check_resolution: bool = True) -> None:
    """Refuse a reference taken with another extractor or at another image resolution."""
    if ref.extractor_id != extractor_id:
        raise StatsMismatch(
            f"{where}: statistics were computed with extractor '{ref.extractor_id}', but the images are being "
            f"measured with '{extractor_id}'. Recompute the reference with the same extractor.")
    if check_resolution and "mixed" not in (ref.resolution, resolution) and ref.resolution != resolution:
        raise StatsMismatch(
            f"{where}: reference images are {ref.resolution} but the evaluated images are {resolution}; "
            f"FID across resolutions is not comparable. Resize one set, or pass check_resolution=false "
            f"if that is intended.")
