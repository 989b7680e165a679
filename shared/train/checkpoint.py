"""Atomic, self-validating training checkpoints that keep the last N plus named milestones.

Layout of one checkpoint, `<dir>/ckpt-<step:08d>/`:

    <stem>.safetensors   weights, one file per model / EMA (written by rank 0)
    state.pt             optimizer, LR-scheduler, grad-scaler and other counters (rank 0; tensors + plain values)
    rank<r:05d>.pt       per-process state: RNG states and data-loader position (every rank)
    meta.json            written last: step, milestone, and every file's size

Everything is written into a hidden `.ckpt-<step>.tmp/` directory, each file fsynced, then the directory is renamed
into place and the parent fsynced. A checkpoint is *complete* when its meta.json exists and every file it lists has
the recorded size; `latest()` returns the newest complete one, so a process killed mid-write (or a disk that lost a
file) makes a resume fall back to the previous checkpoint. `.pt` files are read with `torch.load(weights_only=True)`:
no arbitrary unpickling.

Test hook: SHARED_TRAIN_CKPT_FAULT = "die" | "pause:SECONDS", optionally "@N" to act only on the N-th save of the
process (e.g. "die@2", "pause@1:5"). It fires mid-write: after the weights and state are on disk, before meta.json
and the rename; "die" SIGKILLs the process.

A full disk: the write fails with shared.io.DiskFull "no space left on device while writing <file> (<n> bytes
free)" (torch.save and safetensors themselves say "unexpected pos ..." or "basic_ios::clear", naming nothing), the
partial checkpoint is removed, and the previous one stays the newest complete checkpoint.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from shared.io import _fsync_dir, replace_dir, reporting_disk_full

FAULT_ENV = "SHARED_TRAIN_CKPT_FAULT"
_NAME_RE = re.compile(r"^ckpt-(\d{8,})$")
_STEM_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def dist_info() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) outside distributed runs."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    if dist_info()[1] > 1:
        torch.distributed.barrier()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def cpu_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no two sharing storage (safetensors refuses tied weights)."""
    out, seen = {}, set()
    for k, v in state.items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[k] = t
    return out


def _parse_fault(spec: str) -> tuple[str, int | None, float]:
    """"die", "die@2", "pause:3", "pause@1:3" -> (action, nth save or None, seconds)."""
    action, _, seconds = spec.partition(":")
    action, _, nth = action.partition("@")
    if action not in ("die", "pause"):
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected die[@N] or pause[@N]:SECONDS")
    return action, int(nth) if nth else None, float(seconds or 0)


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    meta: dict

    @property
    def milestone(self) -> str | None:
        return self.meta.get("milestone")


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, keep_last: int = 3):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.dir = Path(directory)
        self.keep_last = keep_last
        self._saves = 0
        self.rank, self.world_size = dist_info()
        if self.rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in [*self.dir.glob(".ckpt-*.tmp"), *self.dir.glob(".ckpt-*.old"), *self.dir.glob(".trash-*")]:
                shutil.rmtree(stale, ignore_errors=True)  # left by a process killed mid-write or mid-prune
        barrier()

    # ---- reading -------------------------------------------------------------------------------------------
    def info(self, path: Path) -> CheckpointInfo | None:
        """The checkpoint at `path` if it is complete, else None (with a warning)."""
        m = _NAME_RE.match(path.name)
        if not m or not path.is_dir():
            return None
        try:
            meta = json.loads((path / "meta.json").read_text())
            for name, size in meta["files"].items():
                if (path / name).stat().st_size != size:
                    raise ValueError(f"{name} has {(path / name).stat().st_size} bytes, expected {size}")
        except (OSError, ValueError, KeyError) as e:
            warnings.warn(f"{path}: incomplete or damaged checkpoint, ignored ({e})", stacklevel=3)
            return None
        return CheckpointInfo(path, int(m.group(1)), meta)

    def list(self) -> list[CheckpointInfo]:
        """Complete checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        found = (self.info(p) for p in self.dir.iterdir() if _NAME_RE.match(p.name))
        return sorted((c for c in found if c is not None), key=lambda c: c.step)

    def latest(self) -> CheckpointInfo | None:
        done = self.list()
        return done[-1] if done else None

    @staticmethod
    def load_tensors(info: CheckpointInfo, stem: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        path = info.path / f"{stem}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint has no '{stem}' weights")
        device = torch.device(device)
        # safetensors accepts "cpu" and "cuda:N" but not "cpu:0" (accelerate's device in multi-CPU runs).
        return load_file(str(path), device="cpu" if device.type == "cpu" else str(device))

    @staticmethod
    def load_state(info: CheckpointInfo, name: str = "state.pt") -> dict:
        return torch.load(info.path / name, map_location="cpu", weights_only=True)

    @classmethod
    def load_rank_state(cls, info: CheckpointInfo, rank: int) -> dict:
        saved_world = int(info.meta.get("world_size", 1))
        if rank >= saved_world:
            warnings.warn(f"{info.path}: saved by {saved_world} processes; rank {rank} takes rank "
                          f"{rank % saved_world}'s RNG and data state", stacklevel=2)
        return cls.load_state(info, f"rank{rank % saved_world:05d}.pt")

    # ---- writing -------------------------------------------------------------------------------------------
    def _fault(self, tmp: Path) -> None:
        spec = os.environ.get(FAULT_ENV, "")
        if not spec:
            return
        action, nth, seconds = _parse_fault(spec)
        if nth is not None and nth != self._saves:
            return
        if action == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(seconds)

    def save(self, step: int, *, tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
             state: Mapping[str, Any] | None = None, rank_state: Mapping[str, Any] | None = None,
             milestone: str | None = None, meta: Mapping[str, Any] | None = None) -> Path:
        """Write checkpoint `step`. Collective: every rank calls it with its own `rank_state`; `tensors` (file stem
        -> state dict) and `state` are taken from rank 0 only."""
        self._saves += 1
        final = self.dir / f"ckpt-{step:08d}"
        tmp = self.dir / f".ckpt-{step:08d}.tmp"
        try:
            return self._save(step, final, tmp, tensors, state, rank_state, milestone, meta)
        except OSError:
            # a full disk (DiskFull names the file): give the partial write's space back; the previous checkpoint
            # was never touched, so a resume loads it
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _save(self, step, final, tmp, tensors, state, rank_state, milestone, meta) -> Path:
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        rank_file = tmp / f"rank{self.rank:05d}.pt"
        with reporting_disk_full(rank_file):
            torch.save(dict(rank_state or {}), rank_file)
            _fsync_file(rank_file)
        if self.rank == 0:
            for stem, sd in (tensors or {}).items():
                if not _STEM_RE.match(stem):
                    raise ValueError(f"bad checkpoint file stem {stem!r} (letters, digits, _ . - only)")
                path = tmp / f"{stem}.safetensors"
                with reporting_disk_full(path):
                    save_file(cpu_tensors(sd), str(path), metadata={"step": str(step)})
                    _fsync_file(path)
            self._fault(tmp)
            with reporting_disk_full(tmp / "state.pt"):
                torch.save(dict(state or {}), tmp / "state.pt")
                _fsync_file(tmp / "state.pt")
        barrier()
        if self.rank == 0:
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
            record = {"step": step, "milestone": milestone, "world_size": self.world_size,
                      "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files, **dict(meta or {})}
            with reporting_disk_full(tmp / "meta.json"):
                (tmp / "meta.json").write_text(json.dumps(record, indent=2) + "\n")
                _fsync_file(tmp / "meta.json")
            _fsync_dir(tmp)
            replace_dir(tmp, final)  # the same step saved again (a milestone tag added) is swapped out
            self.prune()
        barrier()
        return final

    def prune(self) -> list[Path]:
        """Delete all but the newest `keep_last` checkpoints that are not milestones; returns what was removed."""
        plain = [c for c in self.list() if not c.milestone]
        removed = []
        for c in plain[:-self.keep_last]:
            trash = self.dir / f".trash-{c.path.name}"
            os.replace(c.path, trash)  # hide it first: a half-deleted checkpoint never looks complete
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(c.path)
        return removed
