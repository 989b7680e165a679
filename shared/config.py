"""Step configuration for every project script.

A step script declares its options as a dataclass (`Config`) and, optionally, presets: per scale
(`PRESETS = {"tiny": {...}, "toy": {...}, "paper": {...}}`), or per scale and per recipe (`Presets`). Values are
resolved in this order:

    dataclass defaults < scale preset < recipe settings < recipe's per-scale settings < YAML files (in order)
        < command-line options

and type-checked by OmegaConf, so `epochs=abc` or an unknown key fails at once, naming the key and where it came
from (the YAML file or the command line). Fields may declare `choices` and `min`/`max` in their metadata
(`option(...)` writes them); those are checked when the config is resolved, before any model loads.
The resolved config is written next to the step's outputs (`save_resolved`).

Command lines take our `key=value` and GNU-style options alike: `--key value`, `--key=value`, `--flag` /
`--no-flag` for booleans, dashes for underscores (`--guidance-scale 3`). A script may also accept another tool's
option names (`aliases=`: a rename, an `Alias` that translates the value, or a `Refused` that says what to use
instead) and positional arguments (`positional=`: field names filled in order by arguments that are not YAML
files).

    def main(cfg=None):
        cfg = resolve(Config, cfg, PRESETS)
        ...

    if __name__ == "__main__":
        cli(main, Config, PRESETS, __doc__)
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from shared.io import write_json, write_text

SCALES = ("tiny", "toy", "paper")


class ConfigError(ValueError):
    """A bad key or value; the message names it and says what is expected."""


# ---- declaring options ----------------------------------------------------------------------------------------
def option(default: Any = dataclasses.MISSING, *, help: str = "", choices: Sequence | None = None,
           min: float | None = None, max: float | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text and the checks `resolve` applies: `choices` (allowed values), `min` /
    `max` (inclusive bounds). `field(metadata={"choices": ...})` means the same."""
    meta = {k: v for k, v in (("help", help), ("choices", tuple(choices) if choices is not None else None),
                              ("min", min), ("max", max)) if v not in (None, "")}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Presets:
    """Presets by scale and by a second option (a recipe): `scales[scale]`, then `variants[name]` where `name` is
    the value of option `key`. A variant is a mapping of settings, or an object with `.settings` and `.scales`
    (per-scale settings on top; `.description` shows in --help), as `projects/dmd2/recipes.Recipe`."""
    scales: Mapping[str, Mapping]
    key: str = ""
    variants: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def layers(self, scale: str, variant: str | None) -> list[tuple[str, Mapping]]:
        out = [(f"preset '{scale}'", self.scales[scale])]
        if self.key and variant is not None:
            v = self.variants[variant]
            settings = v if isinstance(v, Mapping) else getattr(v, "settings", {})
            per_scale = {} if isinstance(v, Mapping) else getattr(v, "scales", {})
            out.append((f"{self.key} '{variant}'", settings))
            if scale in per_scale:
                out.append((f"{self.key} '{variant}' at scale '{scale}'", per_scale[scale]))
        return out

    def flat(self, variant: str | None = None) -> dict[str, dict]:
        """{scale: merged settings} for one variant (what a plain PRESETS dict would be)."""
        return {s: {k: v for _, layer in self.layers(s, variant) for k, v in dict(layer).items()} for s in self.scales}


@dataclasses.dataclass(frozen=True)
class Alias:
    """Another tool's option name. `--name VALUE` sets our key `to` to `convert(VALUE)` (the text as typed), or,
    when `convert` returns a mapping, sets each of its keys. `flag=True`: takes no value (`convert` gets 'true' or
    'false')."""
    to: str = ""
    convert: Callable[[str], Any] | None = None
    flag: bool = False
    help: str = ""


@dataclasses.dataclass(frozen=True)
class Refused:
    """Another tool's option that has no meaning here: using it fails with `instead` (what to do instead)."""
    instead: str
    flag: bool = False


# ---- resolving ------------------------------------------------------------------------------------------------
def _known_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items_ex(resolve=False) if hasattr(node, "items_ex") else node.items():
        name = f"{prefix}{k}"
        keys.extend(_known_keys(v, name + ".") if isinstance(v, DictConfig) else [name])
    return keys


def _close(word: str, candidates: Sequence[str]) -> str:
    near = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f" Did you mean: {', '.join(near)}?" if near else ""


def _merge(base: DictConfig, layer: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e)
        known = _known_keys(base)
        raise ConfigError(f"{source}: unknown key '{key}'.{_close(str(key), known)} "
                          f"Allowed keys: {', '.join(known)}") from None
    except ValidationError as e:
        key = getattr(e, "full_key", "?")
        raise ConfigError(f"{source}: bad value for '{key}': {e.msg if hasattr(e, 'msg') else e}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {e}") from None


def check_values(schema: type, cfg: DictConfig, source: str = "config") -> None:
    """Apply the `choices` / `min` / `max` metadata of the schema's fields (nested dataclasses too)."""
    if not dataclasses.is_dataclass(schema):
        return
    hints = _hints(schema)
    for f in dataclasses.fields(schema):
        if f.name not in cfg:
            continue
        value = cfg[f.name]
        sub = hints.get(f.name)
        if dataclasses.is_dataclass(sub) and isinstance(value, DictConfig):
            check_values(sub, value, source)
            continue
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            allowed = ", ".join(repr(c) if c == "" else str(c) for c in meta["choices"])
            raise ConfigError(f"{source}: bad value for '{f.name}': {value!r}; allowed: {allowed}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if meta.get("min") is not None and value < meta["min"]:
                raise ConfigError(f"{source}: bad value for '{f.name}': {value!r}; must be >= {meta['min']}")
            if meta.get("max") is not None and value > meta["max"]:
                raise ConfigError(f"{source}: bad value for '{f.name}': {value!r}; must be <= {meta['max']}")


def resolve(schema: type, cfg: Mapping | DictConfig | None = None,
            presets: Mapping[str, Mapping] | Presets | None = None, source: str = "config") -> DictConfig:
    """Return the fully resolved, type-checked config for a step."""
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    user = OmegaConf.create(dict(cfg) if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig) else (cfg or {}))
    if presets:
        scales = presets.scales if isinstance(presets, Presets) else presets
        scale = user.get("scale", base.get("scale"))
        if scale not in scales:
            raise ConfigError(f"{source}: bad value for 'scale': {scale!r}; allowed: {', '.join(scales)}")
        if isinstance(presets, Presets):
            variant = None
            if presets.key:
                variant = user.get(presets.key, base.get(presets.key))
                if variant not in presets.variants:
                    raise ConfigError(f"{source}: bad value for '{presets.key}': {variant!r}; allowed: "
                                      f"{', '.join(presets.variants)}")
            for name, layer in presets.layers(scale, variant):
                base = _merge(base, layer, name)
        else:
            base = _merge(base, presets[scale], f"preset '{scale}'")
    out = _merge(base, user, source)
    check_values(schema, out, source)
    return out


# ---- command lines --------------------------------------------------------------------------------------------
def _hints(schema: type | None) -> dict[str, Any]:
    if schema is None or not dataclasses.is_dataclass(schema):
        return {}
    try:
        return typing.get_type_hints(schema)
    except Exception:  # an unresolvable annotation: fall back to what the field says
        return {f.name: f.type for f in dataclasses.fields(schema)}


def _kind(hint: Any) -> str:
    """'str' | 'bool' | 'list' | 'other' for a field's type (annotations may be strings)."""
    if hint in (str, "str"):
        return "str"
    if hint in (bool, "bool"):
        return "bool"
    origin = typing.get_origin(hint)
    if hint in (list, "list") or origin in (list, typing.List) or (isinstance(hint, str) and
                                                                   hint.lower().startswith(("list", "typing.list"))):
        return "list"
    return "other"


def _str_fields(schema: type | None) -> set[str]:
    return {k for k, v in _hints(schema).items() if _kind(v) == "str"}


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _value_layer(key: str, text: str, kind: str, source: str) -> DictConfig:
    """One `key <- text` override: str options keep the text, others are YAML (lists also take one bare item)."""
    if kind == "str":
        return OmegaConf.create({key: text}) if "." not in key else OmegaConf.from_dotlist([f"{key}={text}"])
    try:
        layer = OmegaConf.from_dotlist([f"{key}={text}"])
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: cannot parse override '{key}={text}': {e}") from None
    if kind == "list" and not OmegaConf.is_list(OmegaConf.select(layer, key)):
        layer = OmegaConf.create({key: [OmegaConf.select(layer, key)]})
    return layer


def _option_names(schema: type | None, aliases: Mapping[str, Any]) -> list[str]:
    names = [f"--{f.name}" for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
    return names + [f"--{a}" for a in aliases]


def _is_yaml_file(arg: str) -> bool:
    return arg.endswith((".yaml", ".yml")) or Path(arg).is_file()


def _yaml_layer(arg: str, schema: type | None) -> DictConfig:
    path = Path(arg)
    if not path.is_file():
        raise ConfigError(f"{arg}: no such config file (expected a YAML file, key=value or --key value)")
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # yaml errors carry line numbers; keep them
        raise ConfigError(f"{arg}: not valid YAML: {e}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{arg}: expected a mapping of key: value at the top level")
    if schema is not None:  # unknown keys and wrong types are reported against this file
        structured = OmegaConf.structured(schema)
        OmegaConf.set_struct(structured, True)
        _merge(structured, loaded, str(arg))
    return loaded


def _is_existing_path(text: str) -> bool:
    """True when `text` names a file; a long `key=value` override (over NAME_MAX) is not one, not an OSError."""
    try:
        return Path(text).exists()
    except OSError:
        return False


def parse_argv(argv: Sequence[str], schema: type | None = None, aliases: Mapping[str, Any] | None = None,
               positional: Sequence[str] = ()) -> DictConfig:
    """`[file.yaml ...] [key=value | --key value | --key=value | --flag | --no-flag ...]` -> one DictConfig.

    Values are YAML (`lr=1e-4`, `sizes=[1,2]`), except for the schema's `str` options, which keep the text
    as typed: `title=Ablation: no GAN` is a title, not a mapping. With a schema, every YAML file and option is
    checked against it here, so an unknown key names the file (or the option) it came from; values are
    type-checked by `resolve`. `config=exp.yaml` (the OmegaConf CLI habit of the tokenizer repos) is that file,
    merged first, under every other argument wherever it stands; a schema with a `config` option also records it.
    `aliases`: other tools' option names (see `Alias`, `Refused`); `positional`: fields taken, in order, by
    arguments that are neither options nor YAML files.
    """
    aliases = {k.replace("-", "_"): v for k, v in (aliases or {}).items()}
    hints = _hints(schema)
    fields = set(hints)
    raw_text = {k for k, v in hints.items() if _kind(v) == "str"}
    layers: list[DictConfig] = []
    config_files: list[DictConfig] = []  # `config=FILE`: the base layer, as OmegaConf's CLI habit has it
    free = list(positional)
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg.startswith("--") and len(arg) > 2:
            name, eq, text = arg[2:].partition("=")
            norm = name.replace("-", "_")
            shown = f"--{name}"
            spec = aliases.get(norm)
            if isinstance(spec, Refused):
                raise ConfigError(f"command line: option {shown} has no meaning here: {spec.instead}")
            if isinstance(spec, str):
                spec = Alias(spec)
            negate = False
            if spec is not None:
                key = spec.to or norm
            else:
                key = norm
                if schema is not None and key not in fields and key.split(".")[0] not in fields:
                    if key.startswith("no_") and _kind(hints.get(key[3:])) == "bool":
                        key, negate = key[3:], True
                    else:
                        known = [n.replace("_", "-") for n in _option_names(schema, aliases)]
                        raise ConfigError(f"command line: unknown option '{shown}'."
                                          f"{_close(shown.replace('_', '-'), known)} See --help for the options.")
            takes_no_value = spec.flag if spec is not None and (spec.flag or spec.convert) else \
                _kind(hints.get(key)) == "bool"
            if not eq and takes_no_value:
                # `--flag` alone is true; `--flag false` (argparse-style tools) is accepted too
                if i < len(argv) and argv[i].lower() in _TRUE + _FALSE:
                    text, i = argv[i], i + 1
                else:
                    text = "true"
                if negate:
                    text = "false" if text.lower() in _TRUE else "true"
            elif not eq:
                if i >= len(argv) or (argv[i].startswith("--") and len(argv[i]) > 2):
                    raise ConfigError(f"command line: option {shown} needs a value ({shown} VALUE or {shown}=VALUE)")
                text, i = argv[i], i + 1
            if spec is not None and spec.convert is not None:
                try:
                    value = spec.convert(text)
                except (ValueError, TypeError) as e:
                    raise ConfigError(f"command line: bad value for {shown}: {text!r} ({e})") from None
                values = dict(value) if isinstance(value, Mapping) else {key: value}
                layers.append(OmegaConf.create(values))
            else:
                kind = "bool" if takes_no_value else _kind(hints.get(key))
                if takes_no_value and text.lower() in _TRUE + _FALSE:
                    text = "true" if text.lower() in _TRUE else "false"
                layers.append(_value_layer(key, text, kind, "command line"))
        elif "=" in arg and not arg.startswith("-") and not _is_existing_path(arg):
            key, _, value = arg.partition("=")
            if key == "config" and ("config" not in fields or _is_yaml_file(value)):
                config_files.append(_yaml_layer(value, schema))
                if "config" in fields:
                    layers.append(OmegaConf.create({"config": value}))
                continue
            if key in raw_text:
                layers.append(OmegaConf.create({key: value}))
            else:
                try:
                    layers.append(OmegaConf.from_dotlist([arg]))
                except OmegaConfBaseException as e:
                    raise ConfigError(f"command line: cannot parse override '{arg}': {e}") from None
        elif free and not _is_yaml_file(arg):
            layers.append(OmegaConf.create({free.pop(0): arg}))
        else:
            layers.append(_yaml_layer(arg, schema))
    layers = config_files + layers
    return OmegaConf.merge(*layers) if layers else OmegaConf.create({})


_PROVENANCE_ENV = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
                   "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                   # the CPU code paths (shared.launch.NUMERICS_ENV): toy numbers depend on them
                   "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OPENBLAS_CORETYPE")
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
        "cpu": {"machine": platform.machine(), "model": _cpu_model(), "torch_capability": _torch_cpu_capability()},
    }


def _cpu_model() -> str | None:
    """The CPU's model name (Linux), so two runs' bits can be compared knowing whether the machines differed."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _torch_cpu_capability() -> str | None:
    """The instruction set torch's CPU kernels run with (AVX2 under the workflow's pin), if torch is loaded."""
    torch = sys.modules.get("torch")
    return torch.backends.cpu.get_cpu_capability() if torch is not None else None


def save_resolved(cfg: DictConfig, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config next to a step's outputs (atomically), with run.json (provenance) beside it."""
    out_dir = Path(out_dir)
    write_json(out_dir / (Path(name).stem + ".run.json" if name != "config.yaml" else "run.json"), provenance())
    return write_text(out_dir / name, OmegaConf.to_yaml(cfg, resolve=True))


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else "???"


def describe(schema: type, presets: Mapping[str, Mapping] | Presets | None = None,
             aliases: Mapping[str, Any] | None = None, positional: Sequence[str] = ()) -> str:
    lines = ["options (key=value):", "  (also --key value, --key=value, --flag / --no-flag; dashes or underscores)"]
    hints = _hints(schema)
    for f in dataclasses.fields(schema):
        kind = _kind(hints.get(f.name, f.type))
        typ = getattr(f.type, "__name__", str(f.type))
        gnu = f"--{f.name.replace('_', '-')}" + ("/--no-" + f.name.replace("_", "-") if kind == "bool" else "")
        extra = [f.metadata["help"]] if f.metadata.get("help") else []
        if "choices" in f.metadata:
            extra.append("one of " + " | ".join(map(str, f.metadata["choices"])))
        if f.metadata.get("min") is not None or f.metadata.get("max") is not None:
            extra.append(f"range [{f.metadata.get('min', '')}, {f.metadata.get('max', '')}]")
        lines.append(f"  {f.name + '=':<25} {gnu:<28} {typ:<10} default={_default_of(f)!r}"
                     + (f"  # {'; '.join(extra)}" if extra else ""))
    if positional:
        lines.append("positional arguments (besides YAML files): " + " ".join(positional))
    if aliases:
        lines.append("options of the original tools:")
        for name, spec in aliases.items():
            if isinstance(spec, Refused):
                lines.append(f"  --{name:<24} not used here: {spec.instead}")
            else:
                spec = Alias(spec) if isinstance(spec, str) else spec
                lines.append(f"  --{name:<24} -> {spec.to or name}" + (f"  ({spec.help})" if spec.help else ""))
    if isinstance(presets, Presets):
        lines.append("scale presets (scale=NAME sets these before your files and overrides):")
        for name, values in presets.scales.items():
            lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        if presets.key:
            lines.append(f"{presets.key}s ({presets.key}=NAME layers its settings over the scale preset):")
            for name, v in presets.variants.items():
                lines.append(f"  {name}: {getattr(v, 'description', '')}".rstrip())
    elif presets:
        lines.append("scale presets (scale=NAME sets these before your files and overrides):")
        for name, values in presets.items():
            lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def cli(main: Callable[[DictConfig], Any], schema: type, presets: Mapping[str, Mapping] | Presets | None = None,
        doc: str | None = None, argv: Sequence[str] | None = None, aliases: Mapping[str, Any] | None = None,
        positional: Sequence[str] = ()) -> Any:
    """Command-line entry: `script.py [config.yaml ...] [key=value | --key value ...]`, or `--help`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        prog = Path(sys.argv[0]).name
        pos = "".join(f" [{p.upper()}]" for p in positional)
        print(f"usage: {prog}{pos} [config.yaml ...] [key=value ...] [--key value ...]\n")
        if doc:
            print(doc.strip() + "\n")
        print(describe(schema, presets, aliases, positional))
        return None
    try:
        cfg = resolve(schema, parse_argv(argv, schema, aliases, positional), presets, source="command line")
        return main(cfg)
    except ConfigError as e:  # bad input (also found inside main): one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
