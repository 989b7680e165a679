"""What the workflow's CPU pin (shared.launch.NUMERICS_ENV: torch, oneDNN, MKL and OpenBLAS at AVX2) costs in
speed, and whether it changes the numbers on this machine.

    python bench/bench_cpu_isa.py                  # 60 training steps per measurement, 2 repeats
    python bench/bench_cpu_isa.py --steps 100 --repeats 3

The default target's heaviest step (shared/toy/train_diffusion.py, toy model, one thread as the workflow runs it)
is run as a subprocess with the pin (`pinned`) and without it (`native`: each library's own pick for this CPU),
interleaved so that both see the same background load. Printed: torch's CPU capability in each, steps/second
(the best of the repeats, warm-up rows excluded), the ratio native / pinned, and whether the two trained the same
weights. On an AVX2-only CPU both are the same code and the weights must be equal; on an AVX-512 CPU they
differ, which is why the workflow pins.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_threads import _steps_per_second  # noqa: E402
from shared.launch import NUMERICS_ENV, local_env  # noqa: E402  (stdlib only)

WEIGHTS = "model/unet/diffusion_pytorch_model.safetensors"


def _env(mode: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in NUMERICS_ENV and k != "OMP_NUM_THREADS"}
    env = local_env(base={**base, "OMP_NUM_THREADS": "1"})
    if mode == "native":
        for key in NUMERICS_ENV:
            env.pop(key, None)
    return env


def _capability(mode: str) -> str:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=_env(mode), capture_output=True, text=True,
                          check=True).stdout.strip()


def _run_step(data: Path, work: Path, steps: int, mode: str) -> tuple[float, str]:
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"{mode}-"))
    cmd = [sys.executable, str(REPO / "shared/toy/train_diffusion.py"), "scale=toy", f"data_dir={data}",
           f"out_dir={out}", f"max_steps={steps}", "warmup_steps=5", "ckpt_every=0", "progress=false",
           "log_every=5", "threads=1"]
    subprocess.run(cmd, env=_env(mode), cwd=REPO, stdout=subprocess.DEVNULL, check=True)
    return _steps_per_second(out), hashlib.sha256((out / WEIGHTS).read_bytes()).hexdigest()[:12]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    modes = ("pinned", "native")
    with tempfile.TemporaryDirectory(prefix="bench_cpu_isa-") as tmp:
        work = Path(tmp)
        data = work / "digits"
        subprocess.run([sys.executable, str(REPO / "shared/toy/prepare.py"), "scale=toy", f"out_dir={data}"],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        speeds: dict[str, list[float]] = {m: [] for m in modes}
        weights: dict[str, set[str]] = {m: set() for m in modes}
        for _ in range(args.repeats):
            for mode in modes:
                speed, digest = _run_step(data, work, args.steps, mode)
                speeds[mode].append(speed)
                weights[mode].add(digest)
    print(f"train_digits_diffusion (toy model, {args.steps} steps, 1 thread), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    summary = {}
    for mode in modes:
        summary[mode] = {"capability": _capability(mode), "steps_per_sec": max(speeds[mode]),
                         "weights": sorted(weights[mode])}
        print(f"{mode:<7} torch {summary[mode]['capability']:<8} {summary[mode]['steps_per_sec']:6.2f} steps/s  "
              f"weights {', '.join(summary[mode]['weights'])}")
    summary["native_over_pinned"] = summary["native"]["steps_per_sec"] / summary["pinned"]["steps_per_sec"]
    summary["same_weights"] = summary["native"]["weights"] == summary["pinned"]["weights"]
    print(f"native / pinned speed {summary['native_over_pinned']:.2f}x; same weights: {summary['same_weights']}")
    return summary


if __name__ == "__main__":
    main()
