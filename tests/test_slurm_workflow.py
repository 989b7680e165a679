"""The workflow and shared.launch against a real SLURM (CI brings one up with .ci/slurm/up.sh).

Skipped with the reason when no cluster answers; with REQUIRE_SLURM=1 (CI) a missing cluster fails instead.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_utils import slurm_available

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def partition():
    ok, reason = slurm_available()
    if not ok:
        if os.environ.get("REQUIRE_SLURM") == "1":
            pytest.fail(f"REQUIRE_SLURM=1 but SLURM is not usable: {reason}")
        pytest.skip(f"no SLURM cluster: {reason}")
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
    return next((p.rstrip("*") for p in out if p.endswith("*")), out[0])


def sacct_states(job_id):
    out = subprocess.run(["sacct", "-n", "-X", "-D", "-j", str(job_id), "-o", "State%30"], capture_output=True,
                         text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def job_ids(text):
    return re.findall(r"\[launch\] (\S+): SLURM job (\d+);", text)


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_smoke_through_the_slurm_profile(tmp_path, partition):
    """`snakemake --profile slurm smoke eval_sdxl --config scale=tiny` from the repository root (the users'
    headline command at tiny scale, plus every project's tiny chain), outputs in a scratch directory."""
    r = subprocess.run([PY, "-m", "snakemake", "--profile", "slurm", "smoke", "eval_sdxl", "--directory",
                        str(tmp_path), "--config", "scale=tiny", f"slurm_partition={partition}"], cwd=REPO,
                       capture_output=True, text=True, timeout=1800)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    jobs = dict(job_ids(out))
    assert {"train_digits_features", "evaluate_digits_real", "dmd2_train", "dmd2_sample_generator"} <= set(jobs), \
        out[-3000:]
    table = (tmp_path / "results/tiny/tables/dmd2_sdxl.md").read_text()
    assert "toy_sdxl_4step" in table and "19.32" in table  # the distilled 4-step row beside the paper's FID
    for rule, job in jobs.items():
        assert sacct_states(job)[-1] == "COMPLETED", (rule, sacct_states(job))
    # the rule that asks for a GPU got one of the fake gres devices
    run = json.loads((tmp_path / "results/tiny/digits_features/run.json").read_text())
    assert run["env"]["SLURM_JOB_ID"] == jobs["train_digits_features"]
    assert run["env"].get("CUDA_VISIBLE_DEVICES") in {"0", "1"}
    # the same checks as the local smoke test, which CI skips because this one runs the chain
    from test_workflow import check_smoke_outputs

    check_smoke_outputs(tmp_path, "--profile", "slurm", "smoke", "eval_sdxl", "--config", "scale=tiny",
                        f"slurm_partition={partition}")


SLEEPY_SNAKEFILE = """
config.update({{"launcher": "slurm", "slurm_partition": "{partition}"}})
include: "{repo}/workflow/rules/common.smk"

rule sleepy:
    output: "sleepy.done"
    resources: **heavy(runtime=10, mem_mb=500)
    shell: launch("tests/helpers/sleep_step.py {out} 300") + " && touch {{output}}"
"""


def start_sleepy(tmp_path, partition):
    snakefile = tmp_path / "Snakefile"
    out = tmp_path / "step"
    snakefile.write_text(SLEEPY_SNAKEFILE.format(partition=partition, repo=REPO, out=out))
    (tmp_path / "config.yaml").write_text("{}\n")
    log = open(tmp_path / "snakemake.log", "w")
    proc = subprocess.Popen([PY, "-m", "snakemake", "--cores", "1", "-s", str(snakefile), "--directory",
                             str(tmp_path), "--configfile", str(REPO / "config.yaml")], stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    job = wait_for(lambda: (out / "started").is_file() and (out / "started").read_text().split()[0], 120,
                   "the SLURM job to start")
    return proc, job, out


def test_scancel_fails_the_rule_within_seconds(tmp_path, partition):
    proc, job, out = start_sleepy(tmp_path, partition)
    subprocess.run(["scancel", job], check=True)
    t0 = time.time()
    rc = proc.wait(timeout=120)
    assert time.time() - t0 < 30, "the rule took too long to notice the cancellation"
    log = (tmp_path / "snakemake.log").read_text()
    assert rc != 0
    assert f"SLURM job {job} ended with state CANCELLED" in log, log[-3000:]
    assert not (tmp_path / "sleepy.done").exists()


def test_sigterm_to_snakemake_cancels_its_slurm_jobs(tmp_path, partition):
    proc, job, out = start_sleepy(tmp_path, partition)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    wait_for(lambda: sacct_states(job) and sacct_states(job)[-1].startswith("CANCELLED"), 60,
             f"job {job} to be cancelled (sacct says {sacct_states(job)})")
    assert "cancelling SLURM job " + job in (tmp_path / "snakemake.log").read_text()


def test_requeued_training_resumes_from_its_checkpoint(tmp_path, partition):
    """`scontrol requeue` mid-training: the step saves, the job runs again and resumes, and finishes."""
    run_dir = tmp_path / "run"
    log = open(tmp_path / "launch.log", "w")
    proc = subprocess.Popen([PY, "-m", "shared.launch", "--backend", "slurm", "--name", "requeue_drill",
                             "--partition", partition, "--runtime", "10", "--mem-mb", "1000", "--",
                             PY, "-m", "shared.train.example", "scale=tiny", f"run_dir={run_dir}", "step_sleep=0.1"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    job = wait_for(lambda: dict(job_ids((tmp_path / "launch.log").read_text())).get("requeue_drill"), 60, "submit")
    wait_for(lambda: any((run_dir / "checkpoints").glob("ckpt-*")) if (run_dir / "checkpoints").is_dir() else False,
             120, "a first checkpoint")
    subprocess.run(["scontrol", "requeue", job], check=True)
    # SLURM holds a requeued job for ~2 minutes (BeginTime); release it now to keep the test short.
    wait_for(lambda: "PENDING" in subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                                                 text=True).stdout, 60, "the job to be pending again")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    assert proc.wait(timeout=300) == 0, (tmp_path / "launch.log").read_text()[-3000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["env"]["SLURM_RESTART_COUNT"] == "1"  # written by the second (resumed) attempt
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [e["step"] for e in events if "loss" in e]
    assert steps == sorted(set(steps)) and steps[-1] == 60, "a resumed run repeats, reorders or loses steps"
    job_out = (tmp_path / "logs/slurm/requeue_drill" / job / f"{job}_0_log.out").read_text()
    assert "step stopped with its checkpoint saved (exit 75)" in job_out
    assert re.search(r"resuming from .*ckpt-\d+ \(step \d+\)", job_out)
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] > 0.5


def test_several_tasks_get_torch_distributed_env(tmp_path, partition):
    """One SLURM task per process, each with RANK/WORLD_SIZE/LOCAL_RANK and a shared MASTER_ADDR/PORT."""
    script = tmp_path / "rank.py"
    script.write_text(
        "import json, os, sys\n"
        "keys = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_JOB_ID']\n"
        "open(os.path.join(sys.argv[1], os.environ['RANK'] + '.json'), 'w').write("
        "json.dumps({k: os.environ.get(k) for k in keys}))\n")
    r = subprocess.run([PY, "-m", "shared.launch", "--backend", "slurm", "--name", "ranks", "--partition", partition,
                        "--nproc-per-node", "2", "--cpus-per-task", "1", "--mem-mb", "500", "--runtime", "5", "--",
                        PY, str(script), str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    assert [x["RANK"] for x in ranks] == ["0", "1"] and [x["LOCAL_RANK"] for x in ranks] == ["0", "1"]
    assert {x["WORLD_SIZE"] for x in ranks} == {"2"} and len({x["SLURM_JOB_ID"] for x in ranks}) == 1
    assert ranks[0]["MASTER_ADDR"] == ranks[1]["MASTER_ADDR"] and ranks[0]["MASTER_PORT"] == ranks[1]["MASTER_PORT"]
