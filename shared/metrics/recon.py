"""Reconstruction metrics for image tokenizers / autoencoders: PSNR, SSIM, codebook usage and perplexity.
(rFID is the Frechet distance between reconstructions and their originals: metric `rfid` in evaluate.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def psnr(image: np.ndarray, original: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB of one image; identical images are capped at mse=1e-10 (about 148 dB) so JSON stays finite."""
    mse = np.mean((np.asarray(image, np.float64) - np.asarray(original, np.float64)) ** 2)
    return float(10 * np.log10(data_range ** 2 / max(mse, 1e-10)))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(image: np.ndarray, original: np.ndarray, data_range: float = 255.0, window: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, border: str = "valid") -> float:
    """Mean SSIM (Wang et al. 2004) of one (H, W, C) or (H, W) image pair with a Gaussian window.

    border="valid": the mean over window positions inside the image (skimage's `structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`, pytorch-msssim); border="reflect": the
    image is reflect-padded and every pixel counts (torchmetrics' StructuralSimilarityIndexMeasure).
    """
    if border not in ("valid", "reflect"):
        raise ValueError(f"SSIM: border must be 'valid' or 'reflect', got {border!r}")
    a, b = np.asarray(image, np.float64), np.asarray(original, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"SSIM: shapes differ {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if min(a.shape[:2]) < window:
        raise ValueError(f"SSIM: image {a.shape[:2]} smaller than the {window}x{window} window")
    x = torch.from_numpy(a).permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    y = torch.from_numpy(b).permute(2, 0, 1)[:, None]
    if border == "reflect":
        pad = (window - 1) // 2
        x, y = (F.pad(t, (pad,) * 4, mode="reflect") for t in (x, y))
    w = _gaussian_window(window, sigma)[None, None]
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = (F.conv2d(x * x, w) - mx ** 2).clamp_min(0)
    syy = (F.conv2d(y * y, w) - my ** 2).clamp_min(0)
    sxy = F.conv2d(x * y, w) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def codebook_stats(codes, codebook_size: int) -> dict[str, float]:
    """usage = fraction of the codebook used at least once; perplexity = exp(entropy of code frequencies)
    (equals codebook_size when all codes are used equally often)."""
    codes = np.asarray(codes).reshape(-1)
    if codes.size == 0:
        raise ValueError("codebook stats: no codes")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codebook stats: codes must be integers, got {codes.dtype}")
    if codebook_size <= 0:
        raise ValueError("codebook stats: codebook_size must be set (> 0)")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"codebook stats: codes span {codes.min()}..{codes.max()}, outside 0..{codebook_size - 1}")
    counts = np.bincount(codes, minlength=codebook_size).astype(np.float64)
    p = counts[counts > 0] / codes.size
    return {"usage": float((counts > 0).mean()), "perplexity": float(np.exp(-(p * np.log(p)).sum())),
            "num_tokens": int(codes.size)}


def load_codes(path: str | Path) -> np.ndarray:
    """Token indices from `.npy`, or `.npz` (array 'codes', else its only array)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: codes file not found")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as z:
        if "codes" in z.files:
            return z["codes"]
        if len(z.files) == 1:
            return z[z.files[0]]
        raise ValueError(f"{path}: several arrays {z.files} and none named 'codes'")
