"""shared.config: precedence, type checks, clear errors, --help, resolved config + provenance on disk."""
from dataclasses import dataclass, field

import dataclasses
from pathlib import Path

import pytest
import yaml

from shared.config import ConfigError, cli, parse_argv, resolve, save_resolved


@dataclass
class Cfg:
    scale: str = "toy"
    epochs: int = 10
    lr: float = 1e-4
    name: str = "run"
    sizes: list = field(default_factory=lambda: [1, 2])


PRESETS = {"tiny": {"epochs": 1}, "toy": {"epochs": 5}, "paper": {"epochs": 100, "lr": 1e-5}}


def test_precedence_defaults_preset_file_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("scale: paper\nname: from_file\nepochs: 7\n")
    cfg = resolve(Cfg, parse_argv([str(f), "name=cli"]), PRESETS)
    assert cfg.scale == "paper" and cfg.lr == 1e-5  # preset chosen by the file's scale
    assert cfg.epochs == 7  # file beats preset
    assert cfg.name == "cli"  # override beats file
    assert resolve(Cfg, {"scale": "tiny"}, PRESETS).epochs == 1
    assert resolve(Cfg, None, PRESETS).epochs == 5


def test_unknown_key_names_key_and_lists_allowed():
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'.*Allowed keys: scale, epochs, lr, name, sizes"):
        resolve(Cfg, {"epoch": 3}, PRESETS)


def test_wrong_type_and_bad_scale():
    with pytest.raises(ConfigError, match="'epochs'"):
        resolve(Cfg, parse_argv(["epochs=abc"]), PRESETS)
    with pytest.raises(ConfigError, match="'scale'.*allowed: tiny, toy, paper"):
        resolve(Cfg, {"scale": "huge"}, PRESETS)


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        parse_argv([str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        parse_argv([str(bad)])


def test_cli_help_lists_options(capsys):
    cli(lambda c: None, Cfg, PRESETS, "Doc line.", argv=["--help"])
    out = capsys.readouterr().out
    assert "Doc line." in out and "epochs" in out and "tiny: epochs=1" in out


def test_cli_bad_override_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli(lambda c: None, Cfg, PRESETS, argv=["bogus=1"])
    assert e.value.code == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err


def test_save_resolved_writes_config_and_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    cfg = resolve(Cfg, {"scale": "tiny"}, PRESETS)
    save_resolved(cfg, tmp_path)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["epochs"] == 1
    run = yaml.safe_load((tmp_path / "run.json").read_text())
    assert run["env"]["CUDA_VISIBLE_DEVICES"] == "1" and run["packages"]["torch"]
    if Path("/proc/cpuinfo").exists():  # which CPU made the bits, to compare runs across machines
        cpuinfo = Path("/proc/cpuinfo").read_text()
        assert run["cpu"]["model"] and f": {run['cpu']['model']}" in cpuinfo


def test_string_options_keep_text_as_typed():
    cfg = resolve(Cfg, parse_argv(["name=Ablation: no GAN, 4 steps", "sizes=[3, 4]"], Cfg), PRESETS)
    assert cfg.name == "Ablation: no GAN, 4 steps" and list(cfg.sizes) == [3, 4]


def test_override_longer_than_a_file_name_is_an_override():
    # the sd_flux_lab table rule passes a ~400-character notes=[...]; checking it as a path raised ENAMETOOLONG
    long_name = "x" * 400
    cfg = resolve(Cfg, parse_argv([f"name={long_name}", f"sizes=[{','.join(['1'] * 200)}]"], Cfg), PRESETS)
    assert cfg.name == long_name and len(cfg.sizes) == 200


# ---- GNU-style options, other tools' option names, checks, presets by recipe, file modes --------------------
from shared.config import Alias, Presets, Refused, option  # noqa: E402


@dataclass
class Gnu:
    scale: str = "toy"
    epochs: int = option(10, min=0)
    batch_size: int = option(4, min=1, help="per process")
    guidance_scale: float = 3.0
    mixed_precision: str = option("no", choices=("no", "bf16", "fp16"))
    half: bool = False
    name: str = "run"
    prompts: list = field(default_factory=list)
    data_dir: str = ""


def test_gnu_options_equal_key_value():
    plain = resolve(Gnu, parse_argv(["epochs=3", "guidance_scale=2.5", "half=true", "name=a b: c"], Gnu))
    for argv in (["--epochs", "3", "--guidance-scale", "2.5", "--half", "--name", "a b: c"],
                 ["--epochs=3", "--guidance_scale=2.5", "--half", "true", "--name=a b: c"]):
        assert resolve(Gnu, parse_argv(argv, Gnu)) == plain
    assert resolve(Gnu, parse_argv(["--half", "--no-half"], Gnu)).half is False
    assert resolve(Gnu, parse_argv(["--half", "False"], Gnu)).half is False  # argparse-style `--flag False`
    assert list(resolve(Gnu, parse_argv(["--prompts", "a cat"], Gnu)).prompts) == ["a cat"]  # one item
    assert resolve(Gnu, parse_argv(["--guidance-scale", "-1"], Gnu)).guidance_scale == -1.0  # negative value


def test_gnu_option_errors_name_the_option():
    with pytest.raises(ConfigError, match=r"unknown option '--epoch'\. Did you mean: --epochs"):
        parse_argv(["--epoch", "3"], Gnu)
    with pytest.raises(ConfigError, match=r"unknown option '--guidance'.*--guidance-scale"):
        parse_argv(["--guidance", "3"], Gnu)
    with pytest.raises(ConfigError, match="--epochs needs a value"):
        parse_argv(["--epochs"], Gnu)
    with pytest.raises(ConfigError, match="'epochs'"):  # the same type check as epochs=abc
        resolve(Gnu, parse_argv(["--epochs", "abc"], Gnu))


def test_aliases_refused_and_positional(tmp_path):
    aliases = {"epoch": "epochs", "batch": "batch_size", "images": "data_dir",
               "pred_eps": Alias("name", convert=lambda v: {"name": "eps" if v == "true" else "x"}, flag=True),
               "detector_url": Refused("the Inception network is read from a local file: extractor=<file>")}
    cfg = resolve(Gnu, parse_argv(["photos", "--epoch", "2", "--batch=8", "--pred_eps"], Gnu, aliases,
                                  positional=["data_dir"]))
    assert (cfg.data_dir, cfg.epochs, cfg.batch_size, cfg.name) == ("photos", 2, 8, "eps")
    with pytest.raises(ConfigError, match="--detector_url has no meaning here: the Inception network"):
        parse_argv(["--detector_url", "http://x"], Gnu, aliases)
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 4\n")
    assert resolve(Gnu, parse_argv([str(f), "photos"], Gnu, positional=["data_dir"])).epochs == 4  # file, then dir
    assert resolve(Gnu, parse_argv([f"config={f}", "batch_size=2"], Gnu)).epochs == 4  # config=FILE is the file
    with pytest.raises(ConfigError, match="no such config file"):
        parse_argv([f"config={tmp_path / 'missing.yaml'}"], Gnu)


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("epochs: 3\nbogus: 1\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: unknown key 'bogus'"):
        parse_argv([str(f)], Gnu)
    f.write_text("epochs: many\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: bad value for 'epochs'"):
        parse_argv([str(f)], Gnu)


def test_choices_and_ranges_checked_at_resolve():
    with pytest.raises(ConfigError, match=r"command line: bad value for 'mixed_precision': 'fp8'; allowed: no, bf16, "
                                          r"fp16"):
        resolve(Gnu, parse_argv(["mixed_precision=fp8"], Gnu), source="command line")
    with pytest.raises(ConfigError, match=r"'batch_size': -1; must be >= 1"):
        resolve(Gnu, {"batch_size": -1})
    assert resolve(Gnu, {"batch_size": 1, "mixed_precision": "bf16"}).batch_size == 1


def test_train_config_checks_before_any_model_loads():
    from shared.train import TrainConfig

    with pytest.raises(ConfigError, match="'mixed_precision': 'fp8'; allowed: no, bf16, fp16"):
        resolve(TrainConfig, {"mixed_precision": "fp8"})
    with pytest.raises(ConfigError, match="'grad_accum': 0; must be >= 1"):
        resolve(TrainConfig, {"grad_accum": 0})


def test_cli_help_shows_both_spellings_and_aliases(capsys):
    cli(lambda c: None, Gnu, None, argv=["--help"], aliases={"epoch": "epochs", "x": Refused("use y")})
    out = capsys.readouterr().out
    assert "options (key=value):" in out and "guidance_scale=" in out and "--guidance-scale" in out
    assert "--half/--no-half" in out and "one of no | bf16 | fp16" in out
    assert "--epoch" in out and "-> epochs" in out and "not used here: use y" in out


def test_presets_by_scale_and_recipe():
    @dataclass
    class R:
        scale: str = "toy"
        recipe: str = "a"
        lr: float = 1.0
        steps: int = 1
        fsdp: str = ""

    class Recipe:  # what projects/dmd2/recipes.Recipe looks like
        def __init__(self, settings, scales=None, description=""):
            self.settings, self.scales, self.description = settings, scales or {}, description

    presets = Presets({"tiny": {"steps": 2}, "toy": {"steps": 3}, "paper": {"steps": 4, "lr": 0.5}}, key="recipe",
                      variants={"a": Recipe({"lr": 0.1}), "b": Recipe({"lr": 0.2}, {"paper": {"fsdp": "full_shard"}})})
    assert (resolve(R, None, presets).lr, resolve(R, None, presets).steps) == (0.1, 3)
    cfg = resolve(R, parse_argv(["recipe=b", "scale=paper"], R), presets)
    assert (cfg.lr, cfg.steps, cfg.fsdp) == (0.2, 4, "full_shard")  # recipe over scale, recipe's scale over recipe
    assert resolve(R, {"recipe": "b", "scale": "paper", "lr": 9.0}, presets).lr == 9.0
    with pytest.raises(ConfigError, match=r"bad value for 'recipe': 'c'; allowed: a, b"):
        resolve(R, {"recipe": "c"}, presets)
    assert presets.flat("b")["paper"] == {"steps": 4, "lr": 0.2, "fsdp": "full_shard"}


def test_results_respect_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        cfg = resolve(Cfg, {"scale": "tiny"}, PRESETS)
        save_resolved(cfg, tmp_path / "a")
        os.umask(0o077)
        save_resolved(cfg, tmp_path / "b")
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("*/*")}
    assert modes == {"a/config.yaml": 0o644, "a/run.json": 0o644, "b/config.yaml": 0o600, "b/run.json": 0o600}


def test_workflow_schema_declares_the_draft_snakemake_validates_with(tmp_path):
    """snakemake.utils.validate checks with Draft 2020-12 and warns "No validator found for JSON Schema version"
    for any other $schema; the check stays real (a bad value is refused)."""
    import logging
    from pathlib import Path

    import jsonschema
    from snakemake.logging import logger
    from snakemake.utils import validate

    schema_path = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft202012Validator
    jsonschema.Draft202012Validator.check_schema(schema)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        cfg = {"scale": "tiny"}
        validate(cfg, str(schema_path))
        assert cfg["launcher"] == "local"  # defaults filled
        with pytest.raises(Exception, match="'huge' is not one of"):
            validate({"scale": "huge"}, str(schema_path))
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "No validator found" in r.getMessage()]


@pytest.mark.parametrize("override, message", [
    ("batch_size=0", "batch_size"), ("crop=middle", "crop"), ("prediction_type=x0", "prediction_type"),
    ("arch=sd3", "arch"), ("caption_dropout=1.5", "caption_dropout"),
])
def test_train_sd_refuses_bad_values_before_loading_anything(override, message, tmp_path):
    """Checked when the config is resolved: a bad value never reaches model loading (base= does not exist)."""
    from projects.sd_flux_lab import train_sd

    with pytest.raises(ConfigError, match=message):
        train_sd.main(parse_argv([override, f"base={tmp_path / 'missing'}", f"run_dir={tmp_path / 'run'}"],
                                 train_sd.Config))
    assert not (tmp_path / "run").exists()


def test_config_file_option_is_the_base_layer_wherever_it_stands(tmp_path):
    """`config=exp.yaml` as the tokenizer repos' OmegaConf CLI takes it: the file's values over the defaults, every
    other argument over the file, even when written before it; a schema with a `config` option records the path."""
    @dataclasses.dataclass
    class WithConfig:
        config: str = ""
        a: int = 1
        b: int = 2
        c: int = 3

    f = tmp_path / "exp.yaml"
    f.write_text("a: 5\nb: 7\n")
    cfg = resolve(WithConfig, parse_argv(["a=9", f"config={f}", "--c", "4"], WithConfig))
    assert (cfg.a, cfg.b, cfg.c, cfg.config) == (9, 7, 4, str(f))
    with pytest.raises(ConfigError, match="exp2.yaml"):
        parse_argv([f"config={tmp_path / 'exp2.yaml'}"], WithConfig)
