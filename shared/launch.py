"""Run one step locally or on SLURM (through submitit), the same way from a rule or a shell.

    python -m shared.launch [options] -- python projects/p/train.py cfg.yaml key=value

Local: one process, or `--nproc-per-node N` processes through torchrun (gloo on CPU, nccl on GPUs).
SLURM: one sbatch job (`--nodes`, one task per process), the job's logs under `--log-dir`. The launcher
waits, prints where the logs are, and on failure exits non-zero with the tail of the job's stderr.
Ctrl-C / SIGTERM to the launcher cancels its SLURM job.

Preemption and time limits: submitit asks SLURM for USR2 before the time limit; the step receives it (or
SIGTERM on preemption / `scontrol requeue`), saves a checkpoint and exits with PREEMPTED_EXIT_CODE; the job is
requeued and the step, started again with the same command, resumes from its own latest checkpoint.

This module must stay light (stdlib + submitit, never torch): a cluster run keeps dozens of waiting launchers.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

# A step that saved a checkpoint because it was told to stop (SIGTERM/SIGUSR2) exits with this code
# (EX_TEMPFAIL: "try again later"). shared.train uses the same constant.
PREEMPTED_EXIT_CODE = 75
STDERR_TAIL_LINES = 40


def sample_shard(num_shards: int = 0, shard_index: int = -1) -> tuple[int, int]:
    """(this process's shard index, shard count) of a sharded sampling step: the given values, else the SLURM array
    task (`SLURM_ARRAY_TASK_ID` / `_COUNT`), else torchrun's `RANK` / `WORLD_SIZE`, else (0, 1)."""
    env = os.environ
    n = num_shards or int(env.get("SLURM_ARRAY_TASK_COUNT") or env.get("WORLD_SIZE") or 1)
    k = shard_index if shard_index >= 0 else int(env.get("SLURM_ARRAY_TASK_ID") or env.get("RANK") or 0)
    if not 0 <= k < n:
        from shared.config import ConfigError

        raise ConfigError(f"shard_index={k} is outside 0..{n - 1} (num_shards={n})")
    return k, n


def step_device(name: str = "auto"):
    """The torch device a sampling step runs on: `name`, or for "auto" this process's GPU (`LOCAL_RANK`) when
    CUDA is there, else the CPU. (torch is imported here, not at module level: see the module docstring.)"""
    import torch

    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _master_port(job_id: str) -> int:
    """A port every task of one job agrees on without talking to each other."""
    digits = "".join(ch for ch in job_id if ch.isdigit()) or "0"
    return 20000 + int(digits) % 20000


def _torchrun(command: Sequence[str], nproc: int, nnodes: int = 1, node_rank: int = 0,
              master_addr: str = "127.0.0.1", master_port: int = 29500) -> list[str]:
    """Wrap a `python script.py ...`/`python -m mod ...` command in torchrun; other commands run with --no-python."""
    run = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if nnodes == 1:
        run.append("--standalone")
    else:
        run += [f"--node-rank={node_rank}", f"--master-addr={master_addr}", f"--master-port={master_port}"]
    if Path(command[0]).name.startswith("python"):
        return run + list(command[1:])
    return run + ["--no-python", *command]


class _ChildProcess:
    """Run a command, forwarding the stop signals to it so it can save before exiting."""

    def __init__(self, command: Sequence[str], env: dict | None = None):
        self.proc = subprocess.Popen(list(command), env=env)

    def forward(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int | None:
        # poll() rather than wait(): a signal handler may poll too, and wait() holds a lock it would need.
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.2)
        return self.proc.returncode


# Threads policy of a local step (measured in bench/bench_threads.py, README "Performance"): on a machine whose
# cores are shared with other jobs, an OpenMP thread that has finished its part of a parallel region spins waiting
# for the others, and with more runnable threads than free cores the one it waits for is often descheduled, so a
# 2-thread torch step there ran 10-20x slower than the same step on 1 thread. PASSIVE makes waiting threads sleep
# (it helps, but less than running training steps on one thread: common.smk's train_threads). Values already set win.
THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

# CPU numerics on one code path for every x86-64 machine (issue 18): torch's own kernels (ATen), oneDNN's
# convolutions, MKL and numpy's OpenBLAS each pick their code by the CPU's instruction set, and sum in another order
# with AVX-512 than with AVX2. Measured on an AVX-512 AMD EPYC: the toy digits CNN came out with other weights
# when only ATEN_CPU_CAPABILITY or only ONEDNN_MAX_CPU_ISA was capped at AVX2, and the toy sd_flux_lab VAE trained
# unpinned decoded blue digits as green (PSNR 16.8 dB) where pinned it reached 33.4 dB with every colour right.
# AVX2 is the level every x86-64 CPU of the last decade has. Values already set win; other machines (aarch64) keep
# their own kernels.
NUMERICS_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
                "OPENBLAS_CORETYPE": "Haswell"}


def pin_numerics(env: dict) -> dict:
    """`env` with NUMERICS_ENV added where unset (x86-64 only); it must be set before torch or numpy loads."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        for key, value in NUMERICS_ENV.items():
            env.setdefault(key, value)
    return env


def local_env(cpus: int = 0, base: dict | None = None) -> dict:
    """Environment of a local step: THREAD_ENV, NUMERICS_ENV, and with `cpus` > 0 the math libraries' thread
    counts (what Snakemake also sets from a rule's `threads:`) unless the caller has set them."""
    env = pin_numerics(dict(os.environ if base is None else base))
    for key, value in THREAD_ENV.items():
        env.setdefault(key, value)
    if cpus > 0:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(key, str(cpus))
    return env


def run_local(command: Sequence[str], nproc: int = 1, cpus: int = 0) -> int:
    cmd = _torchrun(command, nproc) if nproc > 1 else list(command)
    child = _ChildProcess(cmd, env=local_env(cpus))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, lambda s, _f: child.forward(s))
    return child.wait()


class SlurmStep:
    """The callable submitit runs in each SLURM task: the step command with torch.distributed's variables set."""

    def __init__(self, command: Sequence[str], cwd: str, nproc_per_node: int, stop_grace_s: int = 600):
        self.command = list(command)
        self.cwd = cwd
        self.nproc_per_node = nproc_per_node
        self.stop_grace_s = stop_grace_s
        self._child: _ChildProcess | None = None

    def _env(self) -> dict:
        """torch.distributed's env:// variables for the child, read from submitit's TorchDistributedEnvironment
        (first host, ranks, world sizes), plus NODE_RANK, which it does not give. Two of its choices are not
        taken: its MASTER_PORT honours an inherited MASTER_PORT (sbatch exports the submitting shell's
        environment, so every job started from one shell would share a port, and array tasks on one node would
        collide), so the port is `_master_port(job id)`; and `export()` is not called: it writes this process's
        os.environ, refuses when a variable is already set (an inherited MASTER_PORT), and sets
        CUDA_VISIBLE_DEVICES to the local rank, after which a step's cuda:LOCAL_RANK would not exist for rank > 0.
        Checked in a simulated 2-node x 2-task SLURM environment (SLURM_* variables): the same variables as before."""
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment

        job, dist = JobEnvironment(), TorchDistributedEnvironment()
        env = pin_numerics(dict(os.environ))
        env.update(
            MASTER_ADDR=dist.master_addr, MASTER_PORT=str(_master_port(job.job_id)),
            RANK=str(dist.rank), WORLD_SIZE=str(dist.world_size), LOCAL_RANK=str(dist.local_rank),
            LOCAL_WORLD_SIZE=str(dist.local_world_size), NODE_RANK=str(job.node), PYTHONUNBUFFERED="1",
        )
        return env

    def __call__(self) -> int:
        os.chdir(self.cwd)
        self._child = _ChildProcess(self.command, env=self._env())
        rc = self._child.wait()
        if rc == PREEMPTED_EXIT_CODE:
            # SLURM is ending this job (requeue, preemption or cancel) and the step has saved its checkpoint.
            # Returning or raising now would write a final result that the waiting launcher would take as the
            # outcome; instead wait to be killed, and SLURM's job state tells the launcher what happened.
            print(f"step stopped with its checkpoint saved (exit {rc}); waiting for SLURM to requeue or end the job",
                  flush=True)
            time.sleep(self.stop_grace_s)
            raise RuntimeError(f"the step stopped for preemption (exit {rc}) but the job was neither requeued "
                               f"nor ended within {self.stop_grace_s}s")
        if rc != 0:
            raise RuntimeError(f"command failed with exit code {rc}: {shlex.join(self.command)}")
        return rc

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on USR2 (time limit / preemption): let the step save, then requeue the same command."""
        import submitit

        if self._child is not None:
            self._child.forward(signal.SIGUSR2)
            self._child.wait(timeout=self.stop_grace_s)
        return submitit.helpers.DelayedSubmission(SlurmStep(self.command, self.cwd, self.nproc_per_node,
                                                            self.stop_grace_s))


def _stderr_tail(job, lines: int = STDERR_TAIL_LINES) -> str:
    """The step's own stderr: submitit's log lines and its re-raised traceback are left out."""
    text = ""
    try:
        text = job.stderr() or ""
    except Exception:  # the file may not exist if the job never started
        pass
    kept = []
    for line in text.splitlines():
        if line.startswith("submitit ERROR"):
            break
        if not line.startswith(("submitit INFO", "submitit WARNING")):
            kept.append(line)
    return "\n".join(kept[-lines:]).rstrip()


# SLURM states after which no result will come (REQUEUED, PREEMPTED and COMPLETING are not final).
_ENDED_WITHOUT_RESULT = {"CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "DEADLINE", "BOOT_FAIL", "REVOKED"}


def _wait(job, poll_max_s: float) -> str | None:
    """Wait for the job; return the SLURM state if it ended without a result, None once a result is there.

    Polls sacct at 2 s, growing to poll_max_s for long jobs, so a cancelled job fails its rule within seconds
    of being noticed; submitit's own wait backs off to a minute and then waits for a result file that a
    cancelled job never writes.
    """
    start = time.monotonic()
    while True:
        if job.paths.result_pickle.exists():
            return None
        state = job.watcher.get_state(job.job_id, mode="force").split(" ")[0].upper()
        if state in _ENDED_WITHOUT_RESULT:
            return state
        if state in ("COMPLETED", "FAILED"):  # the result file follows within moments (shared filesystems lag)
            for _ in range(60):
                if job.paths.result_pickle.exists():
                    return None
                time.sleep(1)
            return state
        time.sleep(min(poll_max_s, max(2.0, (time.monotonic() - start) / 10)))


def _print_tail(job) -> None:
    tail = _stderr_tail(job)
    if tail:
        print(f"[launch] last lines of {job.paths.stderr}:\n{tail}", file=sys.stderr)


def _reason(error: Exception) -> str:
    """One line: the step's own exception if submitit relayed a traceback, else submitit's first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return raised[-1] if raised else (lines[0] if lines else type(error).__name__)


def run_slurm(command: Sequence[str], args: argparse.Namespace) -> int:
    import submitit

    log_dir = Path(args.log_dir or f"logs/slurm/{args.name}").resolve()
    executor = submitit.SlurmExecutor(folder=str(log_dir / "%j"), max_num_timeout=args.max_requeues)
    nproc = args.nproc_per_node or max(1, args.gpus_per_node)
    params = dict(job_name=args.name, nodes=args.nodes, ntasks_per_node=nproc, time=args.runtime,
                  signal_delay_s=args.signal_delay_s, additional_parameters=dict(args.sbatch or {}))
    if args.gpus_per_node:
        params["gpus_per_node"] = args.gpus_per_node
    if args.cpus_per_task:
        params["cpus_per_task"] = args.cpus_per_task
    if args.mem_mb:
        params["mem"] = f"{args.mem_mb}M"
    if args.partition:
        params["partition"] = args.partition
    if args.account:
        params["account"] = args.account
    executor.update_parameters(**params)
    job = executor.submit(SlurmStep(command, os.getcwd(), nproc))
    print(f"[launch] {args.name}: SLURM job {job.job_id}; logs in {log_dir / job.job_id}", flush=True)

    def cancel(signum, _frame):
        print(f"[launch] {args.name}: got {signal.Signals(signum).name}, cancelling SLURM job {job.job_id}",
              file=sys.stderr, flush=True)
        job.cancel(check=False)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, cancel)
    signal.signal(signal.SIGTERM, cancel)
    ended_without_result = _wait(job, args.poll_max_s)
    if ended_without_result:
        print(f"[launch] {args.name}: SLURM job {job.job_id} ended with state {ended_without_result} "
              f"(cancelled, killed or out of time); the step did not finish", file=sys.stderr)
        _print_tail(job)
        return 1
    try:
        job.results()  # one result per task (several for multi-GPU and multi-node jobs)
    except Exception as e:  # the step's own error, relayed by submitit
        print(f"[launch] {args.name}: SLURM job {job.job_id} did not succeed: {_reason(e)}", file=sys.stderr)
        _print_tail(job)
        return 1
    print(f"[launch] {args.name}: SLURM job {job.job_id} finished; logs in {log_dir / job.job_id}", flush=True)
    return 0


def _sbatch_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"--sbatch expects key=value (e.g. constraint=a100), got {text!r}")
    return key.strip().lstrip("-").replace("-", "_"), value.strip() if sep else ""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shared.launch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python -m shared.launch --backend slurm --gpus-per-node 8 "
                                       "--nodes 2 -- python projects/dmd2/train.py preset=sdxl_4step")
    p.add_argument("--backend", choices=["local", "slurm"], default=os.environ.get("SHARED_LAUNCH_BACKEND", "local"))
    p.add_argument("--name", default="step", help="job name (the rule's name)")
    p.add_argument("--log-dir", default=None, help="where SLURM logs go (default logs/slurm/<name>)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--nproc-per-node", type=int, default=0, help="processes per node (default: gpus, or 1)")
    p.add_argument("--cpus-per-task", type=int, default=0)
    p.add_argument("--mem-mb", type=int, default=0)
    p.add_argument("--runtime", type=int, default=60, help="minutes")
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--sbatch", type=_sbatch_pair, action="append", default=[],
                   help="extra sbatch option key=value (repeatable), e.g. --sbatch qos=high")
    p.add_argument("--max-requeues", type=int, default=3, help="times a timed-out job is requeued")
    p.add_argument("--signal-delay-s", type=int, default=120, help="USR2 this long before the time limit")
    p.add_argument("--poll-max-s", type=float, default=30, help="longest wait between two job-state checks")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the step's command")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser().error("no command given; put it after --")
    if args.backend == "local":
        if args.nodes > 1:
            parser().error("--nodes > 1 needs --backend slurm")
        return run_local(command, args.nproc_per_node or 1, args.cpus_per_task)
    return run_slurm(command, args)


if __name__ == "__main__":
    sys.exit(main())
