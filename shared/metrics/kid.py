"""Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
averaged over random subsets (Binkowski et al. 2018).

Each subset's MMD^2 is torchmetrics' `poly_mmd` (the estimator behind its KernelInceptionDistance) in float64;
the subsets are drawn as clean-fid's `kernel_distance` draws them (a subset of feats2, then one of feats1, from a
`np.random.RandomState`), so with the same RandomState the mean is clean-fid's number (to 1e-9 relative: the sums
run in another order). Neither library is called whole: clean-fid's draws from the global `np.random` and returns
no std; torchmetrics' draws with torch's global RNG, so its numbers follow neither clean-fid nor a seed of ours.
"""
from __future__ import annotations

import numpy as np
import torch


def kernel_distance(feats1, feats2, num_subsets: int = 100, max_subset_size: int = 1000,
                    rng: np.random.RandomState | int | None = 0) -> tuple[float, float]:
    """(mean, std) of the MMD^2 estimate over `num_subsets` subsets of size min(n1, n2, max_subset_size).

    `rng` may be a seed or a `np.random.RandomState`; draws follow clean-fid's order (a subset of feats2,
    then of feats1), so with the same RandomState state the mean equals clean-fid's number.
    """
    from torchmetrics.image.kid import poly_mmd

    x_all, y_all = np.asarray(feats2, np.float64), np.asarray(feats1, np.float64)
    if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
        raise ValueError(f"KID: feature shapes {y_all.shape} and {x_all.shape} are not (N, D) with the same D")
    m = min(len(x_all), len(y_all), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(y_all)} and {len(x_all)}")
    rs = rng if isinstance(rng, np.random.RandomState) else np.random.RandomState(rng)
    x_t, y_t = torch.from_numpy(x_all), torch.from_numpy(y_all)
    values = np.empty(num_subsets)
    for s in range(num_subsets):
        x = x_t[torch.from_numpy(rs.choice(len(x_all), m, replace=False))]
        y = y_t[torch.from_numpy(rs.choice(len(y_all), m, replace=False))]
        values[s] = float(poly_mmd(x, y, degree=3, coef=1.0))  # gamma = 1 / d
    return float(values.mean()), float(values.std())
