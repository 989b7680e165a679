"""Prompt accuracy (toy scale): does the digits classifier see the digit and colour the caption asked for?"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.toy.dataset import parse_caption


@dataclass
class PromptAccuracy:
    """Counts over images whose caption names a digit and a colour; others are counted as `unparsed`."""

    total: int = 0
    digit_hits: int = 0
    colour_hits: int = 0
    joint_hits: int = 0
    unparsed: int = 0
    # per counted image, 1 = right, for the bootstrap of each accuracy: {"digit": [...], "colour": [...], "joint": [...]}
    per_image: dict[str, list[int]] = field(default_factory=lambda: {"digit": [], "colour": [], "joint": []})

    def update(self, digit_logits, colour_logits, captions: list[str | None]) -> None:
        pd = np.asarray(digit_logits).argmax(1)
        pc = np.asarray(colour_logits).argmax(1)
        for i, text in enumerate(captions):
            asked = parse_caption(text) if text else None
            if asked is None:
                self.unparsed += 1
                continue
            d_ok, c_ok = pd[i] == asked[0], pc[i] == asked[1]
            self.total += 1
            self.digit_hits += int(d_ok)
            self.colour_hits += int(c_ok)
            self.joint_hits += int(d_ok and c_ok)
            for key, ok in (("digit", d_ok), ("colour", c_ok), ("joint", d_ok and c_ok)):
                self.per_image[key].append(int(ok))

    def compute(self) -> dict[str, float]:
        if self.total == 0:
            raise ValueError("prompt accuracy: no image has a caption naming a digit and a colour "
                             f"({self.unparsed} images without a usable caption)")
        return {"digit": self.digit_hits / self.total, "colour": self.colour_hits / self.total,
                "joint": self.joint_hits / self.total}
