"""The toy digits dataset: sklearn's 8x8 digits, upscaled to 32x32 RGB and tinted in one of 8 named colours.

Captions read like "a red handwritten seven", so text-to-image models can be trained and prompt accuracy
measured with the digits classifier. Everything here is deterministic given the seed.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "cyan": (40, 220, 220),
    "magenta": (220, 50, 220),
    "orange": (250, 140, 20),
    "white": (240, 240, 240),
}
COLOUR_NAMES = list(COLOURS)
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_CAPTION_RE = re.compile(r"\b(" + "|".join(COLOUR_NAMES) + r")\b.*\b(" + "|".join(DIGIT_WORDS) + r")\b")


def caption(digit: int, colour: str) -> str:
    return f"a {colour} handwritten {DIGIT_WORDS[digit]}"


def parse_caption(text: str) -> tuple[int, int] | None:
    """(digit, colour index) asked for by a prompt, or None if it names no colour and digit."""
    m = _CAPTION_RE.search(text.lower())
    if not m:
        return None
    return DIGIT_WORDS.index(m.group(2)), COLOUR_NAMES.index(m.group(1))


def render(image8: np.ndarray, colour: str, size: int = 32) -> Image.Image:
    """An 8x8 sklearn digit (values 0..16) as a size x size RGB image, strokes tinted on black."""
    gray = Image.fromarray((np.clip(image8, 0, 16) / 16.0 * 255).astype(np.uint8), mode="L")
    gray = np.asarray(gray.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    rgb = gray[..., None] * np.asarray(COLOURS[colour], dtype=np.float32)[None, None, :]
    return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), mode="RGB")


@dataclass(frozen=True)
class Record:
    file: str
    caption: str
    digit: int
    colour: int


def read_split(split_dir: str | Path) -> list[Record]:
    """Records of a prepared split (its metadata.jsonl), with a clear error if it is missing or broken."""
    meta = Path(split_dir) / "metadata.jsonl"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: missing; run shared/toy/prepare.py first")
    records = []
    for lineno, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            records.append(Record(d["file"], d["caption"], int(d["digit"]), int(d["colour"])))
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            raise ValueError(f"{meta}:{lineno}: bad record ({e}); expected file, caption, digit, colour") from None
    return records


def load_arrays(split_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 N,H,W,3; digits N; colours N) of a prepared split. Images that cannot be read or decoded are
    left out with their labels, counted and named in a warning (shared.data's skip path)."""
    from shared.data import BadSample, SkipCounter, decode_image, read_file

    split_dir = Path(split_dir)
    skips, kept, images = SkipCounter(), [], []
    for r in read_split(split_dir):
        skips.add_seen()
        try:
            images.append(np.asarray(decode_image(read_file(split_dir / r.file), str(split_dir / r.file))))
            kept.append(r)
        except BadSample as e:
            skips.record(e.reason, e.file, e.detail)
    if skips.counts:
        warnings.warn(f"{split_dir}: {skips.summary()}\n{skips.listing()}", stacklevel=2)
    if not kept:
        raise ValueError(f"{split_dir}: no readable images ({skips.summary()})")
    return np.stack(images), np.array([r.digit for r in kept]), np.array([r.colour for r in kept])
