"""The workflow's wildcard names follow the projects' registries. Where a rule file cannot import a registry (its
module loads torch, which every dry run would then wait for), it keeps a copy of the names; these tests hold the
copies to the registries, and check that the experiment constants moved into config.yaml reach the commands.

    python -m pytest tests/test_workflow_registries.py -q
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "workflow" / "rules"


def rule_file_list(smk, name):
    """The literal list assigned to `name` at the top level of a rule file."""
    text = (RULES / smk).read_text()
    m = re.search(rf"^{name} = (\[.*?\])$", text, flags=re.M | re.S)
    assert m, f"{smk}: no `{name} = [...]`"
    return ast.literal_eval(m.group(1))


def test_glide_sampler_names_are_the_sampling_registry():
    from projects.glide_finetune.sampling import SAMPLERS

    assert rule_file_list("glide_finetune.smk", "GLIDE_SAMPLERS") == list(SAMPLERS)


def test_titok_single_stage_recipes_are_the_quantize_modes():
    """Rule titok_train_single's `mode` comes from configs/toy/titok_single_<mode>.yaml: one per quantizer."""
    from projects.titok_rar.titok import QUANTIZE_MODES

    modes = sorted(p.stem[len("titok_single_"):] for p in (REPO / "projects/titok_rar/configs/toy").glob(
        "titok_single_*.yaml"))
    assert modes == sorted(QUANTIZE_MODES)


def test_config_constants_reach_the_commands(tmp_path):
    """Changing a constant in config.yaml changes the planned commands (the rules read it, not a copy)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    assert cfg["sd_flux_lab_finetune"]["steps"]["tiny"] == 4
    override = tmp_path / "override.yaml"
    override.write_text("sd_flux_lab_finetune: {steps: {tiny: 7, toy: 400, paper: 2000}, lr: 2.5e-5}\n"
                        "titok_tiny_overrides: [training.max_train_steps=5]\n")
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--directory", str(tmp_path / "run"),
                        "--cores", "1", "results/tiny/sd_flux_lab/finetune_blue/pipeline/model_index.json",
                        "results/tiny/titok_rar/vqgan/final/config.json", "--configfile", str(override)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "max_steps=7 lr=2.5e-5 warmup_steps=0" in r.stdout
    assert "validation_prompts='[a blue handwritten three,a red handwritten three]'" in r.stdout  # kept
    assert "experiment.output_dir=results/tiny/titok_rar/vqgan training.max_train_steps=5" in r.stdout
