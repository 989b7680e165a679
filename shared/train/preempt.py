"""Preemption: a signal only sets a flag; the training loop saves at the next step boundary and exits with 75.

Exit-code convention: PREEMPTED_EXIT_CODE = 75 (EX_TEMPFAIL in sysexits.h, "try again later") means "a checkpoint
was saved, the run is not finished, start the same command again". 0 means finished; anything else is a real
failure. The loop also writes `<run_dir>/preempted.json` (removed when the run resumes), for launchers such as
torchrun that replace a worker's exit code with their own.

SLURM: `#SBATCH --requeue --signal=B:USR2@120` sends SIGUSR2 120 s before the time limit; SIGTERM arrives on
`scancel`/preemption. A batch script then does

    srun python -m my.train run_dir=... ; rc=$?
    if [ $rc -eq 75 ]; then scontrol requeue "$SLURM_JOB_ID"; fi; exit $rc

and the requeued job resumes from the run directory by itself.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Iterable

import torch

from shared.launch import PREEMPTED_EXIT_CODE  # 75: one definition for launcher and loop

DEFAULT_SIGNALS = ("SIGUSR2", "SIGTERM")


class Preempted(SystemExit):
    """Raised after the preemption checkpoint is written; uncaught, the process exits with PREEMPTED_EXIT_CODE."""

    def __init__(self, step: int, signal_name: str | None = None):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.step = step
        self.signal_name = signal_name


class PreemptionHandler:
    """Install with `install()`; `requested()` says (agreed across processes) whether to stop at this boundary."""

    def __init__(self, signals: Iterable[str | int] = DEFAULT_SIGNALS):
        self.signals = [signal.Signals[s] if isinstance(s, str) else signal.Signals(s) for s in signals]
        self.flag = False
        self.signal_name: str | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only set a flag: saving inside a signal handler could interrupt a half-done optimizer step.
        self.flag = True
        self.signal_name = signal.Signals(signum).name

    def install(self) -> "PreemptionHandler":
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread; rely on the caller's handling
        for sig in self.signals:
            if sig not in self._previous:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def requested(self, device: torch.device | str = "cpu") -> bool:
        """True if any process got a signal. Collective in distributed runs, so every rank stops at the same step."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            flag = torch.tensor([1 if self.flag else 0], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            return bool(flag.item())
        return self.flag
