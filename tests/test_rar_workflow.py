"""The generators' workflow: `--profile slurm eval_rar` plans the paper chain (released RAR-B..XXL, 50 x 1000 class
samples on 8 GPUs, gFID against ADM's reference batch beside the paper's 1.95/1.70/1.50/1.48); the tiny chain is
part of `smoke`."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dry(*args):
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_paper_eval_rar_plans_the_released_chain():
    out = dry("--profile", "slurm", "eval_rar")
    for size in ("rar_b", "rar_l", "rar_xl", "rar_xxl"):
        assert f"downloads/titok_rar/generators/{size}/download.json" in out
        assert f"released={size} experiment.generator_checkpoint=downloads/titok_rar/generators/{size}/{size}.bin" in out
        assert f"results/paper/titok_rar/gen/eval/released_{size}.json" in out
    assert "maskgit-vqgan-imagenet-f16-256.bin" in out and "per_class=50 num_classes=1000" in out
    assert "--gpus-per-node 8" in out and "--backend slurm" in out
    assert "adm_imagenet256/reference_stats.npz" in out and "metrics=[fid,inception_score]" in out
    assert "{rar_b: {fid: 1.95}, rar_l: {fid: 1.7}, rar_xl: {fid: 1.5}, rar_xxl: {fid: 1.48}}" in out
    assert "results/paper/tables/titok_rar_gen_rar.md" in out


def test_smoke_includes_the_tiny_generator_chain():
    out = dry("smoke")
    assert "results/tiny/tables/titok_rar_gen_smoke.md" in out
    for run in ("rar_annealed", "maskgit", "maskgen"):
        assert f"results/tiny/titok_rar/gen/runs/{run}/final/generator.yaml" in out
