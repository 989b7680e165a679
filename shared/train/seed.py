"""Seeding and RNG state capture/restore (python, numpy, torch CPU/CUDA, and named generators).

States are converted to plain Python values and tensors, so a checkpoint can hold them and be read back with
`torch.load(weights_only=True)` (numpy arrays inside RNG states are stored as tensors and converted back).
"""
from __future__ import annotations

import random
from typing import Any, Mapping

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def _to_safe(value: Any) -> Any:
    """numpy arrays -> tagged tensors, recursively; everything else in an RNG state is already plain."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(value.astype(np.int64)), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {k: _to_safe(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to_safe(v) for v in value)
    return value


def _from_safe(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy().astype(value["dtype"])
        return {k: _from_safe(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_from_safe(v) for v in value)
    return value


def generator_state(gen: Any) -> Any:
    if isinstance(gen, torch.Generator):
        return {"kind": "torch", "state": gen.get_state()}
    if isinstance(gen, np.random.Generator):
        return {"kind": "numpy", "state": _to_safe(gen.bit_generator.state)}
    if isinstance(gen, np.random.RandomState):
        return {"kind": "numpy_legacy", "state": _to_safe(gen.get_state())}
    if isinstance(gen, random.Random):
        return {"kind": "python", "state": gen.getstate()}
    raise TypeError(f"cannot checkpoint a generator of type {type(gen).__name__}")


def set_generator_state(gen: Any, state: Mapping) -> None:
    kind = state["kind"]
    if kind == "torch":
        gen.set_state(state["state"])
    elif kind == "numpy":
        gen.bit_generator.state = _from_safe(state["state"])
    elif kind == "numpy_legacy":
        gen.set_state(_from_safe(state["state"]))
    elif kind == "python":
        gen.setstate(state["state"])
    else:
        raise ValueError(f"unknown generator state kind {kind!r}")


def capture_rng(generators: Mapping[str, Any] | None = None) -> dict:
    """Every RNG state of this process, as weights-only-loadable values."""
    state = {
        "python": random.getstate(),
        "numpy": _to_safe(np.random.get_state()),
        "torch": torch.get_rng_state(),
        # Only read CUDA states once CUDA is in use: querying them would initialise CUDA in CPU-only jobs.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "generators": {name: generator_state(g) for name, g in (generators or {}).items()},
    }
    return state


def restore_rng(state: Mapping, generators: Mapping[str, Any] | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(_from_safe(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", {})
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise KeyError(f"checkpoint has no state for generator {name!r} (it has: {', '.join(saved) or 'none'})")
        set_generator_state(gen, saved[name])
