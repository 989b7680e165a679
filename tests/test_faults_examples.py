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
    "shared/data/digits_formats.py",
    "projects/sd_flux_lab/flux.py",
    "projects/sd_flux_lab/train_flux.py",
    "projects/sd_flux_lab/base.py",
    "projects/sd_flux_lab/generate.py",
]
SKIPPED = {  # tiny examples not run here, and why
    "projects/sd_flux_lab/web.py": "starts a web server (tests/test_sd_flux_lab_web.py drives it)",
    "projects/sd_flux_lab/categorize.py": "needs the user's own photo folder (tests/test_sd_flux_lab_categorize.py)",
    "shared/train/example.py": "sleeps 0.2 s a step to be killed by hand (tests/test_train_kill.py runs it)",
    "shared/digits/train_diffusion.py": "being ported to shared.train.Trainer (issue 16.2)",
    "projects/titok_rar/generator_tokens.py": "new project, being written",
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
