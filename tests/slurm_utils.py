"""Helpers for tests that need the CI SLURM cluster (brought up by `bash .ci/slurm/up.sh`).

    from slurm_utils import require_slurm, slurm_available, slurm_info, submitit_executor

    ok, reason = slurm_available()      # (False, "sinfo not found ...") when there is no usable cluster
    require_slurm()                     # pytest.skip(reason) unless a node responds and sacct works
    info = slurm_info()                 # partition / cluster / node / cpus / gpus / account
    ex = submitit_executor(tmp_path)    # submitit AutoExecutor on that partition, using the repo's .venv python

Only the standard library is imported at module level (submitit/pytest are imported where used).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CI_SLURM_DIR = Path(os.environ.get("CI_SLURM_DIR", "/tmp/ci-slurm"))
UP_HINT = "bring it up with `bash .ci/slurm/up.sh`"
# node states in which a node accepts or runs jobs (sinfo %T; a trailing '*' means "not responding")
_USABLE = {"idle", "mixed", "allocated", "completing"}


def _run(cmd: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


_CACHE: dict[bool, tuple[float, tuple[bool, str]]] = {}
CACHE_TTL_S = 120.0


def slurm_available(require_sacct: bool = True, timeout: float = 15, refresh: bool = False) -> tuple[bool, str]:
    """Whether a SLURM cluster usable by tests is reachable: (True, summary) or (False, reason).

    Usable means: `sinfo` exists, slurmctld answers, at least one node is responding in a usable state, and
    (unless require_sacct=False) `sacct` works -- without accounting, submitit never learns that a job died
    and `job.result()` waits forever. The answer is cached for CACHE_TTL_S (refresh=True asks again): with
    slurmctld down each sinfo call takes ~10 s before failing.
    """
    now = time.monotonic()
    hit = _CACHE.get(require_sacct)
    if hit and not refresh and now - hit[0] < CACHE_TTL_S:
        return hit[1]
    answer = _probe(require_sacct, timeout)
    _CACHE[require_sacct] = (now, answer)
    return answer


def _probe(require_sacct: bool, timeout: float) -> tuple[bool, str]:
    if shutil.which("sinfo") is None:
        return False, f"sinfo not found: no SLURM client installed ({UP_HINT})"
    try:
        # fast (ms) even when slurmctld is down, unlike sinfo
        ping = _run(["scontrol", "ping"], timeout)
        if ping.returncode != 0 or " is UP" not in ping.stdout:
            first = (ping.stdout or ping.stderr).strip().splitlines()
            return False, f"slurmctld not answering ({first[0] if first else 'scontrol ping failed'}) ({UP_HINT})"
    except (subprocess.TimeoutExpired, FileNotFoundError):
        pass  # fall through to sinfo, which reports the problem
    try:
        r = _run(["sinfo", "-h", "-N", "-o", "%N|%T|%P"], timeout)
    except subprocess.TimeoutExpired:
        return False, f"sinfo timed out after {timeout:.0f} s: slurmctld not answering ({UP_HINT})"
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        return False, f"sinfo failed ({msg[-1] if msg else 'rc=%d' % r.returncode}): slurmctld down? ({UP_HINT})"
    rows = [line.split("|") for line in r.stdout.split("\n") if line.strip()]
    usable = [row for row in rows if len(row) == 3 and row[1] in _USABLE]
    if not usable:
        states = ", ".join(f"{n}={s}" for n, s, *_ in rows) or "no nodes"
        return False, f"no SLURM node responds in a usable state ({states}) ({UP_HINT})"
    if require_sacct:
        try:
            s = _run(["sacct", "-n", "-X", "-S", "now-1minutes"], timeout)
        except subprocess.TimeoutExpired:
            return False, "sacct timed out: slurmdbd not answering"
        if s.returncode != 0:
            return False, f"sacct fails (rc={s.returncode}: {s.stderr.strip()[:200]}): no job accounting ({UP_HINT})"
    nodes = ", ".join(f"{n} {s}" for n, s, _ in usable)
    return True, f"SLURM usable: {nodes}"


def require_slurm(require_sacct: bool = True) -> None:
    """pytest.skip() with the reason unless slurm_available()."""
    import pytest

    ok, reason = slurm_available(require_sacct=require_sacct)
    if not ok:
        pytest.skip(reason)


@dataclass(frozen=True)
class SlurmInfo:
    partition: str  # default partition
    cluster: str
    node: str
    cpus: int
    ngpus: int  # gres gpu count on the node
    account: str = "root"


def _read_env_file() -> dict[str, str]:
    env = {}
    f = CI_SLURM_DIR / "env"
    if f.is_file():
        for line in f.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                env[k.strip()] = v.strip()
    return env


def slurm_info() -> SlurmInfo:
    """Facts about the cluster: from $CI_SLURM_DIR/env (written by up.sh), else asked from sinfo/scontrol."""
    env = _read_env_file()
    if {"CI_SLURM_PARTITION", "CI_SLURM_CLUSTER", "CI_SLURM_NODE"} <= env.keys():
        return SlurmInfo(
            partition=env["CI_SLURM_PARTITION"],
            cluster=env["CI_SLURM_CLUSTER"],
            node=env["CI_SLURM_NODE"],
            cpus=int(env.get("CI_SLURM_CPUS", "1")),
            ngpus=int(env.get("CI_SLURM_NGPUS", "0")),
            account=env.get("CI_SLURM_ACCOUNT", "root"),
        )
    rows = [line.split("|") for line in _run(["sinfo", "-h", "-N", "-o", "%P|%N|%c|%G"]).stdout.split("\n") if line]
    default = next((r for r in rows if r[0].endswith("*")), rows[0])
    gres = default[3]
    ngpus = 0
    for item in gres.split(","):  # e.g. gpu:2 or gpu:a100:2(S:0)
        if item.startswith("gpu"):
            ngpus += int(item.split("(")[0].split(":")[-1])
    conf = _run(["scontrol", "show", "config"]).stdout
    cluster = next((ln.split("=", 1)[1].strip() for ln in conf.splitlines() if ln.startswith("ClusterName")), "")
    return SlurmInfo(partition=default[0].rstrip("*"), cluster=cluster, node=default[1], cpus=int(default[2]),
                     ngpus=ngpus)


def job_python() -> str:
    """The interpreter jobs should run: the repository's .venv if present, else the current one."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def submitit_executor(folder, timeout_min: int = 5, **params):
    """A submitit AutoExecutor on the CI cluster's default partition, running jobs with job_python()."""
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_python=shlex.quote(job_python()))
    params.setdefault("cpus_per_task", 1)
    ex.update_parameters(slurm_partition=slurm_info().partition, timeout_min=timeout_min, **params)
    return ex


def sacct_states(job_id: str) -> list[str]:
    """States of the allocation of job_id, one per run (requeued jobs have several), oldest first."""
    r = _run(["sacct", "-n", "-X", "-D", "-P", "-j", str(job_id), "-o", "JobID,State"])
    return [line.split("|")[1] for line in r.stdout.splitlines() if line.split("|")[0] == str(job_id)]


def wait_job_state(job_id: str, states: set[str], timeout: float = 60) -> str:
    """Poll squeue (then sacct) until job_id is in one of `states` (e.g. {"RUNNING"}); return it."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = _run(["squeue", "-h", "-j", str(job_id), "-o", "%T"]).stdout.strip()
        if not state:
            hist = sacct_states(job_id)
            state = hist[-1].split()[0] if hist else ""
        if state in states:
            return state
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} not in {sorted(states)} after {timeout:.0f} s (last state: {state!r})")
