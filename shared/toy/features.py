"""The digits CNN: classifies digit and colour; its penultimate layer is the toy-scale feature space.

It plays the role Inception-v3 plays at paper scale: Frechet distance on its 64-d features, and
"prompt accuracy" = how often a generated image is classified as the digit and colour its prompt asked for.
Input convention is clean-fid's: float images (B, 3, H, W) with values in 0..255.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from shared.io import atomic_path


class DigitsNet(nn.Module):
    def __init__(self, width: int = 32, feature_dim: int = 64, num_digits: int = 10, num_colours: int = 8,
                 resolution: int = 32):
        super().__init__()
        self.hparams = dict(width=width, feature_dim=feature_dim, num_digits=num_digits,
                            num_colours=num_colours, resolution=resolution)
        w = width

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.body = nn.Sequential(
            block(3, w), block(w, w), nn.MaxPool2d(2),
            block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2d(2),
            block(2 * w, 4 * w), nn.MaxPool2d(2), nn.Flatten(),  # keep the 4x4 layout: a digit is its shape
        )
        self.embed = nn.Linear(4 * w * (resolution // 8) ** 2, feature_dim)
        self.digit_head = nn.Linear(feature_dim, num_digits)
        self.colour_head = nn.Linear(feature_dim, num_colours)
        self.extractor_id = "digits-cnn:untrained"

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        r = self.hparams["resolution"]
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        return x / 127.5 - 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim) of images in 0..255, with norm sqrt(feature_dim).

        The fixed norm keeps each coordinate O(1), as Inception's pool features are: KID's kernel
        (x.y/d + 1)^3 then stays O(1) instead of ~1e5, and its estimate is not swamped by variance.
        """
        f = F.relu(self.embed(self.body(self._prep(x))))
        return F.normalize(f, dim=1, eps=1e-6) * self.hparams["feature_dim"] ** 0.5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.digit_head(f), self.colour_head(f)


def save(model: DigitsNet, path: str | Path) -> str:
    """Save weights (safetensors) with hparams; returns the extractor id (a hash of the weights)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()[:12]
    model.extractor_id = f"digits-cnn:{digest}"
    meta = {"hparams": json.dumps(model.hparams), "extractor_id": model.extractor_id}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return model.extractor_id


def load(path: str | Path, device: str | torch.device = "cpu") -> DigitsNet:
    """Load a trained DigitsNet in eval mode."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: digits feature network not found; run shared/toy/train_features.py")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "hparams" not in meta:
        raise ValueError(f"{path}: not a digits feature network (no 'hparams' in safetensors metadata)")
    model = DigitsNet(**json.loads(meta["hparams"]))
    model.load_state_dict(load_file(str(path)))
    model.extractor_id = meta.get("extractor_id", "digits-cnn:unknown")
    return model.eval().to(device)
