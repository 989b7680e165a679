"""Image folders with captions: caption files, folder-name prompts, and a listing for `--list` dry-runs.

Prompt of an image, first that applies:
  1. `<stem>.txt` next to it (whole file, stripped, lines joined with spaces), else
  2. `<stem>.cap` (`#` lines are comments; the first non-empty non-comment line is the caption), else
  3. a `caption`/`text` field for it in the folder's `metadata.jsonl` (keyed by `file` or `file_name`), else
  4. the folder prompt: the folders between the root and the image, joined with ", ", where
       `__name`  skips that folder and everything below it,
       `_name`   hides that level but keeps its subfolders,
       `long_hair` becomes "long hair".
     So `root/_v2/girl/long_hair/a.jpg` -> "girl, long hair".
Other `metadata.jsonl` fields (e.g. the digits' `digit`, `colour`) are kept as the image's metadata.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from shared.data.decode import decode_image, read_file
from shared.data.skips import BadSample

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
METADATA_FILE = "metadata.jsonl"


def read_caption_file(path: str | Path) -> str:
    """Caption in a .txt or .cap file ('' if it has none)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".cap":
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                return line
        return ""
    return " ".join(text.split())


def folder_prompt(parts: Sequence[str]) -> str | None:
    """Prompt from folder names between the root and an image; None if a `__` folder excludes it."""
    words = []
    for part in parts:
        if part.startswith("__"):
            return None
        if part.startswith("_"):
            continue
        word = " ".join(part.replace("_", " ").split())
        if word:
            words.append(word)
    return ", ".join(words)


@dataclass(frozen=True)
class FolderItem:
    path: str  # relative to the root, '/'-separated
    prompt: str
    source: str  # "txt", "cap", "metadata", "folder", or "none" (no prompt at all)
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class FolderListing:
    root: Path
    items: list[FolderItem]
    skipped_dirs: list[str]  # `__` folders, relative to the root
    empty_caption_files: list[str]

    @property
    def counts(self) -> dict[str, Any]:
        by_source = Counter(i.source for i in self.items)
        return {"images": len(self.items), "with_prompt": len(self.items) - by_source.get("none", 0),
                "without_prompt": by_source.get("none", 0), "by_source": dict(sorted(by_source.items())),
                "skipped_dirs": len(self.skipped_dirs), "empty_caption_files": len(self.empty_caption_files),
                "distinct_prompts": len({i.prompt for i in self.items if i.prompt})}

    def report(self, limit: int | None = None) -> str:
        """One line per image (`path<TAB>prompt<TAB>[source]`), then skipped folders and counts."""
        lines = [f"{i.path}\t{i.prompt or '<no prompt>'}\t[{i.source}]" for i in self.items[:limit]]
        if limit is not None and len(self.items) > limit:
            lines.append(f"... {len(self.items) - limit} more images")
        lines += [f"skipped folder (and its subtree): {d}" for d in self.skipped_dirs]
        lines += [f"empty caption file (folder prompt used): {f}" for f in self.empty_caption_files]
        c = self.counts
        lines.append(f"{c['images']} images under {self.root}: {c['with_prompt']} with a prompt "
                     f"({', '.join(f'{k}={v}' for k, v in c['by_source'].items())}), "
                     f"{c['distinct_prompts']} distinct prompts, {c['skipped_dirs']} folders skipped")
        return "\n".join(lines)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for i in self.items:
            h.update(f"{i.path}\0{i.prompt}\n".encode())
        return h.hexdigest()[:16]


def _read_metadata(path: Path) -> dict[str, dict]:
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            name = d.pop("file_name", None) or d.pop("file")
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}:{lineno}: expected a JSON object with 'file' or 'file_name'") from None
        out[name] = d
    return out


def list_images(root: str | Path, exts: Sequence[str] = IMAGE_EXTS, metadata: str = METADATA_FILE) -> FolderListing:
    """Every image under `root` with its prompt (see the module doc), in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder of images")
    exts = tuple(e.lower() for e in exts)
    items, skipped, empty = [], [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("__"):
                skipped.append((rel_dir / d).as_posix())
            elif not d.startswith("."):
                keep.append(d)
        dirnames[:] = keep  # prune: os.walk does not descend into removed folders
        prompt = folder_prompt(rel_dir.parts)
        names = set(filenames)
        meta = _read_metadata(Path(dirpath) / metadata) if metadata in names else {}
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in exts or name.startswith("."):
                continue
            rel = (rel_dir / name).as_posix()
            extra = dict(meta.get(name, {}))
            meta_caption = extra.pop("caption", None) or extra.pop("text", None)
            caption, source = "", ""
            for cap_ext in (".txt", ".cap"):
                if stem + cap_ext in names:
                    caption = read_caption_file(Path(dirpath) / (stem + cap_ext))
                    if caption:
                        source = cap_ext[1:]
                        break
                    empty.append((rel_dir / (stem + cap_ext)).as_posix())
            if not source and meta_caption:
                caption, source = str(meta_caption).strip(), "metadata"
            if not source and prompt:
                caption, source = prompt, "folder"
            items.append(FolderItem(rel, caption, source or "none", extra))
    items.sort(key=lambda i: i.path)
    return FolderListing(root, items, sorted(skipped), sorted(empty))


class FolderSource:
    """Loader source over an image folder: one unit per image, shuffled per epoch by the loader.

    Samples: {"image": transform(PIL RGB), "caption": str, "key": relative path, **{k: meta[k] for extra_keys}}.
    Images without a prompt are skipped as `missing_caption` unless `allow_empty_caption`; images whose shorter
    side is below `min_size` are filtered (`too_small`). Decoding follows shared.data.decode (every PIL mode, alpha
    composited on `background`, EXIF orientation).
    """

    buffered = False  # units are single images; the loader's unit shuffle is a full shuffle

    def __init__(self, root: str | Path, transform: Callable | None = None, extra_keys: Sequence[str] = (),
                 allow_empty_caption: bool = False, exts: Sequence[str] = IMAGE_EXTS,
                 listing: FolderListing | None = None, min_size: int = 0,
                 background: tuple[int, int, int] = (255, 255, 255)):
        from shared.data.transforms import to_uint8_tensor

        self.root = Path(root)
        self.listing = listing or list_images(self.root, exts)
        self.items = [(i.path, i.prompt, i.meta) for i in self.listing.items]  # plain tuples pickle fast
        self.transform = transform or to_uint8_tensor
        self.extra_keys = tuple(extra_keys)
        self.allow_empty_caption = allow_empty_caption
        self.min_size, self.background = int(min_size), tuple(background)

    def __repr__(self) -> str:
        return f"FolderSource({self.root}, {len(self.items)} images)"

    def units(self) -> Sequence:
        return self.items

    def fingerprint(self) -> str:
        return f"folder:{len(self.items)}:{self.listing.fingerprint()}"

    def read(self, unit, report) -> Iterator:
        yield unit  # the file is read in decode(), so a resume's fast-forward costs nothing

    def decode(self, raw) -> dict:
        rel, prompt, meta = raw
        name = str(self.root / rel)
        if not prompt and not self.allow_empty_caption:
            raise BadSample("missing_caption", name, "no caption file and no folder prompt")
        img = decode_image(read_file(self.root / rel), name, background=self.background, min_size=self.min_size)
        sample = {"image": self.transform(img), "caption": prompt, "key": rel}
        for k in self.extra_keys:
            if k not in meta:
                raise BadSample("missing_field", name, f"no '{k}' in {METADATA_FILE}")
            sample[k] = meta[k]
        return sample
