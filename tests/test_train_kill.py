"""Killed the hard way and started again with the same command, a training step ends exactly where an uninterrupted
run ends.

* Every training step script (tests/helpers/kill_resume.py SCRIPTS: sd_flux_lab's train_sd (SD1.5; SDXL with
  buckets, EMA, caption dropout, random crops and flips), train_vae (with GAN), train_transformer, train_flux,
  dmd2's train and train_teacher, shared/toy/train_features, glide_finetune's train, titok_rar's train_tokenizer
  (VQGAN with GAN + LeCam, TiTok stage 1, stage 2 with its frozen encoder) and train_generator (RAR with the annealed order over ten-crop tokens, MaskGIT, MaskGen
  with its text encoder)): SIGKILL after a random optimizer step, resume, the final weights equal an uninterrupted
  run's to the bit, and so are the metrics.jsonl rows of every step; train_sd also SIGKILLed in the middle of a
  checkpoint write.
* The example step script: SIGKILL mid-step, SIGKILL mid-checkpoint-write, SIGTERM (preemption: save, exit 75,
  marker file), then a plain restart that finishes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from shared.config import parse_argv
from shared.train import Checkpointer
from shared.train.checkpoint import FAULT_ENV
from shared.train.example import main as example_main
from helpers.kill_resume import SCRIPTS, kill_resume, prepare_work

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ["scale=tiny", "max_steps=40", "ckpt_every=5", "log_every=1", "progress=false", "threads=1",
           "ema_decay=0.9", "lr_schedule=cosine", "warmup_steps=5", "batch_size=16"]


def _start(run_dir: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    log = open(run_dir.parent / f"{run_dir.name}.log", "a")
    return subprocess.Popen([sys.executable, "-m", "shared.train.example", *OPTIONS, f"run_dir={run_dir}", *extra],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _last_step(run_dir: Path, since: float) -> int:
    """The newest step logged after time `since` (earlier rows belong to runs killed before)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        return row["step"] if row["time"] > since else 0
    return 0


def _wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, since: float, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _last_step(run_dir, since)
        if now >= step:
            return now
        log = (run_dir.parent / f"{run_dir.name}.log").read_text
        assert proc.poll() is None, f"run ended early (rc {proc.returncode}): {log()}"
        time.sleep(0.005)
    raise TimeoutError(f"step {step} not reached")


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture
def reference(tmp_path_factory):
    """The uninterrupted run, in this process (same code path as the subprocesses)."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    threads = torch.get_num_threads()
    try:
        metrics = example_main(parse_argv([*OPTIONS, f"run_dir={run_dir}"]))  # exactly what the command line gives
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
    return run_dir, metrics


@pytest.mark.slow  # subprocess starts (torch import) dominate: ~30-60 s on 2 busy cores
def test_killed_anywhere_and_restarted_ends_with_identical_weights(tmp_path, reference):
    ref_dir, ref_metrics = reference
    run = tmp_path / "run"
    ckpts = Checkpointer(run / "checkpoints")

    # 1. SIGKILL between checkpoints: the steps after the last checkpoint are lost and redone.
    proc = _start(run, "step_sleep=0.02")
    killed_at = _wait_for_step(proc, run, 7, since=time.time())
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    first = ckpts.latest().step
    assert first < killed_at < 40

    # 2. SIGKILL in the middle of writing a checkpoint (weights on disk, no meta.json, not renamed yet).
    proc = _start(run, env={FAULT_ENV: "die@2"})
    assert proc.wait(90) == -signal.SIGKILL
    done = ckpts.latest().step
    half_written = sorted(p.name for p in (run / "checkpoints").glob(".ckpt-*.tmp"))
    assert half_written == [f".ckpt-{done + 5:08d}.tmp"] and done == first + 5
    assert (run / "checkpoints" / half_written[0] / "model.model.safetensors").is_file()
    assert not (run / "checkpoints" / half_written[0] / "meta.json").exists()

    # 3. Preemption: SIGTERM -> checkpoint at the next step boundary -> exit 75 and a marker for the launcher.
    started = time.time()
    proc = _start(run, "step_sleep=0.02")
    _wait_for_step(proc, run, done + 3, since=started)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 75
    marker = json.loads((run / "preempted.json").read_text())
    assert marker["signal"] == "SIGTERM" and ckpts.latest().step == marker["step"] < 40
    assert not list((run / "checkpoints").glob(".ckpt-*.tmp"))  # the stale half-write was swept on restart

    # 4. The same command again: resumes and finishes.
    proc = _start(run)
    assert proc.wait(90) == 0, (tmp_path / "run.log").read_text()
    assert not (run / "preempted.json").exists()
    final, expected = ckpts.latest(), Checkpointer(ref_dir / "checkpoints").latest()
    assert final.step == expected.step == 40
    for stem in ("model.model", "ema.model"):
        got, want = Checkpointer.load_tensors(final, stem), Checkpointer.load_tensors(expected, stem)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got), stem
    assert _losses(run) == _losses(ref_dir)  # every step saw the same batch, noise and dropout
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] == ref_metrics["test_accuracy"]


# ---- every training step script through the one harness ------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    torch.set_num_threads(1)
    return prepare_work(tmp_path_factory.mktemp("kill_resume"), sorted({n for s in SCRIPTS.values() for n in s.needs}))


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=SCRIPTS[n].known_issue)) if SCRIPTS[n].known_issue
    else n for n in sorted(SCRIPTS)])
def test_step_script_killed_at_a_random_step_resumes_bit_identical(name, work, tmp_path):
    report = kill_resume(SCRIPTS[name], work, tmp_path)
    assert report.identical, report.describe()
    assert report.resumed_step > 0 or SCRIPTS[name].outputs, report.describe()  # it resumed, not restarted
    assert report.rows_compared >= 6 or SCRIPTS[name].outputs, report.describe()  # log_every=1: a row per step


def test_step_script_killed_mid_checkpoint_write_resumes_bit_identical(work, tmp_path):
    report = kill_resume(SCRIPTS["train_sd"], work, tmp_path, mid_write=2)
    assert report.identical, report.describe()
    left = sorted(p.name for p in (tmp_path / "train_sd_killed" / "checkpoints").iterdir())
    assert "ckpt-00000006" in left and not [p for p in left if p.endswith(".tmp")], left
