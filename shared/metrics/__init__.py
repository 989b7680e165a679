"""Evaluation metrics: Frechet distance (FID / toy FD / rFID), KID, precision/recall, Inception Score, prompt
accuracy, CLIP score, PSNR/SSIM and codebook statistics, with streaming feature statistics and cached references.

    stats.FeatureStats            streaming float64 mean/cov (+ reservoir subset for KID)
    stats.ReferenceStats          cached reference statistics (.npz): save / load, checked on use
    frechet.frechet_distance      (mu1, sigma1, mu2, sigma2) -> float
    kid.kernel_distance           (feats1, feats2, ...) -> (mean, std)
    precision_recall.precision_recall  (reference, samples, k=3) -> (precision, recall), k-NN manifolds (ADM)
    inception_score.InceptionScore  streaming IS over class logits
    bootstrap.frechet_bootstrap   FD of B resamples (with replacement) of the evaluated features: 95% intervals
    extractors.build_extractor    "digits:<path>" | "inception:<path>" -> Extractor
    registry.METRICS              metric name -> accumulator class, used by shared/evaluate.py

Library implementations underneath: the Frechet distance is clean-fid's, PSNR and SSIM torchmetrics' functionals,
the Inception network and its resize clean-fid's. What stays hand-written (streaming statistics, cached and checked
references, the extractor registry, KID's subset loop, the streaming IS, precision/recall's blocked k-NN) says why
in its module docstring.
"""
from shared.metrics.frechet import frechet_distance, frechet_from_features
from shared.metrics.inception_score import InceptionScore
from shared.metrics.kid import kernel_distance
from shared.metrics.stats import (FeatureStats, ReferenceStats, StatsMismatch, check_compatible,
                                  require_samples)

__all__ = ["FeatureStats", "ReferenceStats", "StatsMismatch", "check_compatible", "require_samples",
           "frechet_distance", "frechet_from_features", "kernel_distance", "InceptionScore"]
