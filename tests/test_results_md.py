"""shared/results_md.py: every README's generated results section equals what its committed CSVs give, and the
generator on fixture tables (values, rounding, provenance, missing or bad files named)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import results_md, tables
from shared.results_md import BEGIN, END, Readme, ResultsError, Table

REPO = Path(__file__).resolve().parents[1]


# --- the repository's own READMEs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(results_md.READMES))
def test_readme_section_is_what_its_committed_csvs_give(key):
    entry = results_md.READMES[key]
    readme = REPO / entry.readme
    assert results_md.current_section(readme) == results_md.section(entry, REPO), (
        f"{entry.readme}: the results section differs from {entry.folder}/<scale>/*.csv; run "
        f"`python -m shared.results_md mode=render readme={key}` (never edit the numbers by hand)")
    known = {f"{s}/{t.name}" for t in entry.tables for s in t.scales}
    committed = {f"{p.parent.name}/{p.stem}" for p in (REPO / entry.folder).glob("*/*.csv")}
    assert committed <= known, f"{entry.folder}: CSVs no table of READMES names: {sorted(committed - known)}"


# --- the generator on fixtures --------------------------------------------------------------------------------------
def test_cells_values_rounding_std_and_paper_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "experiment,checkpoint,sampler,steps,scale,fd,fid,fid_paper,prompt_accuracy,kid,kid_std,speed\n"
        "teacher,ck1,dpm++,25,toy,1.67312,,,0.9625,0.012346,0.00123,12345.6\n"
        "student a|b,ck2,dmd2,4,toy,1.2,,19.32,1.0,,,\n")
    md = results_md.markdown(path, Table("t", "tables/t.csv", "T", "x"))
    assert md.splitlines() == [
        "| experiment | sampler | steps | fd | fid (paper) | prompt_accuracy | kid | speed |",  # fid: all empty
        "|---|---|---:|---:|---:|---:|---:|---:|",
        "| teacher | dpm++ | 25 | 1.673 | – | 0.9625 | 0.01235 ± 0.0012 | 12346 |",
        "| student a\\|b | dmd2 | 4 | 1.2 | 19.32 | 1 | – | – |",
    ]
    md3 = results_md.markdown(path, Table("t", "tables/t.csv", "T", "x", columns=("steps", "fd"),
                                          labels={"fd": "FD"}), digits=3)
    assert md3.splitlines()[0] == "| steps | FD |" and md3.splitlines()[2] == "| 25 | 1.67 |"
    assert [results_md.fmt(v) for v in ("0.000123456", "-2.5", "inf", "nan", " 7 ")] == [
        "0.0001235", "-2.5", "inf", "nan", "7"]


def _evaluation(path: Path, experiment: str, fd: float, acc: float, ci=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    spread = {"ci": ci, "bootstrap_se": (ci[1] - ci[0]) / 4} if ci else {}
    path.write_text(json.dumps({
        "experiment": experiment, "checkpoint": f"runs/{experiment}", "sampler": "dpm++", "steps": 25,
        "scale": "toy", "metrics": [
            {"metric": "fd", "value": fd, "num_samples": 100, "reference_id": "train:1:a", "extractor_id": "cnn:x",
             **spread},
            {"metric": "prompt_accuracy", "value": acc, "num_samples": 100, "reference_id": None,
             "extractor_id": "cnn:x"}]}))
    return path


def _cells(md: str, first: str) -> dict[str, str]:
    """{header: cell} of the Markdown table row whose first cell is `first`."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    header = rows[0]
    (row,) = [r for r in rows if r[0] == first]
    return dict(zip(header, row))


ENTRY = Readme("README.md", "proj/results", (
    Table("fix_a", "tables/fix_a.csv", "Fixture A", "eval_a", ("toy", "paper")),
    Table("fix_b", "tables/fix_b.csv", "Fixture B", "eval_b"),
    Table("curve", "plots/curve.csv", "Curve", "all", columns=("series", "x", "y"), labels={"x": "guidance_scale"},
          after="plots/curve.png"),
))
README_TEXT = "# P\n\nintro quoting 1.5\n\n" + BEGIN + "\n" + END + "\n\nreading stays\n"


@pytest.fixture
def fixture_repo(tmp_path, monkeypatch):
    """A repository with one README (the ENTRY registry) and a workflow results folder: fix_a written by
    shared/tables.py itself (with its provenance), curve by hand with a step run.json, fix_b never run."""
    monkeypatch.setitem(results_md.READMES, "fixture", ENTRY)
    repo, results = tmp_path / "repo", tmp_path / "work" / "results"
    repo.mkdir()
    (repo / "README.md").write_text(README_TEXT)
    # the teacher once with a bootstrap interval, the student trained with 3 seeds, one claim between them
    ev = [_evaluation(results / "toy" / "eval" / f"{n}.json", n, fd, acc, ci)
          for n, fd, acc, ci in (("teacher", 1.67312, 0.9625, [1.61, 1.73]), ("student", 1.25, 0.99, None),
                                 ("student_seed1", 1.30, 0.98, None), ("student_seed2", 1.20, 1.0, None))]
    tdir = results / "toy" / "tables"
    table_md = tables.main({"inputs": [str(p) for p in ev], "title": "A", "scale": "toy",
                            "claims": [["student", "teacher"]], "out_claims": str(tdir / "fix_a.claims.json"),
                            "out_md": str(tdir / "fix_a.md"), "out_csv": str(tdir / "fix_a.csv")})
    (results / "toy" / "plots").mkdir(parents=True)
    # csv.writer's line ends (\r\n), as sampler_compare writes them: the committed copy must keep them
    (results / "toy" / "plots" / "curve.csv").write_bytes(b"series,x,y\r\nddpm,1.0,0.7\r\nddpm,3.0,1.0\r\n")
    (results / "toy" / "plots" / "run.json").write_text(json.dumps(
        {"git_commit": "c0ffee" * 6 + "abcd", "time": "2026-12-01T10:00:00+00:00", "argv": ["compare.py"]}))
    cfg = {"readme": "fixture", "repo": str(repo), "results_dir": str(results)}
    return repo, results, cfg, table_md


def _section(repo):
    return results_md.current_section(repo / "README.md")


def test_collect_copies_the_tables_with_provenance_and_writes_the_section(fixture_repo, capsys):
    repo, results, cfg, table_md = fixture_repo
    assert results_md.main({**cfg, "mode": "collect"}) == []
    committed = repo / "proj" / "results" / "toy" / "fix_a.csv"
    assert committed.read_bytes() == (results / "toy" / "tables" / "fix_a.csv").read_bytes()
    curve = repo / "proj" / "results" / "toy" / "curve.csv"
    assert curve.read_bytes() == (results / "toy" / "plots" / "curve.csv").read_bytes()
    assert results_md.main({**cfg, "mode": "check"}) == []  # the provenance's sha256 matches the committed copy
    prov = json.loads(committed.with_suffix(".provenance.json").read_text())
    step = json.loads((results / "toy" / "tables" / "fix_a.config.run.json").read_text())
    assert prov["source"] == "results/toy/tables/fix_a.csv" and prov["target"] == "snakemake --cores 2 eval_a"
    assert prov["step"]["git_commit"] == step["git_commit"] and prov["step"]["argv"] == step["argv"]
    assert prov["step_provenance"] == "results/toy/tables/fix_a.config.run.json"

    text = (repo / "README.md").read_text()
    assert text.startswith("# P\n\nintro quoting 1.5\n\n") and text.endswith(END + "\n\nreading stays\n")
    sec = _section(repo)
    assert f"`{(step['git_commit'] or 'unknown')[:12]}`" in sec and "from `results/toy/tables/fix_a.csv`" in sec
    # the README's cells are shared/tables.py's own Markdown cells (4 significant digits, ± std, 95% CI)
    for name in ("teacher", "student"):
        mine, theirs = _cells(sec.split("**Curve**")[0], name), _cells(table_md, name)
        common = [h for h in theirs if h in mine]
        assert {"fd", "fd 95% CI", "prompt_accuracy", "steps"} <= set(common)
        assert [mine[h] for h in common] == [theirs[h] for h in common]
    assert _cells(sec, "teacher") == {"experiment": "teacher", "sampler": "dpm++", "steps": "25", "fd": "1.673",
                                      "fd 95% CI": "[1.61, 1.73]", "prompt_accuracy": "0.9625", "num_seeds": "1"}
    assert _cells(sec, "student")["fd"] == "1.25 ± 0.05" and _cells(sec, "student")["fd 95% CI"] == "–"
    # the claim's verdict, in tables.py's words, from the committed claims JSON
    tdir = results / "toy" / "tables"
    verdicts = json.loads((tdir / "fix_a.claims.json").read_text())
    assert (committed.with_name("fix_a.claims.json").read_bytes() == (tdir / "fix_a.claims.json").read_bytes())
    assert prov["claims_sha256"] == results_md._sha256(tdir / "fix_a.claims.json")
    for v in verdicts:
        assert f"- {tables.claim_line(v, 4)}" in sec
    assert "`student` (3 seeds) vs `teacher`, fd: 1.25 vs 1.673" in sec and "**exceeds** the spread" in sec
    assert "| guidance_scale |" not in sec.split("Curve")[0]
    assert "| series | guidance_scale | y |\n|---|---:|---:|\n| ddpm | 1 | 0.7 |\n| ddpm | 3 | 1 |" in sec
    assert "`c0ffeec0ffee` on 2026-12-01" in sec
    assert ("Not run yet at toy:\n\n- Fixture B (`fix_b`): `snakemake --cores 2 eval_b` writes "
            "`results/toy/tables/fix_b.csv`") in sec
    assert ("Not run yet at paper (committed copies go in `proj/results/paper/`):\n\n- Fixture A (`fix_a`): "
            "`snakemake --profile slurm eval_a` writes `results/paper/tables/fix_a.csv`") in sec
    assert "results/toy/tables/fix_b.csv not found" in capsys.readouterr().out

    # the same tables again: nothing rewritten (no provenance churn in git)
    before = {p: p.read_bytes() for p in (repo / "proj").rglob("*") if p.is_file()}
    results_md.main({**cfg, "mode": "collect"})
    assert {p: p.read_bytes() for p in (repo / "proj").rglob("*") if p.is_file()} == before
    # a table whose source is gone keeps its committed copy
    (results / "toy" / "tables" / "fix_a.csv").unlink()
    results_md.main({**cfg, "mode": "collect"})
    assert committed.is_file() and "keeping the committed copy" in capsys.readouterr().out
    assert _cells(_section(repo), "teacher")["fd"] == "1.673"


def test_check_fails_when_the_readme_numbers_and_the_csvs_disagree(fixture_repo):
    repo, results, cfg, _ = fixture_repo
    results_md.main({**cfg, "mode": "collect"})
    assert results_md.main({**cfg, "mode": "check"}) == []
    readme = repo / "README.md"
    good = readme.read_text()
    assert "| 1.673 |" in good
    readme.write_text(good.replace("| 1.673 |", "| 1.26 |"))  # a number copied by hand
    with pytest.raises(SystemExit) as e:
        results_md.main({**cfg, "mode": "check"})
    assert e.value.code == 1
    results_md.main({**cfg, "mode": "render"})
    assert readme.read_text() == good
    # a committed CSV edited by hand: its provenance's SHA-256 no longer matches, named
    csv_path = repo / "proj" / "results" / "toy" / "fix_a.csv"
    csv_path.write_text(csv_path.read_text().replace("1.67312", "1.26"))
    with pytest.raises(ResultsError, match=rf"{csv_path}: its SHA-256 .* edited by hand"):
        results_md.main({**cfg, "mode": "check"})


def test_missing_and_bad_files_are_named(fixture_repo, tmp_path):
    repo, results, cfg, _ = fixture_repo
    with pytest.raises(ResultsError, match=rf"{results}/toy/tables/fix_b.csv: file not found "
                                           r"\(`snakemake --cores 2 eval_b` writes it\)"):
        results_md.main({**cfg, "tables": ["fix_b"]})
    with pytest.raises(ResultsError, match=r"'nope' is not a table of README.md; expected one of \['fix_a'"):
        results_md.main({**cfg, "tables": ["nope"]})
    (results / "paper" / "tables").mkdir(parents=True)
    for name in ("fix_a.csv", "fix_a.config.run.json"):  # a toy table where the paper one belongs
        (results / "paper" / "tables" / name).write_bytes((results / "toy" / "tables" / name).read_bytes())
    with pytest.raises(ResultsError, match=r"paper/tables/fix_a.csv: rows of scale \['toy'\] in the paper results"):
        results_md.main({**cfg, "tables": ["fix_a"], "scale": "paper"})
    (results / "toy" / "tables" / "fix_a.config.run.json").unlink()
    with pytest.raises(ResultsError, match=r"fix_a.csv: no provenance beside it \(expected fix_a.config.run.json"):
        results_md.main({**cfg, "tables": ["fix_a"]})
    (results / "toy" / "plots" / "curve.csv").write_text("series,x\nddpm,1.0\n")
    with pytest.raises(ResultsError, match=r"curve.csv: no column\(s\) \['y'\]; it has \['series', 'x'\]"):
        results_md.main({**cfg, "tables": ["curve"]})
    (results / "toy" / "plots" / "curve.csv").write_text("series,x,y\nddpm,1.0\n")
    with pytest.raises(ResultsError, match=r"curve.csv: line\(s\) \[2\] do not have the header's 3 fields"):
        results_md.main({**cfg, "tables": ["curve"]})
    (repo / "README.md").write_text("# P\n\nno markers\n")
    with pytest.raises(ResultsError, match=rf"{repo}/README.md: expected one '<!-- results:begin -->' line"):
        results_md.main({**cfg, "mode": "render"})
    with pytest.raises(ResultsError, match=r"readme='nope': expected all or one of \['default', 'dmd2'"):
        results_md.main({**cfg, "readme": "nope"})


def test_command_line_reports_a_bad_file_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "shared.results_md", "readme=dmd2", "tables=[dmd2_sdxl]",
                        f"results_dir={tmp_path}", f"repo={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"error: {tmp_path}/toy/tables/dmd2_sdxl.csv: file not found "
                                f"(`snakemake --cores 2 eval_sdxl` writes it)")


def test_readme_target_collects_after_the_targets_table(tmp_path):
    # --forcerun: the committed copy (projects/dmd2/results/toy/dmd2_sdxl.csv) already exists in a clone;
    # --directory: an empty results/, whatever the checkout has already run
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--directory", str(tmp_path),
                        "--forcerun", "results_md_dmd2", "--", "readme_eval_sdxl"], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "rule results_md_dmd2:" in out and "rule dmd2_table_toy:" in out
    assert f"shared/results_md.py readme=dmd2 scale=toy tables=[dmd2_sdxl]" in out
    assert f"{REPO}/projects/dmd2/results/toy/dmd2_sdxl.csv" in out
    assert "results_md_default" not in out and "readme=sd_flux_lab" not in out


def test_every_toy_table_the_workflow_writes_has_a_readme_section():
    """The workflow's toy tables (planned by the targets the READMES name) and the READMES registry agree, so a
    table added to a rule file without a README place fails here."""
    registry = {t.after or t.source: t for e in results_md.READMES.values() for t in e.tables if "toy" in t.scales}
    targets = sorted({t.target for t in registry.values()})
    r = subprocess.run([sys.executable, "-m", "snakemake", "--summary", "--config", "scale=toy", "--", *targets],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    planned = {line.split("\t")[0].removeprefix("results/toy/") for line in r.stdout.splitlines()}
    tables_planned = {p for p in planned if p.startswith("tables/") and p.endswith(".csv")}
    assert tables_planned == {s for s in registry if s.startswith("tables/")}
    assert {s for s in registry if not s.startswith("tables/")} <= planned
