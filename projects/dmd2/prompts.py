"""Prompts and class labels (light: no torch import), shared by prepare, the backbones and sampling."""
from __future__ import annotations

from pathlib import Path

from shared.toy.dataset import COLOUR_NAMES, parse_caption


def label_of_prompt(prompt: str) -> int:
    """Class index of a prompt: toy digits captions ("a red handwritten seven" -> digit * 8 + colour), or the
    index itself for class-conditional sets such as ImageNet ("207")."""
    if prompt.strip().isdigit():
        return int(prompt)
    parsed = parse_caption(prompt)
    if parsed is None:
        raise ValueError(f"prompt {prompt!r} names no digit and colour (and is not a class index)")
    return parsed[0] * len(COLOUR_NAMES) + parsed[1]


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines are skipped."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in lines if p]
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts
