"""The tiny-scale example commands in the step scripts' docstrings run as documented (issue 17.9).

Every `python ...` line with `scale=tiny` in the module docstring of the scripts below is run, in the order of
CHAIN (later examples read what earlier ones wrote), from an empty working folder, with exactly the options shown;
each runs in this process through the same parse as the command line (`shared.config.parse_argv`). A new tiny
example in one of these docstrings is picked up by itself; a script with tiny examples that is not in CHAIN or
SKIPPED fails `test_every_tiny_example_is_covered`.
"""
from __future__ import annotations

import ast
import importlib
import shlex
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from shared.config import parse_argv

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

CHAIN = [  # producers before consumers
    "projects/sd_flux_lab/train_sd.py",  # digits -> sd_flux_lab folders -> a tiny SDXL fine-tune
    "shared/toy/digits_formats.py",
    "projects/sd_flux_lab/flux.py",
    "projects/sd_flux_lab/train_flux.py",
    "projects/sd_flux_lab/base.py",
    "projects/sd_flux_lab/generate.py",
]
SKIPPED = {  # tiny examples not run here, and why
    "projects/sd_flux_lab/web.py": "starts a web server (tests/test_sd_flux_lab_web.py drives it)",
    "projects/sd_flux_lab/categorize.py": "needs the user's own photo folder (tests/test_sd_flux_lab_categorize.py)",
    "shared/train/example.py": "sleeps 0.2 s a step to be killed by hand (tests/test_train_kill.py runs it)",
    "shared/toy/train_diffusion.py": "being ported to shared.train.Trainer (issue 16.2)",
    "projects/titok_rar/generator_tokens.py": "new project, being written",
    "projects/glide_finetune/train_clip.py": "needs a digits folder and a trained toy tokenizer at its placeholder "
                                             "paths (tests/test_glide_clip.py runs the tiny preset)",
}


def tiny_examples(script: str) -> list[list[str]]:
    """argv lists (`python` dropped) of the docstring's example lines that say scale=tiny."""
    doc = ast.get_docstring(ast.parse((REPO / script).read_text())) or ""
    lines, out = doc.splitlines(), []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        if line.startswith("python ") and "scale=tiny" in line:
            out.append(shlex.split(line, comments=True)[1:])
    return out


def _module(argv: list[str]) -> tuple[str, list[str]]:
    if argv[0] == "-m":
        return argv[1], argv[2:]
    return argv[0].removesuffix(".py").replace("/", "."), argv[1:]


def test_every_tiny_example_is_covered():
    scripts = sorted(p.relative_to(REPO).as_posix() for p in [*REPO.glob("projects/**/*.py"),
                                                               *REPO.glob("shared/**/*.py")])
    with_tiny = {s for s in scripts if tiny_examples(s)}
    assert with_tiny - set(CHAIN) - set(SKIPPED) == set()
    assert all(tiny_examples(s) for s in CHAIN)


@pytest.mark.slow  # ~20 s on 2 quiet cores: nine tiny steps, one diffusers import
def test_tiny_examples_run_as_documented(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ran = []
    for script in CHAIN:
        for argv in tiny_examples(script):
            module, args = _module(argv)
            try:
                importlib.import_module(module).main(parse_argv(args))
            except Exception as e:  # name the documented command that failed
                raise AssertionError(f"{script}: `python {shlex.join(argv)}` failed: {type(e).__name__}: {e}") from e
            finally:
                AcceleratorState._reset_state(True)
                torch.set_num_threads(1)
            ran.append(module)
    assert ran.count("projects.sd_flux_lab.train_sd") == 1 and "projects.sd_flux_lab.generate" in ran
    assert (tmp_path / "data/tiny/sd_flux_lab/train").is_dir()
    assert list((tmp_path / "results/tiny/sd_flux_lab/generate").glob("*.png"))  # generate.py wrote an image


# ---- README commands -------------------------------------------------------------------------------------------
# Every command line in a fenced block of README.md and projects/*/README.md is classified below; a new or changed
# one fails test_every_readme_command_is_classified until it is. RUN: run as written, in this order, in an empty
# working folder (in process, through the command line's parse). DRY_RUN: snakemake commands, checked with `-n`
# (the target, profile and --config keys resolve to a DAG); running them is the workflow's own tests' job
# (tests/test_workflow*.py) or takes minutes to hours. README_SKIPPED: not run, and why.
READMES = ["README.md", "projects/dmd2/README.md", "projects/glide_finetune/README.md",
           "projects/sd_flux_lab/README.md", "projects/titok_rar/README.md"]
_STARTS = ("python ", ".venv/bin/python ", "snakemake ", ".venv/bin/snakemake ", "bash ")

RUN = [  # producers first
    ".venv/bin/python shared/toy/prepare.py scale=toy out_dir=data/toy/digits",
    ".venv/bin/python -m shared.toy.train_features --help",
    "python projects/dmd2/prepare.py kind=edm images=data/toy/digits/train eval_images=data/toy/digits/test "
    "out_dir=data/toy/dmd2/digits",
    # needs data/toy/sd_flux_lab, which projects/sd_flux_lab/prepare.py (no options) writes first
    ".venv/bin/python projects/sd_flux_lab/train_sd.py --list data_dir=data/toy/sd_flux_lab/train/_blue",
]
DRY_RUN = {
    ".venv/bin/snakemake --cores 2", ".venv/bin/snakemake --cores 2 smoke", ".venv/bin/snakemake --cores 2 toy",
    ".venv/bin/snakemake --cores 2 --config scale=tiny", ".venv/bin/snakemake --cores 2 leaderboard",
    ".venv/bin/snakemake --cores 2 eval_sdxl", ".venv/bin/snakemake --list-target-rules",
    "snakemake --profile slurm eval_sdxl",
    "snakemake --profile slurm eval_sdxl --config scale=tiny slurm_partition=debug",
    "snakemake --profile slurm smoke --config slurm_partition=debug slurm_account=myproj",
    "snakemake --cores 2 eval_imagenet64 eval_sdxl eval_sd15", "snakemake --cores 2 eval_sdxl --config scale=tiny",
    "snakemake --profile slurm eval_sd15", "snakemake --profile slurm eval_imagenet64",
    ".venv/bin/snakemake --cores 2 glide --config scale=tiny", ".venv/bin/snakemake --cores 2 glide",
    ".venv/bin/snakemake --profile slurm glide",
    ".venv/bin/snakemake --cores 2 glide_downloads",
    ".venv/bin/snakemake --cores 2 sd_flux_lab",
    ".venv/bin/snakemake --profile slurm results/paper/sd_flux_lab/base_sdxl/pipeline/model_index.json",
    "snakemake --cores 2 titok --config scale=tiny", "snakemake --cores 2 titok", "snakemake --profile slurm titok",
    "snakemake --profile slurm eval_maskgen",
}
_TOY_RUN = "a toy training run (minutes to hours); its tiny counterpart runs in the workflow tests"
README_SKIPPED = {
    "python projects/glide_finetune/train.py init=released inpaint=true data_dir=pics run_dir=runs/inpaint":
        "the released base-inpaint weights and the user's photos (tests/test_glide_inpaint.py trains a tiny one)",
    "python projects/glide_finetune/sample.py base=runs/inpaint inpaint_images=photos inpaint_mask=center "
    "sampler=glide steps=100 out_dir=inpainted": "needs the inpainting run above and the user's photos "
                                                  "(tests/test_glide_inpaint.py samples a tiny one)",
    "python projects/glide_finetune/upscale.py in_dir=out out_dir=out_x4 factor=4 "
    "weights=downloads/glide/swinir_classical_x4/001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth":
        "the released SwinIR weights (tests/test_glide_swinir.py; tests/test_glide_download.py feeds a downloaded "
        "stand-in to upscale.py)",
    "python projects/glide_finetune/download.py item=swinir_classical_x4 out_dir=downloads/glide/swinir_classical_x4":
        "downloads from SwinIR's GitHub release (tests/test_glide_download.py fetches a stand-in through mirror=)",
    "bash setup.sh && .venv/bin/snakemake --cores 2": "setup.sh installs the environment; the snakemake part is "
                                                      "dry-run as `.venv/bin/snakemake --cores 2`",
    "bash setup.sh && .venv/bin/python -m pytest": "the test suite itself (CI runs it: .ci/run)",
    ".venv/bin/python -m pytest tests/test_glide_*.py": "the glide tests themselves",
    ".venv/bin/snakemake -n <target>": "a placeholder target",
    ".venv/bin/snakemake --cores 2 --directory /scratch/run1": "runs the default target in another folder (toy scale)",
    ".venv/bin/snakemake --report report.html": "needs the default target's results (toy scale)",
    ".venv/bin/snakemake --report report.html eval_sdxl --config scale=tiny": "needs that target's results "
                                                                             "(the report test runs the tiny chain)",
    ".venv/bin/snakemake --cores 2 --no-hooks": "runs the default target (toy scale)",
    ".venv/bin/python shared/toy/train_features.py my.yaml epochs=20 out_dir=runs/feat":
        "my.yaml is the user's own file; " + _TOY_RUN,
    ".venv/bin/python -m shared.launch --backend slurm --gpus-per-node 8 --nodes 2 -- python projects/x/train.py":
        "submits to a 2-node GPU cluster; projects/x is a placeholder (tests/test_launch*.py cover the launcher)",
    "python projects/dmd2/train_teacher.py data=data/toy/dmd2/digits/real.lmdb run_dir=results/toy/dmd2/teacher "
    "threads=1": _TOY_RUN,
    "python projects/dmd2/train.py recipe=digits_1step_gan teacher=results/toy/dmd2/teacher "
    "data=data/toy/dmd2/digits/real.lmdb run_dir=results/toy/dmd2/runs/digits_1step_gan": _TOY_RUN,
    "python projects/dmd2/sample.py checkpoint=results/toy/dmd2/runs/digits_1step_gan "
    "prompts=data/toy/dmd2/digits/eval_prompts.txt out_dir=results/toy/dmd2/samples/digits_1step_gan":
        "needs the toy DMD2 run above",
    "python projects/dmd2/demo.py checkpoint=<run or released .bin> teacher=<pipeline> num_step=4 "
    "prompt='[a photo of a cat]'": "placeholders for the user's checkpoint and pipeline",
    'python projects/glide_finetune/sample.py base=released upsampler=released prompt="an oil painting of a corgi" '
    "num_images=8 scale=paper out_dir=out": "the released GLIDE weights (download step, paper data)",
    'python projects/glide_finetune/compare_samplers.py --model RUN --prompt "a red handwritten seven" --steps 50 '
    "--guidance-scale 3.0 --output-dir out": "RUN is a placeholder for a trained run",
    "python projects/glide_finetune/download.py item=base out_dir=downloads/glide/base": "downloads from the "
                                                                                          "model hub",
    ".venv/bin/python projects/sd_flux_lab/train_sd.py base=downloads/sd15 data_dir=pics run_dir=runs/ft "
    "resolution=512 mixed_precision=bf16 ema_decay=0.9999 snr_gamma=5 buckets=true": "the downloaded SD1.5 and "
                                                                                     "the user's photos, at 512 px",
    ".venv/bin/python -m projects.sd_flux_lab.convert pipeline=runs/ft out=ft.safetensors half=true":
        "needs the fine-tune above (tests/test_sd_flux_lab_convert.py converts a tiny one)",
    ".venv/bin/python -m projects.sd_flux_lab.make_samples pipeline=runs/ft prompts='[a red cat,a blue dog]' "
    "seeds=[0,1,2]": "needs the fine-tune above",
}


def readme_commands(path: Path) -> list[str]:
    """The command lines (continuations joined, trailing comments dropped) in the fenced blocks of `path`."""
    out, fenced, lines, i = [], False, path.read_text().splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if line.startswith("```"):
            fenced = not fenced
            continue
        while fenced and line.endswith("\\") and i < len(lines):
            line = line[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        if fenced and line.startswith(_STARTS):
            out.append(" ".join(shlex.split(line, comments=True)))
    return out


def _normal(cmd: str) -> str:
    """Compare commands by their words, not by quoting or spacing."""
    return " ".join(shlex.split(cmd))


def test_every_readme_command_is_classified():
    found = {_normal(c) for r in READMES for c in readme_commands(REPO / r)}
    known = {_normal(c) for c in [*RUN, *DRY_RUN, *README_SKIPPED]}
    assert found - known == set(), "README commands neither run, dry-run nor skipped with a reason here"
    assert known - found == set(), "classified commands that no README shows any more"


@pytest.mark.slow  # ~35 s on 2 quiet cores: two data preparations, one training listing, snakemake dry runs
def test_readme_commands_run(tmp_path, monkeypatch, capsys):
    import os
    import runpy
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    for cmd in RUN:  # each through its script's own command line (cli: the schema's flags, aliases, --help)
        argv = shlex.split(cmd)[1:]
        module, args = _module(argv)
        if module == "projects.sd_flux_lab.train_sd":
            importlib.import_module("projects.sd_flux_lab.prepare").main({})
            capsys.readouterr()
        monkeypatch.setattr(sys, "argv", [argv[0] if argv[0] != "-m" else module, *args])
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=False)
        except SystemExit as e:
            assert e.code in (0, None), f"`{cmd}` exited with {e.code}"
        except Exception as e:  # name the documented command that failed
            raise AssertionError(f"`{cmd}` failed: {type(e).__name__}: {e}") from e
        finally:
            AcceleratorState._reset_state(True)
            torch.set_num_threads(1)
        out = capsys.readouterr().out
        if "--help" in args:
            assert "usage: " in out and "epochs=" in out, out[:500]
        if module == "projects.sd_flux_lab.train_sd":  # the listing of the blue subset, nothing to skip
            assert "175 images under data/toy/sd_flux_lab/train/_blue" in out and "none skipped" in out, out[-800:]
    assert (tmp_path / "data/toy/digits/train").is_dir() and (tmp_path / "data/toy/dmd2/digits/real.lmdb").exists()
    # snakemake: one dry run per (profile, --config) group, with all of that group's targets
    groups: dict[tuple, list[str]] = {}
    for cmd in DRY_RUN:
        args = shlex.split(cmd)[1:]
        if args == ["--list-target-rules"]:
            groups.setdefault(("--list-target-rules",), [])
            continue
        opts, targets, config, j = [], [], [], 0
        while j < len(args):
            if args[j] in ("--cores", "--profile"):
                opts += args[j:j + 2]
                j += 2
            elif args[j] == "--config":
                j += 1
                while j < len(args) and not args[j].startswith("-"):
                    config.append(args[j])
                    j += 1
            else:
                targets.append(args[j])
                j += 1
        key = tuple(["--profile", "slurm"] if "--profile" in opts else ["--cores", "2"]) + \
            ((("--config",) + tuple(sorted(config))) if config else ())
        groups.setdefault(key, []).extend(targets or ["all"])
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    procs = []  # started together: the dry runs are independent (two cores halve the wait)
    for key, targets in sorted(groups.items()):
        argv = [snakemake, *key[:2], "-n", *sorted(set(targets)), *key[2:]] if key[0] != "--list-target-rules" \
            else [snakemake, "--list-target-rules"]
        procs.append((argv, subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})))
    for argv, proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"`{shlex.join(argv)}`: {err[-2000:]}"
    assert len(procs) == 6  # default-profile toy and tiny, slurm paper and two tiny/debug variants, target list
