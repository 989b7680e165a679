"""Step configuration for every project script.

A step script declares its options as a dataclass (`Config`) and, optionally, per-scale presets
(`PRESETS = {"tiny": {...}, "toy": {...}, "paper": {...}}`). Values are resolved in this order:

    dataclass defaults < PRESETS[scale] < YAML files (in order) < key=value overrides

and type-checked by OmegaConf, so `epochs=abc` or an unknown key fails at once, naming the key.
The resolved config is written next to the step's outputs (`save_resolved`).

    def main(cfg=None):
        cfg = resolve(Config, cfg, PRESETS)
        ...

    if __name__ == "__main__":
        cli(main, Config, PRESETS, __doc__)
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from shared.io import write_json, write_text

SCALES = ("tiny", "toy", "paper")


class ConfigError(ValueError):
    """A bad key or value; the message names it and says what is expected."""


def _known_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items_ex(resolve=False) if hasattr(node, "items_ex") else node.items():
        name = f"{prefix}{k}"
        keys.extend(_known_keys(v, name + ".") if isinstance(v, DictConfig) else [name])
    return keys


def _merge(base: DictConfig, layer: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e)
        allowed = ", ".join(_known_keys(base))
        raise ConfigError(f"{source}: unknown key '{key}'. Allowed keys: {allowed}") from None
    except ValidationError as e:
        key = getattr(e, "full_key", "?")
        raise ConfigError(f"{source}: bad value for '{key}': {e.msg if hasattr(e, 'msg') else e}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {e}") from None


def resolve(schema: type, cfg: Mapping | DictConfig | None = None,
            presets: Mapping[str, Mapping] | None = None, source: str = "config") -> DictConfig:
    """Return the fully resolved, type-checked config for a step."""
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    user = OmegaConf.create(dict(cfg) if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig) else (cfg or {}))
    if presets:
        scale = user.get("scale", base.get("scale"))
        if scale not in presets:
            raise ConfigError(f"{source}: bad value for 'scale': {scale!r}; allowed: {', '.join(presets)}")
        base = _merge(base, presets[scale], f"preset '{scale}'")
    return _merge(base, user, source)


def _str_fields(schema: type | None) -> set[str]:
    if schema is None or not dataclasses.is_dataclass(schema):
        return set()
    return {f.name for f in dataclasses.fields(schema) if f.type in (str, "str")}


def parse_argv(argv: Sequence[str], schema: type | None = None) -> DictConfig:
    """`[file.yaml ...] [key=value ...]` -> one DictConfig (unvalidated).

    Values are YAML (`lr=1e-4`, `sizes=[1,2]`), except for the schema's `str` options, which keep the text
    as typed: `title=Ablation: no GAN` is a title, not a mapping.
    """
    layers = []
    raw_text = _str_fields(schema)
    for arg in argv:
        key, _, value = arg.partition("=")
        if "=" in arg and key in raw_text:
            layers.append(OmegaConf.create({key: value}))
        elif "=" in arg:
            try:
                layers.append(OmegaConf.from_dotlist([arg]))
            except OmegaConfBaseException as e:
                raise ConfigError(f"command line: cannot parse override '{arg}': {e}") from None
        else:
            path = Path(arg)
            if not path.is_file():
                raise ConfigError(f"{arg}: no such config file (expected a YAML file or key=value)")
            try:
                loaded = OmegaConf.load(path)
            except Exception as e:  # yaml errors carry line numbers; keep them
                raise ConfigError(f"{arg}: not valid YAML: {e}") from None
            if not isinstance(loaded, DictConfig):
                raise ConfigError(f"{arg}: expected a mapping of key: value at the top level")
            layers.append(loaded)
    return OmegaConf.merge(*layers) if layers else OmegaConf.create({})


_PROVENANCE_ENV = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
                   "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
_PROVENANCE_PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "accelerate")


def provenance() -> dict:
    """Where and with what a step ran: enough to tell two runs' numbers apart later."""
    import datetime
    import platform
    import subprocess
    from importlib import metadata

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {}
    for pkg in _PROVENANCE_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "argv": sys.argv, "git_commit": commit, "python": platform.python_version(),
        "packages": versions, "env": {k: os.environ[k] for k in _PROVENANCE_ENV if k in os.environ},
    }


def save_resolved(cfg: DictConfig, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config next to a step's outputs (atomically), with run.json (provenance) beside it."""
    out_dir = Path(out_dir)
    write_json(out_dir / (Path(name).stem + ".run.json" if name != "config.yaml" else "run.json"), provenance())
    return write_text(out_dir / name, OmegaConf.to_yaml(cfg, resolve=True))


def describe(schema: type, presets: Mapping[str, Mapping] | None) -> str:
    lines = ["options (key=value):"]
    for f in dataclasses.fields(schema):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "???")
        typ = getattr(f.type, "__name__", str(f.type))
        help_ = f.metadata.get("help", "")
        lines.append(f"  {f.name:<24} {typ:<12} default={default!r}" + (f"  # {help_}" if help_ else ""))
    if presets:
        lines.append("scale presets (scale=NAME sets these before your files and overrides):")
        for name, values in presets.items():
            lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def cli(main: Callable[[DictConfig], Any], schema: type, presets: Mapping[str, Mapping] | None = None,
        doc: str | None = None, argv: Sequence[str] | None = None) -> Any:
    """Command-line entry: `script.py [config.yaml ...] [key=value ...]`, or `--help`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        prog = Path(sys.argv[0]).name
        print(f"usage: {prog} [config.yaml ...] [key=value ...]\n")
        if doc:
            print(doc.strip() + "\n")
        print(describe(schema, presets))
        return None
    try:
        cfg = resolve(schema, parse_argv(argv, schema), presets, source="command line")
        return main(cfg)
    except ConfigError as e:  # bad input (also found inside main): one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
