"""shared/tables.py's spread: rows of several training seeds as mean ± std, bootstrap intervals (of a seed mean),
the claims' verdicts, and the refusals, on fixture evaluation JSONs (issue 18, point 3)."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from shared import tables
from shared.metrics.bootstrap import summary


def _boot(value, se, seed):
    """Resampled values around `value` with standard error about `se`, offset upwards as FD's are."""
    return list(value + 0.3 * se + se * np.random.default_rng(seed).standard_normal(200))


def _write(path, name, fd, acc, boot_seed=None, se=(0.05, 0.01)):
    entries = []
    for metric, value, s in (("fd", fd, se[0]), ("prompt_accuracy", acc, se[1])):
        e = {"metric": metric, "value": value, "num_samples": 1000, "reference_id": None if metric != "fd" else
             "train:1:a", "extractor_id": "digits-cnn:x"}
        if boot_seed is not None:
            e.update(summary(value, _boot(value, s, boot_seed + (metric == "fd")), seed=0))
        entries.append(e)
    path.write_text(json.dumps({"experiment": name, "checkpoint": name, "sampler": "dmd2", "steps": 4,
                                "scale": "toy", "metrics": entries}))
    return str(path)


def _table(tmp_path, inputs, **kw):
    md = tables.main({"inputs": inputs, "title": "T", "scale": "toy", "out_md": str(tmp_path / "t.md"),
                      "out_csv": str(tmp_path / "t.csv"), **kw})
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    return md, {r["experiment"]: r for r in rows}


def test_seed_rows_become_mean_and_std_with_the_interval_of_their_mean(tmp_path):
    student = [(1.20, 0.990), (1.30, 0.985), (1.40, 0.980)]
    files = [_write(tmp_path / "teacher.json", "teacher_25", 1.70, 0.950, boot_seed=10)]
    files += [_write(tmp_path / f"s{i}.json", "student" + (f"_seed{i}" if i else ""), fd, acc, boot_seed=20 + i)
              for i, (fd, acc) in enumerate(student)]
    md, rows = _table(tmp_path, files, claims=[["student", "teacher_25"]], out_claims=str(tmp_path / "c.json"))
    header = [h.strip() for h in md.splitlines()[2].strip("|").split("|")]
    assert header == ["experiment", "checkpoint", "sampler", "steps", "seeds", "fd", "fd 95% CI",
                      "prompt_accuracy", "prompt_accuracy 95% CI"]
    body = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in md.splitlines()[4:6]}
    assert body["student"][:5] == ["student", "student", "dmd2", "4", "0 1 2"]
    assert body["student"][5] == "1.3 ± 0.1" and body["teacher_25"][4:6] == ["0", "1.7"]

    fds = [fd for fd, _ in student]
    assert set(rows) == {"teacher_25", "student"}
    s, t = rows["student"], rows["teacher_25"]
    assert float(s["fd"]) == pytest.approx(np.mean(fds)) and float(s["fd_std"]) == pytest.approx(np.std(fds, ddof=1))
    assert s["num_seeds"] == "3" and t["num_seeds"] == "1" and t["fd_std"] == ""
    # the student's interval: the seeds' resampled values averaged draw by draw, then the shifted percentiles
    loaded = [json.loads(open(f).read())["metrics"][0] for f in files[1:]]
    want = summary(np.mean(fds), np.mean([e["bootstrap_values"] for e in loaded], axis=0), seed=0)["ci"]
    assert [float(s["fd_ci_low"]), float(s["fd_ci_high"])] == pytest.approx(want, rel=1e-12)
    assert float(s["fd_ci_low"]) < float(s["fd"]) < float(s["fd_ci_high"])
    teacher_ci = json.loads(open(files[0]).read())["metrics"][0]["ci"]
    assert [float(t["fd_ci_low"]), float(t["fd_ci_high"])] == teacher_ci
    # averaging three seeds' resamples narrows the interval against one seed's
    assert float(s["fd_ci_high"]) - float(s["fd_ci_low"]) < loaded[0]["ci"][1] - loaded[0]["ci"][0]

    # the claim: 1.3 vs 1.7 with 2 sigma = 2 sqrt(0.1^2 + se_s^2 + se_t^2) ~ 0.21: exceeds; the accuracies
    # 0.985 vs 0.95 with 2 sigma ~ 2 sqrt(0.005^2 + 0.006^2 + 0.01^2) ~ 0.026: exceeds
    verdicts = {v["metric"]: v for v in json.loads((tmp_path / "c.json").read_text())}
    fd = verdicts["fd"]
    assert fd["difference"] == pytest.approx(1.3 - 1.7) and fd["better"] == "student" and fd["exceeds_spread"]
    se_s = float(np.std(np.mean([e["bootstrap_values"] for e in loaded], axis=0), ddof=1))
    se_t = json.loads(open(files[0]).read())["metrics"][0]["bootstrap_se"]
    assert fd["two_sigma"] == pytest.approx(2 * np.sqrt(np.var(fds, ddof=1) + se_s ** 2 + se_t ** 2), rel=1e-9)
    assert verdicts["prompt_accuracy"]["better"] == "student" and not verdicts["prompt_accuracy"]["lower_is_better"]
    assert "**exceeds** the spread" in md and "`student` (3 seeds) vs `teacher_25`, fd: 1.3 vs 1.7" in md


def test_a_difference_within_the_spread_is_called_so(tmp_path):
    files = [_write(tmp_path / "t.json", "teacher", 1.673, 0.962, boot_seed=1),
             _write(tmp_path / "s.json", "student", 1.675, 0.978, boot_seed=2),
             _write(tmp_path / "s1.json", "student_seed1", 1.60, 0.97, boot_seed=3)]
    md, rows = _table(tmp_path, files, claims=[["student", "teacher"]])
    assert "fd: 1.638 vs 1.673" in md and "does **not** exceed the spread" in md
    # without bootstrap entries and with one seed there is no spread to compare with
    plain = [_write(tmp_path / "pt.json", "teacher", 1.673, 0.962), _write(tmp_path / "ps.json", "student", 1.2, 0.97)]
    md, rows = _table(tmp_path, plain, claims=[["student", "teacher"]])
    assert "no spread measured" in md and "num_seeds" not in rows["student"] and "fd_ci_low" not in rows["student"]


def test_group_seeds_off_keeps_the_rows_apart_and_refusals(tmp_path):
    files = [_write(tmp_path / "a.json", "m", 1.0, 0.9, boot_seed=1),
             _write(tmp_path / "b.json", "m_seed1", 1.1, 0.9, boot_seed=2)]
    _, rows = _table(tmp_path, files, group_seeds=False)
    assert set(rows) == {"m", "m_seed1"} and "num_seeds" not in rows["m"]
    with pytest.raises(tables.TableError, match="not in the table"):
        _table(tmp_path, files, claims=[["m", "nope"]])
    with pytest.raises(tables.TableError, match="pair of row names"):
        _table(tmp_path, files, claims=[["m"]])
    # a seed's JSON that lacks a metric the others have
    d = json.loads(open(files[1]).read())
    d["metrics"] = d["metrics"][:1]
    (tmp_path / "b.json").write_text(json.dumps(d))
    with pytest.raises(tables.TableError, match="'prompt_accuracy' is missing for some of the seeds"):
        _table(tmp_path, files)
    assert tables.split_seed("toy_sdxl_4step_seed12") == ("toy_sdxl_4step", 12)
    assert tables.split_seed("teacher_sdxl_dpm++_25_g4.0") == ("teacher_sdxl_dpm++_25_g4.0", 0)


def test_leaderboard_shows_a_method_of_several_seeds_once(tmp_path):
    d = tmp_path / "results/toy/dmd2/eval"
    d.mkdir(parents=True)
    files = [_write(d / "t.json", "teacher_25", 1.7, 0.95), _write(d / "s.json", "student", 1.2, 0.99),
             _write(d / "s1.json", "student_seed1", 1.4, 0.97)]
    tables.main({"kind": "leaderboard", "inputs": files, "scale": "toy", "out_md": str(tmp_path / "lb.md")})
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((tmp_path / "lb.csv").read_text()))}
    assert set(rows) == {"teacher_25", "student (mean of 2 seeds)"}
    s = rows["student (mean of 2 seeds)"]
    assert float(s["fd"]) == pytest.approx(1.3) and float(s["prompt_accuracy"]) == pytest.approx(0.98)
    assert s["source"] == f"{files[1]};{files[2]}"
