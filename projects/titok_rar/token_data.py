"""Pretokenized data: a dataset encoded once by a tokenizer, for the generators to train from.

    from projects.titok_rar.token_data import write_tokens, load_tokens
    write_tokens("data/toy/titok_tokens/k16", tokens, labels, meta={"num_tokens": 16, "codebook_size": 64,
                 "tokenizer": "results/toy/titok/k16/stage2/final", "crops": 1})
    data = load_tokens("data/toy/titok_tokens/k16")
    data.tokens[i]      # (K,) or (crops, K) integer array, memory-mapped
    data.labels[i]      # int64 class id
    data.captions       # list of N strings, or None

A token folder holds

    tokens.npy      integer array (N, K), or (N, crops, K) with the ten-crop option; the smallest unsigned
                    dtype that holds every code (uint8 up to 256 codes, uint16 up to 65536, else int32/int64)
    labels.npy      int64 (N,)
    captions.json   optional: list of N strings (text-conditioned generators, MaskGen)
    meta.json       {"num_tokens": K, "codebook_size": C, "tokenizer": "<path>", "crops": n, "count": N}

Why `.npy` and not the original's JSONL (one `{"class_id": ..., "tokens": [...]}` line per image): a JSONL
file must be parsed in full, in Python, before the first step (ImageNet at 10 crops x 1.28M images x 128
tokens is ~1.6e9 integers as text, minutes to parse and tens of GB of Python ints), whereas `np.load(...,
mmap_mode="r")` opens in microseconds, pages in only the rows a worker reads, is shared between DataLoader
workers through the page cache, and stores 2 bytes per token (uint16 for a 4096/8192 codebook) instead of
~5 characters. The folder is written atomically (`shared.io.atomic_dir`): a reader never sees a half-written
token set and a crashed pretokenization leaves the previous one in place.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shared.io import atomic_dir, read_json

META_KEYS = ("num_tokens", "codebook_size", "tokenizer", "crops", "count")


def token_dtype(codebook_size: int) -> np.dtype:
    """The smallest integer dtype that holds codes 0..codebook_size-1."""
    for dt in (np.uint8, np.uint16, np.int32):
        if codebook_size - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


@dataclasses.dataclass
class TokenData:
    """A loaded token folder. `tokens` and `labels` are read-only memory maps."""
    folder: Path
    tokens: np.ndarray          # (N, K) or (N, crops, K)
    labels: np.ndarray          # (N,) int64
    captions: list[str] | None
    meta: dict

    @property
    def num_tokens(self) -> int:
        return int(self.meta["num_tokens"])

    @property
    def codebook_size(self) -> int:
        return int(self.meta["codebook_size"])

    @property
    def crops(self) -> int:
        return int(self.meta["crops"])

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def write_tokens(folder: str | Path, tokens: Any, labels: Any, captions: Sequence[str] | None = None,
                 meta: Mapping[str, Any] | None = None) -> Path:
    """Write a token folder atomically (a temp folder beside `folder`, then swapped in).

    `tokens`: (N, K) or (N, crops, K) integers (numpy or torch); `labels`: (N,); `captions`: N strings or None.
    `meta` must give `codebook_size` and `tokenizer`; `num_tokens`, `crops` and `count` are taken from the
    shapes (and checked against `meta` where it gives them).
    """
    folder = Path(folder)
    meta = dict(meta or {})
    tokens = _as_numpy(tokens)
    labels = _as_numpy(labels).astype(np.int64)
    if tokens.ndim not in (2, 3):
        raise ValueError(f"write_tokens({folder}): tokens must be (N, K) or (N, crops, K); got shape {tokens.shape}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"write_tokens({folder}): tokens must be integers; got {tokens.dtype}")
    n = tokens.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"write_tokens({folder}): labels must be ({n},) to match tokens; got {labels.shape}")
    if captions is not None:
        captions = [str(c) for c in captions]
        if len(captions) != n:
            raise ValueError(f"write_tokens({folder}): {len(captions)} captions for {n} token rows")
    for key in ("codebook_size", "tokenizer"):
        if key not in meta:
            raise ValueError(f"write_tokens({folder}): meta must give '{key}'")
    derived = {"num_tokens": int(tokens.shape[-1]), "crops": int(tokens.shape[1]) if tokens.ndim == 3 else 1,
               "count": int(n)}
    for key, value in derived.items():
        if key in meta and int(meta[key]) != value:
            raise ValueError(f"write_tokens({folder}): meta['{key}']={meta[key]} but tokens say {value}")
        meta[key] = value
    size = int(meta["codebook_size"])
    if tokens.size and (tokens.min() < 0 or tokens.max() >= size):
        raise ValueError(f"write_tokens({folder}): codes must lie in [0, {size}); got [{tokens.min()}, {tokens.max()}]")
    meta["tokenizer"] = str(meta["tokenizer"])
    with atomic_dir(folder) as tmp:
        np.save(tmp / "tokens.npy", tokens.astype(token_dtype(size)))
        np.save(tmp / "labels.npy", labels)
        if captions is not None:
            (tmp / "captions.json").write_text(json.dumps(captions))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_tokens(folder: str | Path, mmap: bool = True) -> TokenData:
    """Open a token folder; every shape is checked and a bad file is named in the error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no token folder (expected tokens.npy, labels.npy, meta.json; "
                                "run projects/titok_rar/pretokenize.py)")
    meta = read_json(folder / "meta.json")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{folder / 'meta.json'}: missing keys {missing} (expected {list(META_KEYS)})")
    mode = "r" if mmap else None
    try:
        tokens = np.load(folder / "tokens.npy", mmap_mode=mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder / 'tokens.npy'}: file not found") from None
    except ValueError as e:
        raise ValueError(f"{folder / 'tokens.npy'}: not a valid .npy array ({e})") from None
    try:
        labels = np.load(folder / "labels.npy", mmap_mode=mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder / 'labels.npy'}: file not found") from None
    except ValueError as e:
        raise ValueError(f"{folder / 'labels.npy'}: not a valid .npy array ({e})") from None
    n, k, crops = int(meta["count"]), int(meta["num_tokens"]), int(meta["crops"])
    want = (n, k) if crops == 1 and tokens.ndim == 2 else (n, crops, k)
    if tokens.shape != want or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{folder / 'tokens.npy'}: shape {tokens.shape} dtype {tokens.dtype}; meta.json says "
                         f"integer {want} (count={n}, crops={crops}, num_tokens={k})")
    if labels.shape != (n,) or labels.dtype != np.int64:
        raise ValueError(f"{folder / 'labels.npy'}: shape {labels.shape} dtype {labels.dtype}; expected int64 ({n},)")
    captions = None
    if (folder / "captions.json").exists():
        captions = read_json(folder / "captions.json")
        if not isinstance(captions, list) or len(captions) != n or not all(isinstance(c, str) for c in captions):
            raise ValueError(f"{folder / 'captions.json'}: expected a list of {n} strings")
    return TokenData(folder=folder, tokens=tokens, labels=labels, captions=captions, meta=meta)
