"""Image folders for evaluation: list images, find their captions, read them in batches, skip unreadable ones.

A folder holds `<stem>.png|.jpg|...` images (searched recursively, sorted by relative path); each image's
prompt is `<stem>.txt` beside it, or the `caption` of its `file` entry in a `metadata.jsonl` of that folder.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from shared.data.decode import decode_image, read_file
from shared.data.skips import BadSample, SkipCounter

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def image_files(folder: str | Path) -> list[Path]:
    """The image files under `folder` (recursive), sorted by relative path: a samples/reference set for the metrics.
    (Not `shared.data.list_images`, which reads a training folder with its captions and skip rules.)"""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    # a dangling link is listed (and then skipped and counted as unreadable), not silently left out
    return sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and (p.is_file() or (p.is_symlink() and not p.exists()))),
                  key=lambda p: p.relative_to(folder).as_posix())


def fingerprint(folder: str | Path, files: list[Path]) -> str:
    """A cheap id of an image set: hash of relative paths and file sizes (stable across machines and copies)."""
    h = hashlib.sha256()
    for p in files:
        size = p.stat().st_size if p.exists() else -1  # a dangling link has no size
        h.update(f"{p.relative_to(folder).as_posix()}\0{size}\n".encode())
    return h.hexdigest()[:12]


def set_id(folder: str | Path, files: list[Path]) -> str:
    return f"{Path(folder).resolve().name}:{len(files)}:{fingerprint(folder, files)}"


def read_captions(folder: str | Path, files: list[Path]) -> dict[Path, str]:
    """Caption per image: `<stem>.txt` wins over metadata.jsonl; images without one are left out."""
    folder = Path(folder)
    captions: dict[Path, str] = {}
    by_dir: dict[Path, dict[str, str]] = {}
    for p in files:
        txt = p.with_suffix(".txt")
        if txt.is_file():
            captions[p] = txt.read_text(errors="replace").strip()
            continue
        if p.parent not in by_dir:
            by_dir[p.parent] = _metadata_captions(p.parent)
        cap = by_dir[p.parent].get(p.name)
        if cap is not None:
            captions[p] = cap
    return captions


def _metadata_captions(folder: Path) -> dict[str, str]:
    meta = folder / "metadata.jsonl"
    out: dict[str, str] = {}
    if not meta.is_file():
        return out
    for line in meta.read_text(errors="replace").splitlines():
        try:
            d = json.loads(line)
            out[Path(str(d["file"])).name] = str(d.get("caption", d.get("text", d.get("prompt"))))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a broken line only loses that caption
    return out


def read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB through the shared decoder (16-bit scaled, alpha composited on white, EXIF orientation).
    Raises BadSample (reason, file) for a missing, empty, truncated or non-image file."""
    return np.asarray(decode_image(read_file(path), str(path)), dtype=np.uint8).copy()


def resolution_of(sizes: set[tuple[int, int]]) -> str:
    if len(sizes) == 1:
        h, w = next(iter(sizes))
        return f"{h}x{w}"
    return "mixed" if sizes else "none"


@dataclass
class Batch:
    paths: list[Path]
    images: list[np.ndarray]  # uint8 (H, W, 3), sizes may differ
    captions: list[str | None]
    cache: dict = field(default_factory=dict)  # features/logits computed once per batch, shared by metrics


@dataclass
class ReadReport:
    found: int = 0
    read: int = 0
    unreadable: list[str] = field(default_factory=list)  # "relative/path: reason (detail)"
    sizes: set = field(default_factory=set)
    skips: SkipCounter = field(default_factory=lambda: SkipCounter(log_first=0))  # per-reason counts

    @property
    def skipped(self) -> dict:
        """{reason: count} of the images left out (what the JSON results and summaries show)."""
        return dict(sorted(self.skips.counts.items()))

    @property
    def resolution(self) -> str:
        return resolution_of(self.sizes)


def iter_batches(folder: str | Path, files: list[Path], batch_size: int, report: ReadReport,
                 captions: dict[Path, str] | None = None) -> Iterator[Batch]:
    """Batches of readable images; unreadable files are recorded in `report` and skipped, never raised."""
    folder = Path(folder)
    captions = captions or {}
    report.found += len(files)
    paths, images = [], []
    for p in files:
        report.skips.add_seen()
        try:
            img = read_image(p)
        except BadSample as e:  # the decoder sorts every PIL failure into a reason
            rel = p.relative_to(folder).as_posix()
            report.skips.record(e.reason, rel, e.detail)
            report.unreadable.append(f"{rel}: {e.reason}" + (f" ({e.detail})" if e.detail else ""))
            continue
        report.read += 1
        report.sizes.add(img.shape[:2])
        paths.append(p)
        images.append(img)
        if len(paths) == batch_size:
            yield Batch(paths, images, [captions.get(q) for q in paths])
            paths, images = [], []
    if paths:
        yield Batch(paths, images, [captions.get(q) for q in paths])
