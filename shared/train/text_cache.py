"""On-disk cache of frozen text-encoder outputs, for projects that fine-tune only the denoiser.

Entries are keyed by the encoder identity (tokenizer id, model id, revision, max length, ... as a mapping or string)
and the exact text; each entry is one safetensors file holding every output tensor of that text (e.g.
`prompt_embeds`, `pooled_prompt_embeds`), written atomically. Changing any part of the identity gives a new
namespace, so stale embeddings are never served.

    cache = TextEmbeddingCache("cache/text", {"tokenizer": tok_id, "model": enc_id, "max_length": 77})
    out = cache(captions, encode)   # encode(list[str]) -> dict of (B, ...) tensors; only misses are encoded
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from shared.io import atomic_path

Encoded = Mapping[str, torch.Tensor] | torch.Tensor
SINGLE = "embeds"  # the key a plain-tensor encoder output is stored under


def _identity(encoder_id: str | Mapping) -> str:
    return encoder_id if isinstance(encoder_id, str) else json.dumps(dict(encoder_id), sort_keys=True)


class TextEmbeddingCache:
    def __init__(self, cache_dir: str | Path, encoder_id: str | Mapping, *, memory: bool = True):
        """`memory`: also keep entries read or written in this process in RAM (small caption sets)."""
        self.encoder_id = _identity(encoder_id)
        namespace = hashlib.sha256(self.encoder_id.encode()).hexdigest()[:16]
        self.dir = Path(cache_dir) / namespace
        self.memory = {} if memory else None
        self.hits = self.misses = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "encoder.json"
        if not info.is_file():
            with atomic_path(info) as tmp:
                tmp.write_text(json.dumps({"encoder_id": self.encoder_id}) + "\n")

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.encoder_id}\0{text}".encode()).hexdigest()

    def path(self, text: str) -> Path:
        k = self.key(text)
        return self.dir / k[:2] / f"{k}.safetensors"

    def get(self, text: str) -> dict[str, torch.Tensor] | None:
        if self.memory is not None and text in self.memory:
            return self.memory[text]
        path = self.path(text)
        if not path.is_file():
            return None
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("text") != text or meta.get("encoder_id") != self.encoder_id:
                return None  # not ours (hash collision or a damaged file): recompute
            entry = {k: f.get_tensor(k) for k in f.keys()}
        if self.memory is not None:
            self.memory[text] = entry
        return entry

    def put(self, text: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        entry = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        with atomic_path(self.path(text)) as tmp:
            save_file(entry, str(tmp), metadata={"text": text, "encoder_id": self.encoder_id})
        if self.memory is not None:
            self.memory[text] = entry
        return entry

    def __call__(self, texts: Sequence[str], encode: Callable[[list[str]], Encoded],
                 batch_size: int = 0) -> dict[str, torch.Tensor] | torch.Tensor:
        """Outputs for `texts` stacked in order (B, ...), on CPU; misses go through `encode` (in chunks of
        `batch_size` if > 0) and are stored. Returns a tensor if `encode` returns one, else a dict."""
        entries: dict[str, dict[str, torch.Tensor]] = {}
        missing = []
        for t in dict.fromkeys(texts):  # unique, in order
            e = self.get(t)
            if e is None:
                missing.append(t)
            else:
                entries[t] = e
        self.hits += len(entries)
        self.misses += len(missing)
        step = batch_size if batch_size > 0 else max(1, len(missing))
        for i in range(0, len(missing), step):
            chunk = missing[i:i + step]
            with torch.no_grad():
                out = encode(chunk)
            if isinstance(out, torch.Tensor):
                out = {SINGLE: out}
            for j, t in enumerate(chunk):
                entries[t] = self.put(t, {k: v[j] for k, v in out.items()})
        if not texts:
            return {}
        keys = list(entries[texts[0]])
        stacked = {k: torch.stack([entries[t][k] for t in texts]) for k in keys}
        return stacked[SINGLE] if keys == [SINGLE] else stacked

    def precompute(self, texts: Sequence[str], encode: Callable[[list[str]], Encoded], batch_size: int = 64) -> int:
        """Encode every text not yet cached (e.g. all captions of a dataset, before training); returns how many."""
        todo = [t for t in dict.fromkeys(texts) if not self.path(t).is_file()]
        for i in range(0, len(todo), batch_size):
            self(todo[i:i + batch_size], encode)
        return len(todo)
