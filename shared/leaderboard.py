"""The leaderboard's training cost of a method: the training runs that made it, their optimizer steps and seconds.

Every step of the workflow leaves its resolved options beside what it wrote (shared.config.save_resolved): an
evaluation `<name>.config.yaml` beside its JSON (or a config.yaml in a folder above it), a sample folder
`sample_config*.yaml` and/or `samples.json`, a training run folder (shared.train.Trainer) `config.yaml` with its
`metrics.jsonl`. Starting from an evaluation JSON, every option that names an existing file or folder is followed
to the step folder holding it (the nearest folder above it with such a record), and from there on, recursively: a
DMD2 student's `teacher=` leads to the teacher's run, an SD base pipeline's `source=` to the run that trained it,
that run's `vae=` to the VAE's run, a titok stage 2's tokenizer to stage 1. Every training run met on the way (a
folder with `metrics.jsonl`) is part of the method's chain, counted once.

Not followed: the options naming what measures a method rather than what made it (reference images and their
statistics, the feature extractor, the CLIP of CLIP score: `INSTRUMENT_KEYS`), and a step's own outputs.

A run's steps are the last optimizer step in its metrics.jsonl; its seconds the wall-clock time of those steps,
summed from the logger's rows (each row covers the steps since the previous row at its `steps_per_sec`; a resumed
run's rows count the time after the resume, not the time lost to the kill).

    from shared import leaderboard
    cost = leaderboard.training_cost("results/tiny/dmd2/eval/digits_1step_gan.json")
    cost.steps, cost.seconds, [r.run_dir for r in cost.runs]      # teacher + student

    python -m shared.leaderboard results/tiny/dmd2/eval/digits_1step_gan.json [more.json ...]
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

# Options naming instruments of the evaluation (what measures a method, not what made it) or a step's outputs.
INSTRUMENT_KEYS = frozenset({"reference", "reference_dir", "reference_stats", "extractor", "features", "clip"})
OUTPUT_KEYS = frozenset({"out", "out_dir", "output_dir", "run_dir", "out_md", "out_csv", "out_png", "logging_dir"})
# The files a step folder records its options in (shared.config.save_resolved, the sample steps' samples.json).
RECORD_PATTERNS = ("config.yaml", "sample_config*.yaml", "samples.json")
RUN_LOG = "metrics.jsonl"  # shared.train.StepLogger's log: a folder with one is a training run


@dataclass(frozen=True)
class TrainingRun:
    run_dir: str
    steps: int
    seconds: float


@dataclass
class TrainingCost:
    runs: list[TrainingRun] = field(default_factory=list)

    @property
    def steps(self) -> int | None:
        return sum(r.steps for r in self.runs) if self.runs else None

    @property
    def seconds(self) -> float | None:
        return sum(r.seconds for r in self.runs) if self.runs else None


def read_run(run_dir: str | Path) -> TrainingRun:
    """Steps and wall-clock seconds of one training run from its metrics.jsonl (rows cut short by a kill skipped)."""
    log = Path(run_dir) / RUN_LOG
    steps, seconds, previous = 0, 0.0, 0
    for line in log.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            continue
        steps = max(steps, row["step"])
        rate = row.get("steps_per_sec")
        # rows the logger averaged over steps carry steps_per_sec; rows written at once (final metrics, evaluations
        # during training) do not, and cover no steps of their own
        if isinstance(rate, (int, float)) and rate > 0 and row["step"] > previous:
            seconds += (row["step"] - previous) / rate
            previous = row["step"]
    return TrainingRun(str(run_dir), steps, seconds)


def _records(folder: Path) -> list[Path]:
    return sorted(p for pattern in RECORD_PATTERNS for p in folder.glob(pattern) if p.is_file())


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not readable as {'JSON' if path.suffix == '.json' else 'YAML'} ({e})") from e


def _paths(options: Any, root: Path) -> Iterator[Path]:
    """Existing files/folders named by the options (nested mappings and lists too), instruments and outputs left out."""
    if isinstance(options, dict):
        for key, value in options.items():
            if str(key) not in INSTRUMENT_KEYS and str(key) not in OUTPUT_KEYS:
                yield from _paths(value, root)
    elif isinstance(options, list):
        for value in options:
            yield from _paths(value, root)
    elif isinstance(options, str) and "/" in options and "\n" not in options and len(options) < 1000:
        path = Path(options) if Path(options).is_absolute() else root / options
        if path.exists():
            yield path


def _step_folder(path: Path, root: Path) -> Path | None:
    """The nearest folder at or above `path` that records a step's options; the search stops at `root` (the
    workflow directory: results/, data/ hold no records), or at the filesystem root for a path outside it."""
    folder = path if path.is_dir() else path.parent
    root = root.resolve()
    while folder.resolve() != root and folder.resolve() != folder.resolve().parent:
        if _records(folder) or (folder / RUN_LOG).is_file():
            return folder
        folder = folder.parent
    return None


def training_cost(evaluation: str | Path, root: str | Path = ".") -> TrainingCost:
    """The training runs behind an evaluation JSON (paths in the records are relative to `root`, the workflow
    directory), in the order they were reached."""
    evaluation, root = Path(evaluation), Path(root)
    own = evaluation.with_name(f"{evaluation.stem}.config.yaml")
    if own.is_file():
        start = [own]
    else:  # a step that wrote several evaluations and one config.yaml (shared/toy/sampler_compare.py)
        folder = _step_folder(evaluation.parent, root)
        start = _records(folder) if folder else []
    cost, seen = TrainingCost(), set()
    pending = list(start)
    while pending:
        for path in _paths(_load(pending.pop(0)), root):
            step = _step_folder(path, root)
            if step is None or step.resolve() in seen:
                continue
            seen.add(step.resolve())
            if (step / RUN_LOG).is_file():
                cost.runs.append(read_run(step))
            pending += _records(step)
    return cost


def main(argv: list[str] | None = None) -> None:
    """CLI: the chain, steps and seconds of each evaluation JSON given."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    for f in argv:
        cost = training_cost(f)
        print(f"{f}: {cost.steps} steps, {cost.seconds if cost.seconds is None else round(cost.seconds, 1)} s")
        for r in cost.runs:
            print(f"  {r.run_dir}: {r.steps} steps, {r.seconds:.1f} s")


if __name__ == "__main__":
    main()
