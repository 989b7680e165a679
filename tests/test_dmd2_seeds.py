"""DMD2's training-seed replicas (issue 18, point 2): the toy tables plan every distilled row once per seed of
config.yaml's dmd2_seeds with seed 0 as the recipe's own run (its command unchanged), the tiny chain keeps one run
per recipe, a claim naming a row its table lacks fails before any job runs, and train.py's seed= is what makes
a replica differ (seed=0 is the default run, weight for weight)."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _dry(*args):
    # --directory: an empty results/, so every job is planned whatever the checkout has already run
    with tempfile.TemporaryDirectory() as workdir:
        r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "2", "--directory", workdir,
                            *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    return r, r.stdout + r.stderr


def _train_commands(out: str) -> list[str]:
    return [line.split(" -- ", 1)[1] for line in out.splitlines()
            if line.startswith("Shell command:") and "/projects/dmd2/train.py" in line]


def test_toy_tables_train_every_distilled_row_once_per_seed():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    seeds = config["dmd2_seeds"]["toy"]
    assert seeds == [0, 1, 2]
    r, out = _dry("eval_sdxl", "eval_sd15", "eval_imagenet64")
    assert r.returncode == 0, out[-3000:]
    cmds = _train_commands(out)
    recipes = Counter(re.search(r"recipe=(\S+)", c).group(1) for c in cmds)
    distilled = {row for rows in config["dmd2_rows"]["toy"].values() for row in rows if not row.startswith("teacher_")}
    assert distilled == {"digits_1step", "digits_1step_gan", "toy_sdxl_4step", "toy_sd15_1step"}
    assert recipes == {name: len(seeds) for name in distilled}
    for c in cmds:
        recipe = re.search(r"recipe=(\S+)", c).group(1)
        run_dir = re.search(r"run_dir=(\S+)", c).group(1)
        seed = re.search(r" seed=(\d+)", c)
        if seed is None:  # seed 0: the recipe's own run, the command it always had (existing runs stay valid)
            assert run_dir == f"results/toy/dmd2/runs/{recipe}"
        else:
            assert int(seed.group(1)) in seeds[1:] and run_dir == f"results/toy/dmd2/runs/{recipe}_seed{seed.group(1)}"
    # each replica is sampled and evaluated, and the table reads every seed's evaluation and judges the claim
    table = next(line for line in out.splitlines() if line.startswith("Shell command:")
                 and "shared/tables.py" in line and "dmd2_sdxl.md" in line)
    for name in ("toy_sdxl_4step", "toy_sdxl_4step_seed1", "toy_sdxl_4step_seed2", "teacher_sdxl_dpm++_25_g4.0"):
        assert f"results/toy/dmd2/eval/{name}.json" in table
    assert "claims='[[toy_sdxl_4step,teacher_sdxl_dpm++_25_g4.0]]'" in table
    # a teacher row is one trained teacher: the one a claim names is sampled once per sampling seed, with noise
    # disjoint from seed 0's (sample i: seed N*1000000 + i); a teacher row no claim names is sampled once
    assert config["dmd2_sampling_seeds"]["toy"] == [0, 1, 2]
    for n in (1, 2):
        assert f"results/toy/dmd2/eval/teacher_sdxl_dpm++_25_g4.0_seed{n}.json" in table
    assert "teacher_sdxl_dpm++_4_g4.0_seed" not in table
    teacher = [line.split(" -- ", 1)[1] for line in out.splitlines() if line.startswith("Shell command:")
               and "/projects/dmd2/sample.py" in line and "mode=teacher" in line]
    claimed = {pair[1] for pairs in config["dmd2_claims"]["toy"].values() for pair in pairs
               if pair[1].startswith("teacher_")}
    assert claimed == {"teacher_edm_edm_dpm++_32_g1.0", "teacher_sdxl_dpm++_25_g4.0", "teacher_sd15_dpm++_25_g1.75"}
    folders = Counter(re.search(r"out_dir=\S+/samples/(\S+)", c).group(1) for c in teacher)
    for row in claimed:
        assert {f: n for f, n in folders.items() if f.startswith(row)} == {row: 1, f"{row}_seed1": 1, f"{row}_seed2": 1}
        seeds = sorted(re.search(r" seed=(\d+)", c).group(1) for c in teacher if f"/samples/{row}_seed" in c)
        assert seeds == ["1000000", "2000000"]
        assert not any(" seed=" in c for c in teacher if c.split("out_dir=")[1].split()[0].endswith(f"/{row}"))
    others = [f for f in folders if not any(f.startswith(r) for r in claimed)]
    assert others and all(folders[f] == 1 and "_seed" not in f for f in others)


def test_tiny_chain_keeps_one_run_per_recipe_and_bad_claims_fail_at_once(tmp_path):
    r, out = _dry("smoke")
    assert r.returncode == 0, out[-3000:]
    cmds = _train_commands(out)
    assert cmds and not any(" seed=" in c for c in cmds) and "dmd2_train_seed" not in out
    assert "dmd2_sample_teacher_seed" not in out
    assert len(cmds) == len({re.search(r"recipe=(\S+)", c).group(1) for c in cmds})

    bad = tmp_path / "bad.yaml"
    claims = yaml.safe_load((REPO / "config.yaml").read_text())["dmd2_claims"]
    claims["toy"]["sdxl"] = [["toy_sdxl_4step", "teacher_sdxl_dpm++_50_g4.0"]]
    bad.write_text(yaml.safe_dump({"dmd2_claims": claims}))
    # the check runs when the workflow is read: listing the targets is enough (a dry run would cost a DAG)
    r = subprocess.run([sys.executable, "-m", "snakemake", "--list-target-rules", "--configfile", str(bad)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "dmd2_claims.toy.sdxl: row 'teacher_sdxl_dpm++_50_g4.0' is not one of dmd2_rows.toy.sdxl" in out, out[-2000:]


def test_another_seed_trains_another_generator_and_seed_zero_is_the_default(tmp_path):
    """If seed= were ignored, the replicas would be copies and the std over seeds a false 0."""
    from safetensors.torch import load_file

    from projects.dmd2 import prepare, train
    from projects.dmd2.tiny import save_tiny_edm
    from shared.config import resolve
    from shared.toy import prepare as digits_prepare

    digits_prepare.main({"scale": "tiny", "out_dir": str(tmp_path / "digits")})
    prepare.main({"scale": "tiny", "kind": "edm", "images": str(tmp_path / "digits/train"),
                  "eval_images": str(tmp_path / "digits/test"), "out_dir": str(tmp_path / "edm")})
    save_tiny_edm(tmp_path / "teacher", seed=0)
    base = {"scale": "tiny", "recipe": "digits_1step_gan", "teacher": str(tmp_path / "teacher"),
            "data": str(tmp_path / "edm/real.lmdb"), "threads": 1, "max_steps": 1, "dfake_gen_update_ratio": 1,
            "grid_size": 1}
    runs = {name: train.main({**base, **extra, "run_dir": str(tmp_path / name)})
            for name, extra in (("default", {}), ("seed1", {"seed": 1}))}
    a, b = (load_file(str(runs[n] / "generator.safetensors")) for n in ("default", "seed1"))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    # seed=0 resolves to the default run's options, field for field (the run is a function of them)
    default = yaml.safe_load((runs["default"] / "config.yaml").read_text())
    zero = resolve(train.Config, {**base, "seed": 0, "run_dir": str(tmp_path / "default")}, train.PRESETS)
    assert default["seed"] == 0 and {k: zero[k] for k in default} == default
