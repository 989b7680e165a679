"""The default target at tiny scale, run once per test session per thread setting (shared by the determinism and
report tests): `tiny_chain(tmp_path_factory, threads)` -> the workflow directory it ran in.

threads=1: every step on one thread (local_threads=1). threads=2: local_threads=2 and every heavy rule given 2
threads (`--set-threads`), so Snakemake exports OMP_NUM_THREADS=2 to each step: inference steps then compute on
2 threads, and training steps must still train on their pinned 1 thread.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shared.launch import NUMERICS_ENV

REPO = Path(__file__).resolve().parents[2]
HEAVY_RULES = ("train_digits_features", "evaluate_digits_real", "train_digits_diffusion", "compare_samplers")


def tiny_chain(tmp_path_factory, threads: int, report: bool = False) -> Path:
    work = tmp_path_factory.getbasetemp() / f"tiny_chain_{threads}threads"
    done = work / ".chain_done"
    if not done.is_file():
        work.mkdir(parents=True, exist_ok=True)
        args = ["--cores", "2", "--directory", str(work), "--snakefile", str(REPO / "Snakefile"),
                "--config", "scale=tiny", f"local_threads={threads}"]
        if threads > 1:
            args += ["--set-threads", *(f"{rule}={threads}" for rule in HEAVY_RULES)]
        if not report:
            args.append("--no-hooks")  # the report at the end of the default target (onsuccess)
        # without the test session's thread counts and CPU pin: the workflow sets its own (common.smk)
        unset = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *NUMERICS_ENV)
        env = {k: v for k, v in os.environ.items() if k not in unset}
        r = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=REPO, capture_output=True, text=True,
                           timeout=900, env={**env, "PYTHONUNBUFFERED": "1"})
        if r.returncode != 0:
            raise RuntimeError(f"tiny chain ({threads} threads) failed:\n{r.stderr[-4000:]}")
        done.write_text(r.stderr[-20000:])
    return work
