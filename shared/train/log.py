"""Step metrics: averaged over `every` steps (and over processes), written to metrics.jsonl (and metrics.csv), shown
on a tqdm bar, and passed to extra sinks such as accelerate's wandb/tensorboard trackers.

Values may be tensors: they are kept on their device and read back once per written row, so logging every step
costs no device synchronisation.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from tqdm.auto import tqdm

from shared.io import write_text

Sink = Callable[[dict, int], None]


def _number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/nan; keep them visible as strings
    return v


class StepLogger:
    def __init__(self, run_dir: str | Path, *, every: int = 10, total_steps: int | None = None,
                 initial_step: int = 0, csv: bool = False, progress: bool = True, is_main: bool = True,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None, sinks: Iterable[Sink] = (),
                 desc: str = "train"):
        """`reduce`: averages a 1-D tensor of means across processes (collective: every rank must log the same
        keys at the same steps). Files and sinks are written by the main process only."""
        self.run_dir = Path(run_dir)
        self.every, self.is_main, self.reduce = every, is_main, reduce
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.csv_path = self.run_dir / "metrics.csv" if csv else None
        self.sinks = list(sinks)
        self._values: dict[str, list] = {}
        self._csv_columns: list[str] | None = None
        self._dropped_warned = False
        self._last_time, self._last_step = time.perf_counter(), initial_step
        self.bar = tqdm(total=total_steps, initial=initial_step, desc=desc, dynamic_ncols=True,
                        disable=not (progress and is_main))
        if is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def add(self, values: Mapping[str, float | torch.Tensor]) -> None:
        for k, v in values.items():
            self._values.setdefault(k, []).append(v.detach() if isinstance(v, torch.Tensor) else float(v))

    @property
    def pending(self) -> bool:
        """Values added since the last written row."""
        return bool(self._values)

    def end_step(self, step: int, extra: Callable[[], Mapping[str, Any]] | None = None) -> dict | None:
        """Called once per optimizer step; writes a row every `every` steps."""
        self.bar.update(1)
        if self.every > 0 and step % self.every == 0:
            return self.flush(step, extra() if extra else None)
        return None

    def _means(self) -> dict[str, float]:
        if not self._values:
            return {}
        keys = sorted(self._values)
        device = next((v.device for vs in self._values.values() for v in vs if isinstance(v, torch.Tensor)), "cpu")
        means = torch.stack([torch.stack([torch.as_tensor(v, device=device).float().reshape(()) for v in
                                          self._values[k]]).mean() for k in keys])
        if self.reduce is not None:
            means = self.reduce(means)
        self._values.clear()
        return dict(zip(keys, means.tolist()))

    def flush(self, step: int, extra: Mapping[str, Any] | None = None) -> dict:
        now = time.perf_counter()
        row: dict[str, Any] = {"step": step, **self._means(), **dict(extra or {})}
        if step > self._last_step:
            row["steps_per_sec"] = (step - self._last_step) / max(now - self._last_time, 1e-9)
        row["time"] = time.time()
        self._last_time, self._last_step = now, step
        if self.is_main:
            self._write(row)
            shown = {k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "time") and isinstance(v, float)}
            self.bar.set_postfix(shown, refresh=False)
        return row

    def write(self, step: int, values: Mapping[str, Any]) -> None:
        """Write one row now (e.g. evaluation results), from the main process, without averaging."""
        if self.is_main:
            self._write({"step": step, **values, "time": time.time()})

    def _write(self, row: dict) -> None:
        row = {k: _number(v) for k, v in row.items()}
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.csv_path is not None:
            self._write_csv(row)
        for sink in self.sinks:
            sink({k: v for k, v in row.items() if k not in ("step", "time")}, row["step"])

    def _write_csv(self, row: dict) -> None:
        if self._csv_columns is None:
            if self.csv_path.is_file() and self.csv_path.stat().st_size:
                with open(self.csv_path, newline="") as f:
                    self._csv_columns = next(csv.reader(f))
            else:
                self._csv_columns = list(row)
                with open(self.csv_path, "w", newline="") as f:
                    csv.writer(f).writerow(self._csv_columns)
        extra = set(row) - set(self._csv_columns)
        if extra and not self._dropped_warned:
            warnings.warn(f"{self.csv_path}: columns fixed by the first row; dropping {sorted(extra)} "
                          "(metrics.jsonl has every key)", stacklevel=3)
            self._dropped_warned = True
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(c, "") for c in self._csv_columns])

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (by a run that died before its next checkpoint), so a resumed run's log
        reads as one uninterrupted run."""
        if not self.is_main:
            return
        if self.jsonl_path.is_file():
            kept = []
            for line in self.jsonl_path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by the kill
            write_text(self.jsonl_path, "".join(k + "\n" for k in kept))
        if self.csv_path is not None and self.csv_path.is_file():
            rows = list(csv.reader(io.StringIO(self.csv_path.read_text())))
            if rows:
                header, body = rows[0], rows[1:]
                col = header.index("step") if "step" in header else None
                keep = [r for r in body if col is not None and len(r) == len(header) and r[col].isdigit()
                        and int(r[col]) <= step]
                out = io.StringIO()
                csv.writer(out).writerows([header, *keep])
                write_text(self.csv_path, out.getvalue())
        self.bar.reset(total=self.bar.total)
        self.bar.update(step)
        self._last_step, self._last_time = step, time.perf_counter()

    def close(self) -> None:
        self.bar.close()
