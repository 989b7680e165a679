"""The leaderboard's training columns: `train_steps` and `train_seconds` summed over the training runs that made a
method (shared/leaderboard.py follows the steps' recorded options back from the evaluation), on the files of a real
tiny DMD2 chain (teacher, student, samples, evaluations, run in a workflow-like folder) and of the default target's
tiny chain (the digits diffusion behind the sampler rows)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.tiny_chain import tiny_chain

torch.set_num_threads(1)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _expected(run_dir: Path) -> tuple[int, float]:
    """A run's last optimizer step and the seconds of its logged steps, read from its files independently of
    shared.leaderboard: each row with steps_per_sec covers the steps since the row before it."""
    rows = _log(run_dir)
    seconds, before = 0.0, 0
    for r in rows:
        if "steps_per_sec" in r:
            seconds += (r["step"] - before) / r["steps_per_sec"]
            before = r["step"]
    return max(r["step"] for r in rows), seconds


@pytest.fixture(scope="module")
def dmd2_chain(tmp_path_factory):
    """The tiny ImageNet-64 analogue's chain as the workflow runs it (paths relative to the workflow folder):
    digits, EDM teacher, a 1-step student from it, the feature CNN, samples of both, their evaluations."""
    import os

    from projects.dmd2 import evaluate, prepare, sample, train, train_teacher
    from shared.toy import prepare as digits_prepare
    from shared.toy import train_features

    work = tmp_path_factory.mktemp("lb_chain")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        digits_prepare.main({"scale": "tiny", "out_dir": "data/tiny/digits"})
        prepare.main({"scale": "tiny", "kind": "edm", "images": "data/tiny/digits/train",
                      "eval_images": "data/tiny/digits/test", "out_dir": "data/tiny/dmd2/digits"})
        train_teacher.main({"scale": "tiny", "data": "data/tiny/dmd2/digits/real.lmdb",
                            "run_dir": "results/tiny/dmd2/teacher", "threads": 1})
        train.main({"scale": "tiny", "recipe": "digits_1step", "teacher": "results/tiny/dmd2/teacher",
                    "data": "data/tiny/dmd2/digits/real.lmdb", "run_dir": "results/tiny/dmd2/runs/digits_1step",
                    "max_steps": 3, "threads": 1})
        train_features.main({"scale": "tiny", "data_dir": "data/tiny/digits",
                             "out_dir": "results/tiny/digits_features"})
        prompts = "data/tiny/dmd2/digits/eval_prompts.txt"
        sample.main({"scale": "tiny", "checkpoint": "results/tiny/dmd2/runs/digits_1step", "prompts": prompts,
                     "num_images": 24, "out_dir": "results/tiny/dmd2/samples/digits_1step"})
        sample.main({"scale": "tiny", "mode": "teacher", "backbone": "edm", "teacher": "results/tiny/dmd2/teacher",
                     "prompts": prompts, "steps": 2, "num_images": 24, "out_dir": "results/tiny/dmd2/samples/teacher"})
        for name in ("digits_1step", "teacher"):
            evaluate.main({"scale": "tiny", "images": f"results/tiny/dmd2/samples/{name}",
                           "reference": "data/tiny/digits/train", "metrics": ["fd"], "experiment": name,
                           "extractor": "digits:results/tiny/digits_features/features.safetensors",
                           "out": f"results/tiny/dmd2/eval/{name}.json"})
        yield work
    finally:
        os.chdir(cwd)


def test_dmd2_student_costs_teacher_plus_student(dmd2_chain, monkeypatch):
    from shared import leaderboard, tables

    monkeypatch.chdir(dmd2_chain)
    teacher, student = Path("results/tiny/dmd2/teacher"), Path("results/tiny/dmd2/runs/digits_1step")
    t_steps, t_seconds = _expected(teacher)
    s_steps, s_seconds = _expected(student)
    # the steps each run was asked for (its resolved config.yaml), all done
    assert (t_steps, s_steps) == (yaml.safe_load((teacher / "config.yaml").read_text())["max_steps"], 3) == (2, 3)
    assert t_seconds > 0 and s_seconds > 0

    cost = leaderboard.training_cost("results/tiny/dmd2/eval/digits_1step.json")
    # the feature CNN (the extractor) measured the student; it is not part of what made it
    assert [r.run_dir for r in cost.runs] == [str(student), str(teacher)]
    assert (cost.steps, cost.seconds) == (s_steps + t_steps, pytest.approx(s_seconds + t_seconds, rel=1e-12))

    tables.main({"kind": "leaderboard", "scale": "tiny", "title": "LB", "out_md": "lb.md",
                 "inputs": ["results/tiny/**/eval/*.json"]})
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(Path("lb.csv").read_text()))}
    s, t = rows["digits_1step"], rows["teacher"]
    assert (int(s["train_steps"]), float(s["train_seconds"])) == (5, round(s_seconds + t_seconds, 1))
    assert s["train_runs"] == f"{student};{teacher}"
    assert (int(t["train_steps"]), float(t["train_seconds"]), t["train_runs"]) == (2, round(t_seconds, 1),
                                                                                 str(teacher))
    md = Path("lb.md").read_text()
    assert "| train_steps | train_seconds | fd_reference |" in md and "teacher + student" in md


def test_a_killed_rows_tail_and_rows_without_speed_are_not_counted(tmp_path):
    from shared import leaderboard

    rows = [{"step": 2, "loss": 1.0, "steps_per_sec": 4.0}, {"step": 2, "fid": 3.0},  # an evaluation row
            {"step": 5, "loss": 0.5, "steps_per_sec": 1.5}, {"step": 5, "steps": 5}]  # the final metrics row
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
    run = leaderboard.read_run(tmp_path)
    assert (run.steps, run.seconds) == (5, pytest.approx(2 / 4.0 + 3 / 1.5))


def test_default_tiny_chain_sampler_rows_carry_the_digits_diffusion_cost(tmp_path_factory):
    """The default target's leaderboard (tiny): every sampler row was sampled from the one digits diffusion run."""
    work = tiny_chain(tmp_path_factory, 1)
    steps, seconds = _expected(work / "results/tiny/digits_diffusion")
    cfg = yaml.safe_load((work / "results/tiny/digits_diffusion/config.yaml").read_text())
    assert steps == cfg["max_steps"] and seconds > 0
    rows = list(csv.DictReader((work / "results/tiny/leaderboard/default/leaderboard.csv").open()))
    sampled = [r for r in rows if "/sampler_compare/" in r["source"]]
    assert sampled and all((int(r["train_steps"]), float(r["train_seconds"]), r["train_runs"])
                           == (steps, round(seconds, 1), "results/tiny/digits_diffusion") for r in sampled)
    real = [r for r in rows if "/sampler_compare/" not in r["source"]]
    assert real and all((r["train_steps"], r["train_seconds"]) == ("n/a", "n/a") for r in real)
