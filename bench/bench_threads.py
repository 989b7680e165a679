"""The default target's heaviest step (shared/toy/train_diffusion.py, toy model) alone and beside competing
CPU-bound processes: how much slower does it get on a shared machine?

    python bench/bench_threads.py                  # 1 competitor, 60 training steps per measurement
    python bench/bench_threads.py --competitors 2 --steps 100 --repeats 2

Each measurement runs the step as a subprocess through `shared.launch.local_env` (the environment the workflow
gives a local step) and reads its own steps/second from metrics.jsonl (start-up and the first rows' warm-up
excluded); a run slower than --timeout is cut short and measured on the rows it logged. Quiet and busy runs
are interleaved, so both see the same background load. Two thread policies are measured:

    workflow   threads=1 (what common.smk's train_threads gives training steps), OMP_WAIT_POLICY=PASSIVE
    old        threads=2, the OpenMP defaults (what the workflow did before: local_threads=2 per step)

and the ratio quiet / busy steps per second is printed for each (goal for the workflow policy: <= 1.5x).
A competitor is a Python busy loop (one core's worth of CPU-bound work, like another user's job).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.launch import local_env  # noqa: E402  (stdlib only)

POLICIES = {
    "workflow": ({"threads": "1"}, {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}),
    "old": ({"threads": "2"}, {"OMP_NUM_THREADS": "2"}),
}


def _competitor() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _steps_per_second(out: Path) -> float:
    """Mean of the logged steps/s after the first row (which includes the first steps' warm-up)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = [r["steps_per_sec"] for r in rows[1:] if "steps_per_sec" in r and "loss" in r]
    if not speeds:
        raise RuntimeError(f"{out}: fewer than two rows logged; raise --timeout")
    return sum(speeds) / len(speeds)


def _run_step(data: Path, work: Path, steps: int, policy: str, timeout: float) -> float:
    opts, env_extra = POLICIES[policy]
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"{policy}-"))
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env = local_env(base={**base, **env_extra})
    if policy == "old":
        env.pop("OMP_WAIT_POLICY", None)
    cmd = [sys.executable, str(REPO / "shared/toy/train_diffusion.py"), "scale=toy", f"data_dir={data}",
           f"out_dir={out}", f"max_steps={steps}", "warmup_steps=5", "ckpt_every=0", "progress=false",
           "log_every=5", *(f"{k}={v}" for k, v in opts.items())]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        proc.wait(timeout=timeout)  # a run that crawls is cut short; its logged rows still give its speed
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return _steps_per_second(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--competitors", type=int, default=1, help="CPU-bound processes beside the busy runs")
    p.add_argument("--policies", default="workflow,old")
    p.add_argument("--timeout", type=float, default=180, help="seconds per measurement (then cut short)")
    args = p.parse_args(argv)
    policies = [x for x in args.policies.split(",") if x]
    with tempfile.TemporaryDirectory(prefix="bench_threads-") as tmp:
        work = Path(tmp)
        data = work / "digits"
        subprocess.run([sys.executable, str(REPO / "shared/toy/prepare.py"), "scale=toy", f"out_dir={data}"],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results: dict[str, dict[str, list[float]]] = {pol: {"quiet": [], "busy": []} for pol in policies}
        for _ in range(args.repeats):
            for pol in policies:
                results[pol]["quiet"].append(_run_step(data, work, args.steps, pol, args.timeout))
                procs = [_competitor() for _ in range(args.competitors)]
                try:
                    time.sleep(0.5)
                    results[pol]["busy"].append(_run_step(data, work, args.steps, pol, args.timeout))
                finally:
                    for proc in procs:
                        proc.kill()
                        proc.wait()
    load = os.getloadavg()[0]
    print(f"train_digits_diffusion (toy model, {args.steps} steps), {args.competitors} CPU-bound competitor(s), "
          f"{os.cpu_count()} cores, load average {load:.1f} at the end")
    print(f"{'policy':<10} {'quiet steps/s':>14} {'busy steps/s':>13} {'slowdown':>9}")
    summary = {}
    for pol, r in results.items():
        quiet, busy = max(r["quiet"]), max(r["busy"])
        summary[pol] = {"quiet": quiet, "busy": busy, "ratio": quiet / busy}
        print(f"{pol:<10} {quiet:>14.2f} {busy:>13.2f} {quiet / busy:>8.2f}x")
    if "workflow" in summary:
        ok = summary["workflow"]["ratio"] <= 1.5
        print(f"workflow policy slowdown {summary['workflow']['ratio']:.2f}x (goal <= 1.5x): "
              f"{'met' if ok else 'NOT met'}")
    return summary


if __name__ == "__main__":
    main()
