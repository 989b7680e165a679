"""What the UNet is conditioned on, per architecture (registry CONDITIONING: "sd15", "sdxl").

Prompts are encoded with the pipeline's own `encode_prompt`, so training sees exactly what sampling sees.
    cond = CONDITIONING[arch](pipe)
    kwargs = cond(captions, drop=mask, sizes=...)   -> UNet keyword arguments (encoder_hidden_states, ...)
    cond.unconditional(n, sizes=...)                -> the classifier-free-guidance "empty" conditioning

SD1.5's empty conditioning is the encoded empty prompt; SDXL pipelines use zeros (force_zeros_for_empty_prompt),
so SDXL caption dropout zeroes the embeddings too. SDXL also conditions on (original size, crop top-left, target
size) through `added_cond_kwargs["time_ids"]`.
"""
from __future__ import annotations

from typing import Sequence

import torch


class SD15Conditioning:
    def __init__(self, pipe, device: torch.device | str = "cpu"):
        self.pipe, self.device = pipe, torch.device(device)
        # frozen encoder: one forward per distinct prompt, each prompt alone. A prompt's embedding must not depend
        # on which other prompts shared its forward (batched matmuls differ in the last bit with the batch), or a
        # resumed run, whose memo starts empty, drifts away from an uninterrupted one.
        # Why not shared.train.TextEmbeddingCache: this also serves sampling (no run dir to cache in), keeps the
        # embeddings on the encoder's device, and holds only a run's few distinct prompts; nothing to persist.
        self._memo: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _embed(self, captions: Sequence[str]) -> torch.Tensor:
        todo = sorted({c for c in captions if c not in self._memo})
        for c in todo:
            self._memo[c] = self.pipe.encode_prompt([c], self.device, 1, False)[0][0]
        return torch.stack([self._memo[c] for c in captions])

    def __call__(self, captions: Sequence[str], drop: torch.Tensor | None = None, sizes=None) -> dict:
        captions = ["" if drop is not None and bool(drop[i]) else c for i, c in enumerate(captions)]
        return {"encoder_hidden_states": self._embed(captions)}

    def unconditional(self, n: int, sizes=None) -> dict:
        return self(["" for _ in range(n)])


class SDXLConditioning(SD15Conditioning):
    @torch.no_grad()
    def _embed(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        todo = sorted({c for c in captions if c not in self._memo})
        for c in todo:  # one prompt per forward: see SD15Conditioning
            out = self.pipe.encode_prompt([c], device=self.device, num_images_per_prompt=1,
                                          do_classifier_free_guidance=False)
            self._memo[c] = (out[0][0], out[2][0])
        return (torch.stack([self._memo[c][0] for c in captions]), torch.stack([self._memo[c][1] for c in captions]))

    def time_ids(self, n: int, sizes: torch.Tensor | None) -> torch.Tensor:
        """(n, 6): original (h, w), crop top-left (y, x), target (h, w); default: an uncropped square image of
        the UNet's native size."""
        if sizes is None:
            side = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
            sizes = torch.tensor([[side, side, 0, 0, side, side]] * n)
        return torch.as_tensor(sizes, dtype=torch.float32, device=self.device).reshape(n, 6)

    def __call__(self, captions: Sequence[str], drop: torch.Tensor | None = None, sizes=None) -> dict:
        hidden, pooled = self._embed(list(captions))
        if drop is not None and bool(drop.any()):
            keep = (~drop.bool()).to(hidden.dtype).to(self.device)
            hidden, pooled = hidden * keep.view(-1, 1, 1), pooled * keep.view(-1, 1)
        return {"encoder_hidden_states": hidden,
                "added_cond_kwargs": {"text_embeds": pooled, "time_ids": self.time_ids(len(captions), sizes)}}

    def unconditional(self, n: int, sizes=None) -> dict:
        return self(["" for _ in range(n)], drop=torch.ones(n, dtype=torch.bool), sizes=sizes)


CONDITIONING = {"sd15": SD15Conditioning, "sdxl": SDXLConditioning}
