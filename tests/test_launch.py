"""shared.launch on this machine: exit codes, torch.distributed env for several processes, signals, lightness."""
import json
import os
import platform
import signal
import subprocess
import sys
import time

import pytest

from shared import launch

PY = sys.executable


def run_launch(*args, **kw):
    return subprocess.run([PY, "-m", "shared.launch", *args], capture_output=True, text=True, timeout=120, **kw)


def test_local_passes_exit_code_through():
    assert run_launch("--", PY, "-c", "import sys; sys.exit(0)").returncode == 0
    assert run_launch("--", PY, "-c", "import sys; sys.exit(3)").returncode == 3


def test_local_several_processes_get_distributed_env(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(
        "import json, os, sys\n"
        "keys = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT']\n"
        "open(os.path.join(sys.argv[1], os.environ['RANK'] + '.json'), 'w').write("
        "json.dumps({k: os.environ.get(k) for k in keys}))\n")
    r = run_launch("--nproc-per-node", "2", "--", PY, str(script), str(tmp_path))
    assert r.returncode == 0, r.stderr
    ranks = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    assert [x["RANK"] for x in ranks] == ["0", "1"] and {x["WORLD_SIZE"] for x in ranks} == {"2"}
    assert ranks[0]["MASTER_PORT"] == ranks[1]["MASTER_PORT"]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pin is for x86-64 CPUs")
def test_local_steps_compute_on_the_pinned_cpu_code_paths(tmp_path):
    # a step through the launcher runs torch's kernels at AVX2 whatever this CPU has (shared.launch.NUMERICS_ENV)
    out = tmp_path / "cap.json"
    code = ("import json, os, sys, torch; json.dump({'cap': torch.backends.cpu.get_cpu_capability(), "
            "'env': {k: os.environ.get(k) for k in %r}}, open(sys.argv[1], 'w'))" % list(launch.NUMERICS_ENV))
    env = {k: v for k, v in os.environ.items() if k not in launch.NUMERICS_ENV}  # as a shell without the pin
    r = run_launch("--", PY, "-c", code, str(out), env=env)
    assert r.returncode == 0, r.stderr
    seen = json.loads(out.read_text())
    assert seen == {"cap": "AVX2", "env": launch.NUMERICS_ENV}
    # a value the caller set wins
    assert launch.local_env(base={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"


def test_sigterm_is_forwarded_so_the_step_can_save(tmp_path):
    marker = tmp_path / "saved"
    script = tmp_path / "step.py"
    script.write_text(
        "import signal, sys, time\n"
        f"def stop(s, f):\n    open({str(marker)!r}, 'w').write('saved'); sys.exit({launch.PREEMPTED_EXIT_CODE})\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"open({str(tmp_path / 'started')!r}, 'w').close()\n"
        "time.sleep(60)\n")
    proc = subprocess.Popen([PY, "-m", "shared.launch", "--", PY, str(script)])
    deadline = time.time() + 30
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == launch.PREEMPTED_EXIT_CODE
    assert marker.read_text() == "saved"


def test_bad_usage_is_explained():
    r = run_launch("--nodes", "2", "--", PY, "-c", "pass")
    assert r.returncode == 2 and "--nodes > 1 needs --backend slurm" in r.stderr
    r = run_launch()
    assert r.returncode == 2 and "no command given" in r.stderr
    r = run_launch("--sbatch", "=x", "--", "true")
    assert r.returncode == 2 and "--sbatch expects key=value" in r.stderr


def test_waiting_process_stays_light():
    """The launcher and submitit must not pull in torch: a cluster run keeps dozens of them waiting."""
    code = "import sys, shared.launch, submitit; print('torch' in sys.modules)"
    assert subprocess.run([PY, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_torchrun_command_forms():
    assert launch._torchrun(["python", "-m", "pkg.mod", "a=1"], 2)[-3:] == ["-m", "pkg.mod", "a=1"]
    cmd = launch._torchrun(["/usr/bin/env", "x"], 4, nnodes=2, node_rank=1, master_addr="n1", master_port=123)
    assert "--no-python" in cmd and "--node-rank=1" in cmd and "--master-addr=n1" in cmd
    assert launch._master_port("12345_0") != launch._master_port("12345_1")  # array tasks may share a node
    assert 20000 <= launch._master_port("987654") < 40000


def test_sample_shard_reads_the_slurm_array_then_torchrun_then_one(monkeypatch):
    from shared.config import ConfigError
    from shared.launch import sample_shard

    for var in ("SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    assert sample_shard() == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert sample_shard() == (2, 4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert sample_shard() == (1, 3) and sample_shard(5, 4) == (4, 5)
    with pytest.raises(ConfigError, match="shard_index=5 is outside 0..4"):
        sample_shard(5, 5)
