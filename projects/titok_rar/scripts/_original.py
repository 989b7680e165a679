"""What the original-named entry points share: bytedance/1d-tokenizer's command line (`config=<yaml>` then dotted
`a.b.c=value` overrides, OmegaConf.from_cli there) run through `shared.config.cli` on one of our steps.

    run(train_generator.main, train_generator.Config, train_generator.PRESETS, __doc__,
        fixed={"generator": "rar"}, script="scripts/train_rar.py")

Why `config=<yaml>` is rewritten to a plain YAML argument: the original loads the file first and lays the command
line's overrides on it wherever `config=` stands. Given as the first YAML layer, `shared.config` resolves exactly
that order (defaults < scale preset < the file < the overrides) and checks the file's keys against the step's
schema, naming the file. (Passed as the string option `config`, the steps' own `config=` merges the file under the
already-resolved defaults, which would mask the file's values on the command line.)

`fixed`: what the original script decides by being that script (train_rar.py builds a RAR whatever the YAML says);
the same key given differently on the command line is refused, naming the script to use instead. `refused`: keys
of the original's configs that have no meaning here, `{dotted key: (predicate(value) -> bool, what to use)}`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from omegaconf import OmegaConf

from shared.config import ConfigError, cli

# Original config keys that are accepted by the schema (so the released YAML files load) but do nothing here.
COMMON_REFUSED = {
    "training.enable_wandb": (lambda v: bool(v), "wandb logging is not wired into these steps; every loss and the "
                              "lr are in <experiment.output_dir>/metrics.jsonl (and .csv)"),
}


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def original_argv(argv: Sequence[str]) -> list[str]:
    """`config=X` -> `X` in front (see the module docstring); a missing file is named as the original's key."""
    files, rest = [], []
    for arg in argv:
        if arg.startswith("config="):
            path = arg.partition("=")[2]
            if not Path(path).is_file():
                _fail(f"config={path}: no such config file")
            files.append(path)
        else:
            rest.append(arg)
    return files + rest


def _given(argv: Sequence[str], key: str) -> str | None:
    """The value the command line gives `key` (`key=v`, `--key v`, `--key=v`), else None."""
    dashed = "--" + key.replace("_", "-")
    for i, arg in enumerate(argv):
        for prefix in (f"{key}=", f"--{key}=", f"{dashed}="):
            if arg.startswith(prefix):
                return arg[len(prefix):]
        if arg in (f"--{key}", dashed) and i + 1 < len(argv):
            return argv[i + 1]
    return None


def run(step_main: Callable[[Any], Any], schema: type, presets: Mapping | None, doc: str, *, script: str,
        fixed: Mapping[str, Any] | None = None, refused: Mapping[str, tuple] | None = None,
        check: Callable[[Any], None] | None = None, argv: Sequence[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    fixed = dict(fixed or {})
    for key, value in fixed.items():
        given = _given(argv, key)
        if given is not None and given != str(value):
            _fail(f"{key}={given}: {script} always runs {key}={value} (as the original script does); "
                  f"use the script for {given} or projects/titok_rar/{step_main.__module__.rsplit('.', 1)[-1]}.py")
    refused = {**COMMON_REFUSED, **(refused or {})}

    def main(cfg):
        for key, (applies, instead) in refused.items():
            value = OmegaConf.select(cfg, key)
            if value is not None and applies(value):
                raise ConfigError(f"{key}={value}: has no meaning here ({script}): {instead}")
        if check is not None:  # sees the config as given, before the script's fixed values
            check(cfg)
        if fixed:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{k}={v}" for k, v in fixed.items()]))
        return step_main(cfg)

    return cli(main, schema, presets, doc, argv=original_argv(argv))


def token_folder_check(cfg) -> None:
    """The original's `dataset.params.pretokenization` is a JSONL file (scripts/pretokenization.py); here it is a
    token folder, which pretokenize.py writes from the same images and tokenizer."""
    path = str(cfg.dataset.params.pretokenization or "")
    if path.endswith((".jsonl", ".json")):
        raise ConfigError(f"dataset.params.pretokenization={path}: the original's JSONL of tokens is not read here; "
                          "give a token folder (tokens.npy, labels.npy, meta.json), written by `python "
                          "projects/titok_rar/pretokenize.py tokenizer=<tokenizer> data=<images or shards> "
                          "out_dir=<folder> ten_crop=true` (the original's --ten_crop)")


def train_generator_entry(kind: str, script: str, doc: str) -> Any:
    from projects.titok_rar import train_generator

    return run(train_generator.main, train_generator.Config, train_generator.PRESETS, doc, script=script,
               fixed={"generator": kind}, check=token_folder_check)


def sample_entry(kind: str, script: str, doc: str, download_hint: str) -> Any:
    """The original's sample_imagenet_*.py: sample.py with the generator kind fixed, the tokenizer also taken from
    model.vq_model.pretrained_tokenizer_weight (where sample_imagenet_rar.py reads it), a missing checkpoint named
    with what downloads it (the original fetches from the hub), and `<output_dir>.npz` beside the folder (where the
    original writes it) as well as our <output_dir>/samples.npz."""
    import os

    from projects.titok_rar import sample

    def check(cfg) -> None:
        for key in ("experiment.generator_checkpoint", "experiment.tokenizer_checkpoint",
                    "model.vq_model.pretrained_tokenizer_weight"):
            path = str(OmegaConf.select(cfg, key) or "")
            if key.startswith("model.") and (cfg.tokenizer or cfg.experiment.tokenizer_checkpoint):
                continue
            if path and not Path(path).exists():
                raise ConfigError(f"{key}={path}: not found. The original downloads it from the hub at this point; "
                                  f"here download it first ({download_hint}) and give its local path")

    def step(cfg):
        if not cfg.tokenizer and not cfg.experiment.tokenizer_checkpoint:
            cfg.tokenizer = cfg.model.vq_model.pretrained_tokenizer_weight
        out = Path(sample.main(cfg))
        beside = out.parent / f"{out.name}.npz"
        if (out / "samples.npz").is_file():  # this process saw the set complete: (re)place the copy beside
            tmp = out.parent / f".{out.name}.npz.{os.getpid()}"
            try:
                os.link(out / "samples.npz", tmp)
            except OSError:  # no hard links on this file system
                import shutil
                shutil.copyfile(out / "samples.npz", tmp)
            os.replace(tmp, beside)
        return out

    return run(step, sample.SampleConfig, sample.PRESETS, doc, script=script, fixed={"generator": kind}, check=check)
