"""shared.config: precedence, type checks, clear errors, --help, resolved config + provenance on disk."""
from dataclasses import dataclass, field

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


def test_string_options_keep_text_as_typed():
    cfg = resolve(Cfg, parse_argv(["name=Ablation: no GAN, 4 steps", "sizes=[3, 4]"], Cfg), PRESETS)
    assert cfg.name == "Ablation: no GAN, 4 steps" and list(cfg.sizes) == [3, 4]
