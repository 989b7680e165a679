"""CLIP score: cosine similarity of CLIP image and caption embeddings, from a local transformers CLIP folder.

`ClipScorer(path, prefix="A photo depicts ")` loads `CLIPModel` and `CLIPProcessor` with
`local_files_only=True` (nothing is downloaded); `cosine(images, captions)` gives one cosine per pair.
Papers report either the mean cosine (e.g. 0.31) or 100 x it (torchmetrics' CLIPScore = max(100 * mean, 0));
evaluate writes both, as `clip_score` and `clip_score_x100`. Captions longer than the text encoder's context
are truncated, as torchmetrics does.

Not torchmetrics' `CLIPScore`: version 1.9 expects `get_image_features` / `get_text_features` to return tensors,
which transformers 5 no longer does (the test needs an adapter to run it), it reports only max(100 * mean, 0), and
it cannot skip uncaptioned images per pair; the test holds this scorer's number against it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch


def model_id(path: str | Path) -> str:
    """Cheap, stable id of a model folder: its config and the names and sizes of its weight files."""
    path = Path(path)
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"clip:{path.resolve().name}:{h.hexdigest()[:12]}"


class ClipScorer:
    def __init__(self, path: str | Path, prefix: str = "", device: str | torch.device = "cpu"):
        from transformers import CLIPModel, CLIPProcessor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a local CLIP model folder (no config.json); "
                                    f"save one with CLIPModel.save_pretrained + CLIPProcessor.save_pretrained")
        self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).eval().to(device)
        self.processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
        self.prefix, self.device, self.id = prefix, torch.device(device), model_id(path)
        self.max_length = self.model.config.text_config.max_position_embeddings

    @torch.no_grad()
    def embed_images(self, images: list[np.ndarray]) -> torch.Tensor:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)
        return self._unit(self.model.get_image_features(pixel_values=pixels))

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        tok = self.processor(text=[self.prefix + t for t in texts], return_tensors="pt", padding=True,
                             truncation=True, max_length=self.max_length)
        return self._unit(self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                       attention_mask=tok["attention_mask"].to(self.device)))

    @staticmethod
    def _unit(x) -> torch.Tensor:
        x = x if isinstance(x, torch.Tensor) else x.pooler_output  # some versions return a model output
        return x / x.norm(dim=-1, keepdim=True)

    def cosine(self, images: list[np.ndarray], texts: list[str]) -> np.ndarray:
        if len(images) != len(texts):
            raise ValueError(f"CLIP score: {len(images)} images but {len(texts)} captions")
        return (self.embed_images(images) * self.embed_texts(texts)).sum(-1).double().cpu().numpy()
