"""Frechet distance between two Gaussians, ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)): clean-fid's.

`frechet_distance` is `cleanfid.fid.frechet_distance` (scipy's sqrtm of the product, eps on the diagonals if it
is singular, a negligible imaginary part dropped: the same computation as pytorch-fid), so numbers are clean-fid's
on the same statistics, bit for bit. What is added here: inputs as float64 arrays, a shape check that names the
shapes (clean-fid asserts), and scipy's rank-deficiency warnings silenced (dead ReLU units make the covariance
singular; clean-fid's own finite check decides, and `require_samples` refuses too few samples beforehand).
"""
from __future__ import annotations

import warnings

import numpy as np


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    from cleanfid.fid import frechet_distance as cleanfid_frechet  # imports torchvision: only when measuring
    from scipy.linalg import LinAlgWarning

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)
        # clean-fid 0.1.35 passes sqrtm's `disp`, deprecated in scipy 1.17 and removed in 1.18 (pinned: 1.17.1)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return float(cleanfid_frechet(mu1, sigma1, mu2, sigma2, eps=eps))
        except ValueError as e:  # clean-fid's "Imaginary component <m>"
            raise ValueError(f"Frechet distance: sqrtm of the covariance product is not real ({e})") from None


def frechet_from_features(feats1, feats2) -> float:
    """Frechet distance of two feature matrices (N, D) (for tests and small sets)."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    return frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
