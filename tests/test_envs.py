"""envs/*.yml (conda environments for --sdm conda) agree with pyproject.toml's pins."""
import subprocess
import sys
import tomllib

import yaml


def test_env_files_match_pyproject(repo_root):
    result = subprocess.run([sys.executable, "envs/sync.py", "--check"], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    pins = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert all("==" in p for p in pins), "every dependency must be pinned exactly"
    for name in ["shared", "glide_finetune", "dmd2", "titok_rar", "sd_flux_lab"]:
        env = yaml.safe_load((repo_root / "envs" / f"{name}.yml").read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        assert [p for p in pip if not p.startswith("-e")] == pins


def test_installed_versions_are_the_pins(repo_root):
    from importlib import metadata

    pins = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in pins:
        name, version = pin.split("==")
        assert metadata.version(name) == version, f"{name}: installed {metadata.version(name)}, pinned {version}"
