"""Training curves in the report: every training job of the workflow declares its run's curves.png + curves.csv
(shared.train.Trainer.finish draws them for every run; workflow/rules/common.smk `curves(...)` puts them under the
project's Training), and a tiny run's 2-3 rows are drawn as a curve: markers, labelled axes, a log loss axis when
the loss spans a decade."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared import plots

REPO = Path(__file__).resolve().parents[1]
# Where a training script is told its run folder.
RUN_DIR_OPTIONS = ("run_dir", "experiment.output_dir", "out_dir")


def _jobs(dry_run: str):
    """(rule, outputs, shell command) of every job in `snakemake -n -p` output."""
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", dry_run):
        rule = re.search(r"^(?:local)?rule (\w+):", block, flags=re.M)
        outputs = re.search(r"^    output: (.+)$", block, flags=re.M)
        shell = re.search(r"^Shell command: (.+)$", block, flags=re.M)
        if rule and outputs and shell:
            yield rule.group(1), outputs.group(1).split(", "), shell.group(1)


def _trainer_script(shell: str) -> Path | None:
    """The step script a job runs, if it trains with shared.train.Trainer."""
    scripts = re.findall(r" (\S+\.py) ", shell.split(" -- ", 1)[-1] + " ")
    for s in scripts:
        path = Path(s) if Path(s).is_absolute() else REPO / s
        if path.is_file() and re.search(r"\bTrainer\(", path.read_text()):  # not tokenizers' BpeTrainer(
            return path
    return None


def test_every_training_job_of_the_toy_chain_declares_its_curves(tmp_path):
    # --directory: an empty results/, so every job is planned whatever the checkout has already run
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "2", "--directory", str(tmp_path),
                        "toy"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    checked = set()
    for rule, outputs, shell in _jobs(r.stdout):
        script = _trainer_script(shell)
        if script is None:
            continue
        run_dir = next((m.group(1) for opt in RUN_DIR_OPTIONS
                        if (m := re.search(rf"\s{re.escape(opt)}=(\S+)", shell))), None)
        assert run_dir, f"{rule}: no {'/'.join(RUN_DIR_OPTIONS)}= in {shell}"
        for name in ("curves.png", "curves.csv"):
            assert f"{run_dir}/{name}" in outputs, f"{rule} ({script.name}): {run_dir}/{name} not among {outputs}"
        checked.add(rule)
    assert {"train_digits_diffusion", "dmd2_teacher", "dmd2_train", "dmd2_train_seed", "sd_flux_lab_vae",
            "sd_flux_lab_train_base", "sd_flux_lab_finetune", "glide_train", "glide_train_clip", "titok_train_vqgan",
            "titok_train_stage1", "titok_train_stage2", "titok_train_single", "titok_train_tatitok",
            "titok_rar_gen_train"} <= checked, checked


def _drawn(monkeypatch, rows: list[dict], tmp_path: Path):
    """training_curves over `rows`; returns the figure it drew (kept from shared.plots._save) and the CSV rows."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = {}
    save = plots._save

    def keep(fig, *args):
        kept["fig"] = fig
        return save(fig, *args)

    monkeypatch.setattr(plots, "_save", keep)
    out = plots.training_curves(run / "metrics.jsonl", tmp_path / "curves.png", title="tiny")
    assert out.stat().st_size > 1000
    return kept["fig"], (tmp_path / "curves.csv").read_text().splitlines()


def test_a_three_row_run_is_drawn_with_markers_labels_and_a_log_loss_axis(monkeypatch, tmp_path):
    rows = [{"step": s, "loss": loss, "lr": 1e-3, "grad_norm": g, "steps_per_sec": 2.0, "time": 1.0 + s}
            for s, loss, g in ((1, 2.0, 0.9), (2, 0.3, 0.5), (3, 0.02, 0.4))]
    fig, csv_lines = _drawn(monkeypatch, rows, tmp_path)
    panels = {ax.get_ylabel(): ax for ax in fig.axes if ax.get_visible()}
    loss = panels["training loss (lower is better)"]
    assert loss.get_yscale() == "log" and loss.get_xlabel() == "optimizer step"  # 2.0 -> 0.02: two decades
    (line,) = loss.get_lines()
    assert line.get_marker() == "o" and list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == [2.0, 0.3,
                                                                                                            0.02]
    assert panels["gradient norm (before clipping)"].get_yscale() == "linear"
    assert csv_lines[0] == "run,key,step,value" and "run,loss,3,0.02" in csv_lines
    assert not any(",lr," in c for c in csv_lines)  # constant: not a curve


def test_a_loss_within_a_decade_stays_linear_and_one_row_still_draws(monkeypatch, tmp_path):
    rows = [{"step": s, "loss": v, "steps_per_sec": 1.0} for s, v in ((1, 1.0), (2, 0.5))]
    fig, _ = _drawn(monkeypatch, rows, tmp_path)
    assert [ax.get_yscale() for ax in fig.axes if ax.get_visible()][0] == "linear"
    fig, csv_lines = _drawn(monkeypatch, [{"step": 1, "loss_dm": 0.7, "loss_gan": 0.2}], tmp_path)
    assert sorted(csv_lines[1:]) == ["run,loss_dm,1,0.7", "run,loss_gan,1,0.2"]  # logged once, still drawn
    with pytest.raises(ValueError, match="no numeric metrics"):
        _drawn(monkeypatch, [{"step": 1, "stage": "stage1"}], tmp_path)


def test_the_digits_feature_cnn_logs_its_training_and_draws_it(tmp_path, digits_tiny):
    """shared/toy/train_features.py trains without shared.train.Trainer, so it logs and draws by itself."""
    from shared.toy import train_features

    train_features.main({"scale": "tiny", "data_dir": str(digits_tiny), "out_dir": str(tmp_path / "f")})
    logged = [json.loads(line) for line in (tmp_path / "f/metrics.jsonl").read_text().splitlines()]
    drawn = [line.split(",") for line in (tmp_path / "f/curves.csv").read_text().splitlines()[1:]]
    assert [(int(s), float(v)) for _, k, s, v in drawn if k == "loss"] == [(r["step"], r["loss"]) for r in logged]
    assert len(logged) >= 2 and (tmp_path / "f/curves.png").stat().st_size > 1000
