"""DMD2 with two processes (torchrun through shared.launch, gloo on CPU): DDP generator and fake denoiser, GAN on."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_two_process_gloo_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    py = sys.executable
    setup = ("from shared.toy import prepare as d; from projects.dmd2 import prepare as p; "
             "from projects.dmd2.tiny import save_tiny_edm; import sys; r=sys.argv[1]; "
             "d.main({'scale':'tiny','out_dir':r+'/digits'}); "
             "p.main({'scale':'tiny','kind':'edm','images':r+'/digits/train','eval_images':'','out_dir':r+'/edm'}); "
             "save_tiny_edm(r+'/teacher')")
    subprocess.run([py, "-c", setup, str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    run = tmp_path / "run"
    r = subprocess.run([py, "-m", "shared.launch", "--nproc-per-node", "2", "--", py, "projects/dmd2/train.py",
                        "scale=tiny", "recipe=digits_1step_gan", f"teacher={tmp_path / 'teacher'}",
                        f"data={tmp_path / 'edm/real.lmdb'}", f"run_dir={run}", "max_steps=2", "dfake_gen_update_ratio=1",
                        "threads=1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_dm" in row and "loss_d" in row for row in rows)
    assert (run / "generator.safetensors").is_file()
    state = list((run / "checkpoints").glob("ckpt-*/rank00001.pt"))
    assert state, "the second process saved its RNG/data state"
