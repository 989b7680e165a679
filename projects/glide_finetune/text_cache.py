"""A bounded in-memory LRU cache of the frozen text side's outputs (xf_proj, xf_out), per caption.

    cache = LRUTextCache(encode, max_entries=4096)      # encode(list[str]) -> {"xf_proj": (B, D), "xf_out": (B, W, L)}
    out = cache(captions)                               # stacked in order; only misses are encoded (one batch)

Why in memory and bounded: one released-model entry is ~260 KB (512 x 128 floats + 768), so LAION-scale caption
sets (mostly unique) would fill any disk cache; what repeats during fine-tuning (the empty prompt of uncond_p,
repeated captions, a small dataset's epochs) stays in a fixed budget. For a small fixed caption set that should
survive restarts, train.py can use shared.train's on-disk TextEmbeddingCache instead (text_cache_dir=).
Why not TextEmbeddingCache itself: it never evicts (unbounded RAM with memory=True, unbounded disk without).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Mapping, Sequence

import torch


class LRUTextCache:
    def __init__(self, encode: Callable[[list[str]], Mapping[str, torch.Tensor]], max_entries: int = 4096):
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries}; must be >= 1")
        self.encode, self.max_entries = encode, int(max_entries)
        self.entries: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.entries]
        self.misses += len(missing)
        self.hits += len(texts) - sum(texts.count(t) for t in missing) if missing else len(texts)
        if missing:
            with torch.no_grad():
                out = self.encode(list(missing))
            for j, t in enumerate(missing):
                self.entries[t] = {k: v[j].detach() for k, v in out.items()}
        batch = [self.entries[t] for t in texts]
        for t in dict.fromkeys(texts):  # most recently used last
            self.entries.move_to_end(t)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
            self.evictions += 1
        return {k: torch.stack([e[k] for e in batch]) for k in batch[0]} if batch else {}
