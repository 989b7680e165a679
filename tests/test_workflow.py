"""The Snakemake workflow: every target dry-runs, bad config fails at once with one clear message,
and the smoke target (tiny scale) runs end to end on this machine."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.report import SMOKE_REPORT, build_report, check_report, report_categories
from tests.test_glide_workflow import check_tiny_outputs as check_glide_tiny_outputs

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=REPO, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def targets():
    """Rules that are targets: no output of their own (all, smoke, eval_*)."""
    r = snakemake("--list-target-rules")
    assert r.returncode == 0, r.stderr
    return [t.strip() for t in r.stdout.splitlines() if t.strip()]


def test_target_rules_exist():
    assert {"all", "smoke"} <= set(targets())


@pytest.mark.parametrize("profile", [[], ["--profile", "slurm"]], ids=["local", "slurm-profile"])
def test_every_target_dry_runs(profile):
    for target in targets():
        r = snakemake("-n", *profile, target)
        assert r.returncode == 0, f"{target}: {r.stderr[-2000:]}"


@pytest.mark.parametrize("override, message", [
    ("scale=huge", "key 'scale': 'huge' is not allowed; expected one of ['tiny', 'toy', 'paper']"),
    ("scael=tiny", "unknown key 'scael'; allowed keys: scale, launcher"),
    ("local_threads=abc", "key 'local_threads': 'abc' is not of type integer"),
    ("slurm_extra=qos high", "key 'slurm_extra': 'qos high' is not valid; expected comma-separated"),
])
def test_bad_config_fails_at_once_naming_the_key(override, message):
    r = snakemake("-n", "--config", override)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "invalid workflow config" in out and message in out, out[-1500:]


# CI brings up SLURM and runs this same chain through the SLURM profile (test_slurm_workflow.py), which checks the
# same outputs with check_smoke_outputs: running the ~60 tiny jobs twice would cost CI several minutes.
@pytest.mark.skipif(os.environ.get("REQUIRE_SLURM") == "1",
                    reason="CI runs the smoke chain through the SLURM profile instead (test_slurm_workflow.py)")
def test_smoke_runs_end_to_end(tmp_path):
    """Runs in a copy of the workflow so the repository's own results/ is untouched."""
    work = tmp_path / "wf"
    work.mkdir()
    r = snakemake("--cores", "2", "smoke", "--directory", str(work), "--snakefile", str(REPO / "Snakefile"),
                  timeout=1500)
    assert r.returncode == 0, r.stderr[-4000:]
    check_smoke_outputs(work, "--cores", "2", "smoke", "--snakefile", str(REPO / "Snakefile"))


def check_smoke_outputs(work, *rerun_args):
    """What a finished smoke run must have left in `work`; a dry rerun with `rerun_args` has nothing to do."""
    table = (work / "results/tiny/tables/digits.md").read_text()
    assert "tiny" in table.lower()
    rows = list(csv.DictReader((work / "results/tiny/tables/digits.csv").open()))
    assert rows, "the table has no rows"
    metrics = json.loads((work / "results/tiny/metrics/digits/real_test_vs_train.json").read_text())
    names = {m["metric"] for m in metrics["metrics"]}
    assert any(n.startswith("fd") for n in names) and any("accuracy" in n for n in names)
    assert (work / "results/tiny/digits_features/config.yaml").is_file()
    check_glide_tiny_outputs(work)  # GLIDE's CLIP guidance, inpainting and upscale.py steps
    # its HTML report lists every project's tables, grids and provenance (tests/helpers/report.py)
    check_report(report_categories(build_report(work, "smoke")), SMOKE_REPORT)
    # a second run has nothing to do
    again = snakemake(*rerun_args, "-n", "--directory", str(work))
    assert "Nothing to be done" in again.stdout + again.stderr, (again.stdout + again.stderr)[-3000:]


def test_slurm_profile_keeps_its_settings_when_user_adds_config():
    """A `--config` on the command line must add to the profile's launcher/scale, not silently replace them."""
    r = snakemake("--profile", "slurm", "-n", "-p", "smoke", "--config", "slurm_partition=gpu", "slurm_account=lab")
    assert r.returncode == 0, r.stderr[-2000:]
    launches = [line for line in r.stdout.splitlines() if "-m shared.launch" in line]
    assert launches and all("--backend slurm" in line and "--partition gpu" in line and "--account lab" in line
                            for line in launches)
    r = snakemake("--profile", "slurm", "-n", "all")
    assert "results/paper/" in r.stdout


def test_paper_eval_sd15_chain_starts_from_the_downloads():
    """At paper scale eval_sd15 samples DMD2's released SD1.5 1-step UNet on COCO-30k prompts and evaluates at
    256 px against the COCO-30k reference images, beside the paper's FID 8.35."""
    r = snakemake("-n", "-p", "eval_sd15", "--config", "scale=paper")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    for needed in ("downloads/dmd2/coco30k/prompts.txt", "downloads/dmd2/dmd2_sd15_1step/download.json",
                   "downloads/sd15/model_index.json", "results/paper/tables/dmd2_sd15.md",
                   "num_images=30000 num_step=1 conditioning_timestep=999", "resolution=256",
                   "{dmd2_sd15_1step: {fid: 8.35}}"):
        assert needed in out, needed


def _rule_blocks(text):
    """(name, block text) of every rule in a rule file (`rule name:` and `rule:` + `name:` forms)."""
    import re

    starts = [m.start() for m in re.finditer(r"^ *rule\b[^\n]*:", text, flags=re.M)] + [len(text)]
    for a, b in zip(starts, starts[1:]):
        block = text[a:b]
        head = re.match(r" *rule (\w+):", block)
        name = head.group(1) if head else re.search(r"name:\s*\n\s*(.+)", block).group(1).strip()
        yield name, block


def test_every_rule_with_outputs_has_a_log_file():
    import re

    missing = []
    for path in sorted((REPO / "workflow/rules").glob("*.smk")):
        for name, block in _rule_blocks(path.read_text()):
            if re.search(r"^ +output:", block, flags=re.M) and not re.search(r"^ +log:", block, flags=re.M):
                missing.append(f"{path.name}:{name}")
    assert not missing, f"rules without log: {missing}"


def test_rule_logs_hold_the_step_output_and_keep_its_exit_code(tmp_path):
    """launch()/step() tee a step's output into the rule's log; pipefail keeps the step's exit code (75 =
    preempted and saved)."""
    (tmp_path / "Snakefile").write_text(
        f'include: "{REPO}/workflow/rules/common.smk"\n'
        'rule ok:\n    output: "ok.txt"\n    log: "logs/ok.log"\n'
        '    shell: "echo hello > {output}; echo to-the-log" + LOG\n'
        'rule stopped:\n    output: "stopped.txt"\n    log: "logs/stopped.log"\n'
        '    shell: "(echo saving; exit 75)" + LOG\n')
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    r = snakemake("ok.txt", "--cores", "1", "--configfile", str(tmp_path / "config.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "logs/ok.log").read_text() == "to-the-log\n"
    r = snakemake("stopped.txt", "--cores", "1", "--configfile", str(tmp_path / "config.yaml"), cwd=tmp_path)
    assert r.returncode != 0 and "exit status 75" in r.stdout + r.stderr
    assert (tmp_path / "logs/stopped.log").read_text() == "saving\n"
