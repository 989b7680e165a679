"""Reconstruction metrics for image tokenizers / autoencoders: PSNR, SSIM, codebook usage and perplexity.
(rFID is the Frechet distance between reconstructions and their originals: metric `rfid` in evaluate.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def psnr(image: np.ndarray, original: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB of one image: torchmetrics' `peak_signal_noise_ratio`, capped at mse=1e-10 (about 148 dB for
    identical images, where torchmetrics gives inf) so the JSON stays finite.

    torchmetrics takes the log of `data_range` in float32: on the 32 tiny TiTok reconstructions this moved
    per-image PSNRs by at most 2.7e-7 dB against the float64 formula used before (their mean printed 10.43 both
    ways)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    a, b = (torch.from_numpy(np.asarray(x, np.float64)) for x in (image, original))
    cap = 10 * np.log10(data_range ** 2 / 1e-10)
    return min(float(peak_signal_noise_ratio(a, b, data_range=data_range)), float(cap))


def ssim(image: np.ndarray, original: np.ndarray, data_range: float = 255.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, border: str = "valid") -> float:
    """Mean SSIM (Wang et al. 2004) of one (H, W, C) or (H, W) image pair with a Gaussian window of size
    2 * int(3.5 sigma + 0.5) + 1 (11 for sigma 1.5): torchmetrics' `structural_similarity_index_measure` in float64.

    border="reflect": torchmetrics' number (the image reflect-padded, every pixel counts). border="valid": the mean
    of the same SSIM map over window positions inside the image, i.e. without its (window - 1) / 2 border pixels
    (skimage's `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`,
    pytorch-msssim), which torchmetrics does not offer, so its full map is cropped here.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    if border not in ("valid", "reflect"):
        raise ValueError(f"SSIM: border must be 'valid' or 'reflect', got {border!r}")
    a, b = np.asarray(image, np.float64), np.asarray(original, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"SSIM: shapes differ {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    window = 2 * int(3.5 * sigma + 0.5) + 1
    if min(a.shape[:2]) < window:
        raise ValueError(f"SSIM: image {a.shape[:2]} smaller than the {window}x{window} window")
    x, y = (torch.from_numpy(t).permute(2, 0, 1)[None] for t in (a, b))  # (1, C, H, W)
    value, full = structural_similarity_index_measure(x, y, sigma=sigma, data_range=data_range, k1=k1, k2=k2,
                                                      return_full_image=True)
    if border == "reflect":
        return float(value)
    pad = (window - 1) // 2
    return float(full[..., pad:-pad, pad:-pad].mean())


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
