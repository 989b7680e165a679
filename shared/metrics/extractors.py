"""Feature extractors, by name: `build_extractor("digits:<features.safetensors>")`,
`build_extractor("inception:<inception-2015-12-05.pt or its folder>")`.

Every extractor takes images as clean-fid does: uint8 (H, W, 3) arrays, resized by `preprocess` into float
(3, H', W') tensors with values in 0..255, then `outputs(x)` gives the features (B, D) and, when asked, class
logits (B, C) for the Inception Score. `id` names the network and its exact weights; statistics carry it so
numbers from different extractors are never compared.

- digits: the toy digits CNN (shared/toy/features.py), 64-d penultimate features, digit logits; images
  are brought to the net's resolution the way the net itself would (antialiased bilinear).
- inception: clean-fid's TorchScript Inception-v3 (the one behind clean-fid's and StyleGAN's FID), loaded from
  a local file with clean-fid's own `InceptionV3W(..., download=False)`, with clean-fid's "clean" resize
  (PIL bicubic to 299x299 in float). Nothing is downloaded. Its class logits for the Inception Score are the
  1008-way `output` layer applied without its bias ("logits_unbiased"), as in the original IS code,
  StyleGAN's metrics and torchmetrics' default.
- inception_inside: the same network fed the images as they are, resized inside its TorchScript graph: the
  StyleGAN / EDM protocol, under which EDM's published ImageNet-64 reference statistics were computed.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

INCEPTION_FILE = "inception-2015-12-05.pt"


class Extractor:
    name = "base"

    def __init__(self, model: torch.nn.Module, extractor_id: str, dim: int, device: str | torch.device = "cpu"):
        self.model, self.id, self.dim, self.device = model, extractor_id, dim, torch.device(device)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def outputs(self, x: torch.Tensor, logits: bool = False) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def batch_tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        return torch.stack([self.preprocess(im) for im in images]).to(self.device)


class DigitsExtractor(Extractor):
    name = "digits"

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        r = self.model.hparams["resolution"]
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x[None], size=(r, r), mode="bilinear", antialias=True, align_corners=False)[0]
        return x

    @torch.no_grad()
    def outputs(self, x: torch.Tensor, logits: bool = False) -> dict[str, torch.Tensor]:
        f = self.model.features(x)
        out = {"features": f}
        if logits:
            out["logits"] = self.model.digit_head(f)
            out["colour_logits"] = self.model.colour_head(f)
        return out


class InceptionExtractor(Extractor):
    name = "inception"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from cleanfid.resize import build_resizer

        self._resize = build_resizer("clean")

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self._resize(image), dtype=np.float32)).permute(2, 0, 1)

    @torch.no_grad()
    def outputs(self, x: torch.Tensor, logits: bool = False) -> dict[str, torch.Tensor]:
        f = self.model(x)
        out = {"features": f}
        if logits:
            head = getattr(self.model.base, "output", None)
            if head is None:
                raise ValueError(f"{self.id}: this TorchScript Inception has no 'output' layer; "
                                 f"the Inception Score needs its class logits")
            out["logits"] = F.linear(f, head.weight)  # without the bias, as the original IS code and StyleGAN
        return out


class InceptionInsideExtractor(InceptionExtractor):
    """The same Inception-v3 with the resize done inside the network (its TorchScript graph) on the images as
    they are: the protocol of StyleGAN / EDM's FID and of their published reference statistics (EDM's
    fid-refs for ImageNet-64)."""
    name = "inception_inside"

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def load_digits(path: str, device: str | torch.device = "cpu") -> DigitsExtractor:
    from shared.toy import features

    model = features.load(path, device)
    return DigitsExtractor(model, model.extractor_id, model.hparams["feature_dim"], device)


def load_inception(path: str, device: str | torch.device = "cpu", resize_inside: bool = False) -> InceptionExtractor:
    from cleanfid.inception_torchscript import InceptionV3W

    p = Path(path)
    if p.is_dir():
        p = p / INCEPTION_FILE
    if not p.is_file() or p.name != INCEPTION_FILE:
        raise FileNotFoundError(
            f"{path}: expected clean-fid's Inception weights '{INCEPTION_FILE}' (or a folder holding it); "
            f"fetch it with the paper-scale download rule - nothing is downloaded here")
    with warnings.catch_warnings():  # torch.jit.load is deprecated in torch 2.14; clean-fid still uses it
        warnings.simplefilter("ignore", FutureWarning)
        model = InceptionV3W(str(p.parent), download=False, resize_inside=resize_inside).eval().to(device)
    if resize_inside:
        return InceptionInsideExtractor(model, inception_inside_id(p), 2048, device)
    return InceptionExtractor(model, f"inception-v3-cleanfid:{_file_digest(p)}:clean", 2048, device)


def inception_inside_id(path: str | Path) -> str:
    """The extractor id of `inception_inside:<path>` (also what imported StyleGAN/EDM statistics are labelled)."""
    p = Path(path)
    return f"inception-v3-cleanfid:{_file_digest(p / INCEPTION_FILE if p.is_dir() else p)}:inside"


EXTRACTORS: dict[str, Callable[[str, str | torch.device], Extractor]] = {
    "digits": load_digits,
    "inception": load_inception,
    "inception_inside": lambda path, device="cpu": load_inception(path, device, resize_inside=True),
}


def build_extractor(spec: str, device: str | torch.device = "cpu") -> Extractor:
    """`"<name>:<path>"` -> a loaded extractor; names are the keys of EXTRACTORS."""
    name, sep, path = spec.partition(":")
    if not sep or name not in EXTRACTORS or not path:
        raise ValueError(f"extractor '{spec}': expected '<name>:<path>' with name one of {sorted(EXTRACTORS)}, "
                         f"e.g. digits:results/toy/digits_features/features.safetensors")
    return EXTRACTORS[name](path, device)
