"""Every step script runs directly and as a module, has --help, and exposes main(cfg)."""
import ast
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
    assert {"shared/digits/prepare.py", "shared/digits/train_features.py"} <= names


@pytest.mark.parametrize("script", step_scripts(), ids=lambda p: p.as_posix())
def test_help_as_file_and_module(script):
    tree = ast.parse((REPO / script).read_text())
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains and len(mains[0].args.args) == 1, f"{script}: needs main(cfg)"
    as_file = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
    assert as_file.returncode == 0, as_file.stderr
    assert "usage:" in as_file.stdout and "options (key=value):" in as_file.stdout
    module = ".".join(script.with_suffix("").parts)
    as_module = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                               timeout=120)
    assert as_module.returncode == 0, as_module.stderr
    assert as_module.stdout.splitlines()[2:] == as_file.stdout.splitlines()[2:]
