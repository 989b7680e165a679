"""Every step script runs directly and as a module, has --help, and exposes main(cfg)."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _calls_cli_under_main_guard(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
            return any(ast.unparse(c.func).endswith("cli") for c in calls)
    return False


def step_scripts():
    """Scripts whose entry point is shared.config.cli(main, ...) under `if __name__ == "__main__":`."""
    paths = sorted([*REPO.glob("shared/**/*.py"), *REPO.glob("projects/**/*.py")])
    return [p.relative_to(REPO) for p in paths if _calls_cli_under_main_guard(ast.parse(p.read_text()))]


def test_there_are_step_scripts():
    names = {p.as_posix() for p in step_scripts()}
    assert {"shared/toy/prepare.py", "shared/toy/train_features.py"} <= names


@pytest.fixture(scope="module")
def help_outputs():
    """--help of every step script, as file and as module, from one interpreter (imports paid once)."""
    scripts = [p.as_posix() for p in step_scripts()]
    r = subprocess.run([sys.executable, str(REPO / "tests/helpers/run_help.py"), str(REPO), *scripts], cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return {d["script"]: d for d in map(json.loads, r.stdout.splitlines())}


@pytest.mark.parametrize("script", step_scripts(), ids=lambda p: p.as_posix())
def test_help_as_file_and_module(script, help_outputs):
    tree = ast.parse((REPO / script).read_text())
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains and len(mains[0].args.args) == 1, f"{script}: needs main(cfg)"
    out = help_outputs[script.as_posix()]
    assert out["file_code"] == 0, out["file_out"]
    assert "usage:" in out["file_out"] and "options (key=value):" in out["file_out"]
    assert out["module_code"] == 0, out["module_out"]
    assert out["module_out"].splitlines()[2:] == out["file_out"].splitlines()[2:]


@pytest.mark.parametrize("form", ["file", "module"])
def test_a_step_script_really_runs_both_ways(form):
    """One genuine subprocess of each form, so the in-process emulation above cannot hide a path problem."""
    args = ["shared/toy/prepare.py"] if form == "file" else ["-m", "shared.toy.prepare"]
    r = subprocess.run([sys.executable, *args, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "options (key=value):" in r.stdout, r.stderr
