"""End-to-end checks of the CI SLURM cluster (.ci/slurm/up.sh) driven through submitit.

Skipped, with the reason, when no cluster is usable (see slurm_utils.slurm_available). Job functions are
defined here and pickled by value (cloudpickle), since the job's interpreter cannot import this test module.
"""
import subprocess
import sys
import threading
import time

import cloudpickle
import pytest

from slurm_utils import job_python, require_slurm, sacct_states, slurm_info, submitit_executor, wait_job_state

submitit = pytest.importorskip("submitit")

pytestmark = pytest.mark.slurm
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(autouse=True)
def _needs_slurm():
    require_slurm()


def result_within(job, timeout_s: float):
    """job.result() in a thread: (seconds, result, exception); fails the test if it is still waiting."""
    out = {}

    def target():
        try:
            out["result"] = job.result()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            out["error"] = e

    t0 = time.monotonic()
    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout_s)
    elapsed = time.monotonic() - t0
    if th.is_alive():
        pytest.fail(f"job {job.job_id}: result() still waiting after {timeout_s:.0f} s (state {job.state})")
    return elapsed, out.get("result"), out.get("error")


def wait_for_file(path, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written within {timeout_s:.0f} s")
        time.sleep(0.1)


# ------------------------------------------------------------------ job functions (run on the cluster)
def describe(a, b):
    import os
    import sys

    keys = ("SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURM_CLUSTER_NAME", "SLURM_JOB_ACCOUNT", "CUDA_VISIBLE_DEVICES",
            "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_JOB_NODELIST")
    return {"sum": a + b, "python": sys.executable, **{k: os.environ.get(k) for k in keys}}


def record_and_sleep(marker, seconds, rerun_seconds=None):
    """Append SLURM_RESTART_COUNT to marker, sleep (rerun_seconds on a requeued run), return all counts."""
    import os
    import time

    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    with open(marker, "a") as f:
        f.write(f"{restart}\n")
    time.sleep(seconds if restart == "0" or rerun_seconds is None else rerun_seconds)
    return open(marker).read().split()


class Counter(submitit.helpers.Checkpointable):
    """Counts steps; on preemption submitit pickles it (state included) via .checkpoint() and requeues."""

    def __init__(self):
        self.step = 0
        self.starts = []

    def __call__(self, marker, total):
        import time

        self.starts.append(self.step)
        with open(marker, "a") as f:
            f.write(f"{self.step}\n")
        while self.step < total:
            time.sleep(0.25)
            self.step += 1
        return {"step": self.step, "starts": self.starts}


# ------------------------------------------------------------------ tests
def test_cluster_layout():
    info = slurm_info()
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%P|%a|%G"], capture_output=True, text=True, check=True).stdout
    assert f"{info.partition}*|up|" in sinfo, f"partition {info.partition} is not the default or not up:\n{sinfo}"
    assert info.ngpus >= 1, "the CI node should declare fake GPUs (Gres=gpu:N)"
    assert subprocess.run(["sacct", "-n", "-X", "-S", "now-1hours"], capture_output=True).returncode == 0
    assoc = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", f"cluster={info.cluster}", "format=account,user"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "root|root" in assoc, f"user root has no association in account root: {assoc}"


def test_submitit_job_returns_result(tmp_path):
    info = slurm_info()
    ex = submitit_executor(tmp_path)
    t0 = time.monotonic()
    job = ex.submit(describe, 2, 3)
    elapsed, res, err = result_within(job, 90)
    assert err is None, err
    print(f"submit->result {time.monotonic() - t0:.1f} s")
    assert res["sum"] == 5
    assert res["SLURM_JOB_ID"] == job.job_id
    assert res["SLURM_JOB_PARTITION"] == info.partition
    assert res["SLURM_CLUSTER_NAME"] == info.cluster
    assert res["python"] == job_python(), "the job should run the repository's .venv python"


def test_gpu_jobs_see_cuda_visible_devices(tmp_path):
    info = slurm_info()
    ex = submitit_executor(tmp_path, gpus_per_node=1)
    one = ex.submit(describe, 0, 0)
    ex.update_parameters(gpus_per_node=info.ngpus)
    every = ex.submit(describe, 0, 0)
    _, r1, e1 = result_within(one, 90)
    _, rn, en = result_within(every, 90)
    assert e1 is None and en is None, (e1, en)
    valid = {str(i) for i in range(info.ngpus)}
    assert r1["CUDA_VISIBLE_DEVICES"] in valid, r1
    assert sorted(rn["CUDA_VISIBLE_DEVICES"].split(",")) == sorted(valid), rn


def test_sacct_lists_finished_job(tmp_path):
    info = slurm_info()
    job = submitit_executor(tmp_path).submit(describe, 1, 1)
    _, res, err = result_within(job, 90)
    assert err is None, err
    deadline = time.monotonic() + 20  # slurmctld sends the record to slurmdbd asynchronously
    while time.monotonic() < deadline:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job.job_id, "-o", "JobID,State,Partition,Account"],
                             capture_output=True, text=True, check=True).stdout.split()
        if f"{job.job_id}|COMPLETED|{info.partition}|{info.account}" in out:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"sacct does not list job {job.job_id} as COMPLETED: {out}")
    # job.state reads submitit's cached poll, which may predate the result file; ask sacct now
    assert job.watcher.get_state(job.job_id, mode="force") == "COMPLETED"


def test_cancelled_jobs_make_result_raise(tmp_path):
    """scancel of a running job and of a pending one: result() raises UncompletedJobError, no hang.

    submitit learns the state from sacct (polled every >= 2 s), then waits `SlurmJob._results_timeout_s`
    (15 s) for a result file that never comes: expect ~17 s.
    """
    ex = submitit_executor(tmp_path)
    running = ex.submit(record_and_sleep, str(tmp_path / "running"), 300)
    ex.update_parameters(slurm_additional_parameters={"begin": "now+3600"})
    pending = ex.submit(record_and_sleep, str(tmp_path / "pending"), 300)
    wait_for_file(tmp_path / "running")
    assert wait_job_state(pending.job_id, {"PENDING"}) == "PENDING"
    t0 = time.monotonic()
    subprocess.run(["scancel", running.job_id, pending.job_id], check=True)
    outcomes = {}

    def wait(name, job):
        outcomes[name] = result_within(job, 90)

    threads = [threading.Thread(target=wait, args=a) for a in (("running", running), ("pending", pending))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(f"cancel->raise: running {outcomes['running'][0]:.1f} s, pending {outcomes['pending'][0]:.1f} s "
          f"(total {time.monotonic() - t0:.1f} s)")
    for name, (_, res, err) in outcomes.items():
        assert isinstance(err, submitit.core.utils.UncompletedJobError), (name, res, err)
        assert "CANCELLED" in str(err), (name, str(err)[:500])
    assert not (tmp_path / "pending").exists(), "the pending job must never have started"


def test_requeue_and_preemption_rerun_job(tmp_path):
    """`scontrol requeue` of a running job reruns it from scratch (submitit ignores the SIGTERM it gets);
    a preemption signal (SIGTERM + USR2, job._interrupt()) makes submitit checkpoint, `scontrol requeue`
    itself and resume from the checkpointed state. Both then return a normal result.
    A requeued job may start again only after AuthInfo=cred_expire (+1 s): 11 s on the CI cluster.
    """
    # timeout_min > 10: with shorter limits submitit treats every USR2 as a *timeout*, not a preemption
    ex = submitit_executor(tmp_path, timeout_min=60)
    plain = ex.submit(record_and_sleep, str(tmp_path / "plain"), 120, 1)
    ckpt = ex.submit(Counter(), str(tmp_path / "ckpt"), 40)
    wait_for_file(tmp_path / "plain")
    wait_for_file(tmp_path / "ckpt")
    time.sleep(2)  # let Counter make some steps
    t0 = time.monotonic()
    subprocess.run(["scontrol", "requeue", plain.job_id], check=True)
    ckpt._interrupt()  # what SLURM sends on preemption: SIGTERM, then the USR2 submitit asked for
    outcomes = {}

    def wait(name, job):
        outcomes[name] = result_within(job, 150)

    threads = [threading.Thread(target=wait, args=a) for a in (("plain", plain), ("ckpt", ckpt))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(f"requeue->result: plain {outcomes['plain'][0]:.1f} s, checkpointed {outcomes['ckpt'][0]:.1f} s "
          f"(total {time.monotonic() - t0:.1f} s)")
    _, res, err = outcomes["plain"]
    assert err is None, err
    assert res == ["0", "1"], f"expected a first run and one rerun with SLURM_RESTART_COUNT=1: {res}"
    _, res, err = outcomes["ckpt"]
    assert err is None, err
    assert res["step"] == 40 and len(res["starts"]) == 2, res
    assert res["starts"][1] > 0, f"the rerun should resume from the checkpointed step: {res}"
    for job in (plain, ckpt):  # the result file comes before the job ends: poll sacct a little
        deadline = time.monotonic() + 30
        while (states := sacct_states(job.job_id))[-1:] != ["COMPLETED"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", (job.job_id, states)


def test_multi_task_job_ranks(tmp_path):
    """tasks_per_node=2: one result per task, with distinct SLURM_PROCID (what a launcher maps to RANK)."""
    info = slurm_info()
    if info.cpus < 2:
        pytest.skip("needs 2 CPUs on the node")
    job = submitit_executor(tmp_path, tasks_per_node=2).submit(describe, 1, 2)
    t0 = time.monotonic()
    while not job.done():
        if time.monotonic() - t0 > 90:
            pytest.fail(f"job {job.job_id} not done after 90 s")
        time.sleep(0.5)
    res = job.results()
    assert [r["SLURM_PROCID"] for r in res] == ["0", "1"]
    assert {r["SLURM_NTASKS"] for r in res} == {"2"}
    assert {r["SLURM_JOB_NODELIST"] for r in res} == {info.node}
