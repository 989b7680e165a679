"""Improved precision and recall (Kynkaanniemi et al. 2019) on feature arrays, as ADM's evaluator computes them.

Each set's manifold is the union of balls around its points, a ball's radius being the distance to the point's
k-th nearest neighbour in its own set (k=3; the point itself is not counted). Then

    precision = fraction of generated samples inside the reference manifold   (fidelity)
    recall    = fraction of reference samples inside the generated manifold   (coverage)

    from shared.metrics.precision_recall import precision_recall, manifold_radii
    p, r = precision_recall(reference_features, sample_features, k=3)            # numpy (N, D) arrays
    p, r = precision_recall(ref, fake, k=3, device="cuda", max_block_bytes=2**30) # 50k x 2048 on a GPU

What is taken from ADM's evaluator (openai/guided-diffusion evaluations/evaluator.py, `ManifoldEstimator` with
its defaults `nhood_sizes=[3]`, no clamping; `compute_prec_recall(ref, sample)`): squared Euclidean distances,
the radius as the (k+1)-th smallest distance of a row that includes the point itself, "inside" meaning
distance <= radius (ties count as inside), precision = samples in the reference manifold, recall = the
reverse. ADM computes the distance blocks in float16 with a float32 fallback; here they are float64 on CPU by
default (exact on the test's brute force) and float32 where asked (`dtype`, e.g. on a GPU).

Distances are computed in blocks of rows against column blocks, so memory stays under `max_block_bytes` (plus
the two feature arrays and one row of distances per point for the radii) whatever the set sizes: 50k x 50k
float64 distances would be 20 GB. Hand-written: no pinned library has it (torchmetrics has none; `prdc` and
torch-fidelity are not dependencies, and prdc keeps the whole distance matrix in memory).
"""
from __future__ import annotations

import numpy as np
import torch

DEFAULT_BLOCK_BYTES = 256 * 2 ** 20


def _as_tensor(x, name: str, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2:
        raise ValueError(f"precision/recall: {name} features must be (N, D), got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=dtype)


def _squared_distances(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """|a|^2 + |b|^2 - 2 a.b, clamped at 0 (the expansion can go a little below zero for equal points)."""
    return (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_min_(0)


def _rows_per_block(cols: int, itemsize: int, max_block_bytes: int) -> int:
    return max(1, int(max_block_bytes // max(1, cols * itemsize)))


def manifold_radii(features, k: int = 3, *, device="cpu", dtype=torch.float64,
                   max_block_bytes: int = DEFAULT_BLOCK_BYTES) -> np.ndarray:
    """Squared distance of each point to its k-th nearest other point of the same set, (N,) float64.

    Rows are processed in blocks; one block holds rows x N distances (at least one full row)."""
    x = _as_tensor(features, "manifold", device, dtype)
    n = len(x)
    if k < 1:
        raise ValueError(f"precision/recall: k={k}; the neighbourhood size must be at least 1")
    if n <= k:
        raise ValueError(f"precision/recall: {n} points cannot give a {k}-th nearest neighbour; "
                         f"use more than {k} samples (ADM's evaluator: 10k reference, 50k samples)")
    sq = (x * x).sum(1)
    out = torch.empty(n, dtype=torch.float64)
    step = _rows_per_block(n, x.element_size(), max_block_bytes)
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        d = _squared_distances(x[rows], x, sq[rows], sq)
        # the row holds the point itself (distance 0): the (k+1)-th smallest is the k-th other neighbour
        out[rows] = torch.kthvalue(d, k + 1, dim=1).values.to("cpu", torch.float64)
    return out.numpy()


def precision_recall(reference, samples, k: int = 3, *, device="cpu", dtype=torch.float64,
                     max_block_bytes: int = DEFAULT_BLOCK_BYTES,
                     reference_radii: np.ndarray | None = None) -> tuple[float, float]:
    """(precision, recall) of `samples` against `reference`, both (N, D) feature arrays of the same D.

    `reference_radii` (from `manifold_radii(reference, k)`) may be passed to reuse them across evaluations."""
    real = _as_tensor(reference, "reference", device, dtype)
    fake = _as_tensor(samples, "sample", device, dtype)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"precision/recall: reference features are {real.shape[1]}-d, samples "
                         f"{fake.shape[1]}-d; they must come from the same extractor")
    if reference_radii is None:
        reference_radii = manifold_radii(real, k, device=device, dtype=dtype, max_block_bytes=max_block_bytes)
    elif len(reference_radii) != len(real):
        raise ValueError(f"precision/recall: {len(reference_radii)} reference radii for {len(real)} points")
    r_real = torch.as_tensor(reference_radii, dtype=dtype, device=device)
    r_fake = torch.as_tensor(manifold_radii(fake, k, device=device, dtype=dtype, max_block_bytes=max_block_bytes),
                             dtype=dtype, device=device)
    sq_real, sq_fake = (real * real).sum(1), (fake * fake).sum(1)
    fake_in = torch.zeros(len(fake), dtype=torch.bool, device=device)  # sample inside some reference ball
    real_in = torch.zeros(len(real), dtype=torch.bool, device=device)  # reference inside some sample ball
    # square-ish blocks: rows of samples against columns of reference points
    side = max(1, int((max_block_bytes // fake.element_size()) ** 0.5))
    cols = min(len(real), side)
    rows = min(len(fake), _rows_per_block(cols, fake.element_size(), max_block_bytes))
    for i in range(0, len(fake), rows):
        fi = slice(i, min(len(fake), i + rows))
        for j in range(0, len(real), cols):
            rj = slice(j, min(len(real), j + cols))
            d = _squared_distances(fake[fi], real[rj], sq_fake[fi], sq_real[rj])
            fake_in[fi] |= (d <= r_real[rj][None, :]).any(1)
            real_in[rj] |= (d <= r_fake[fi][:, None]).any(0)
    return float(fake_in.double().mean()), float(real_in.double().mean())
