"""The generator steps end to end at tiny scale: train_generator (RAR, MaskGIT, MaskGen) from a token folder,
resume and exit-75 preemption, then sample.py (sharded, per-sample seeds, image folder + ADM .npz) decoding with a
tiny MaskGIT-VQGAN; bad inputs name the key or file."""
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from shared.config import ConfigError
from projects.titok_rar import sample, train_generator
from projects.titok_rar.generator_common import toy_caption
from projects.titok_rar.generator_io import load_generator
from projects.titok_rar.token_data import write_tokens
from projects.titok_rar.image_tokenizers import load_tokenizer
from projects.titok_rar.vqgan import MaskGITVQGAN, VQGANConfig

RECIPES = "projects/titok_rar/configs/generator"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    torch.manual_seed(0)
    tok = MaskGITVQGAN(VQGANConfig(channel_mult=(1, 2, 2), num_res_blocks=1, hidden_channels=16, z_channels=8,
                                   resolution=16, codebook_size=16, norm_groups=4))
    tok.save_pretrained(root / "vq")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 80, 48)
    write_tokens(root / "tokens", rng.integers(0, 16, (48, 2, 16)), labels,  # two crops per image
                 captions=[toy_caption(c) for c in labels], meta={"codebook_size": 16, "tokenizer": str(root / "vq")})
    return root


def train(data, kind, out, **extra):
    cfg = {"config": f"{RECIPES}/tiny_{kind}.yaml", "scale": "tiny", "progress": False,
           "dataset": {"params": {"pretokenization": str(data / "tokens")}}, "experiment": {"output_dir": str(out)}}
    for k, v in extra.items():
        cfg[k] = v
    return train_generator.main(cfg)


@pytest.mark.parametrize("kind", ["rar", "maskgit", "maskgen"])
def test_train_then_sample(data, kind, tmp_path):
    final = train(data, kind, tmp_path / "run")
    g = load_generator(tmp_path / "run")
    assert g.kind == kind and (final / "generator.safetensors").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "metrics.jsonl").is_file()
    common = {"config": f"{RECIPES}/tiny_{kind}.yaml", "scale": "tiny", "checkpoint": str(tmp_path / "run"),
              "tokenizer": str(data / "vq")}
    n = 12
    one = sample.main({**common, "out_dir": str(tmp_path / "one"), "num_images": n})
    for k in (1, 0):  # two shards, in either order, give the same images as one
        sample.main({**common, "out_dir": str(tmp_path / "two"), "num_images": n, "num_shards": 2, "shard_index": k})
    for i in range(n):
        a = np.asarray(Image.open(one / f"{i:06d}.png"))
        assert a.shape == (16, 16, 3)
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "two" / f"{i:06d}.png")))
    z = np.load(one / "samples.npz")
    assert z["arr_0"].shape == (n, 16, 16, 3) and z["arr_0"].dtype == np.uint8
    assert (one / "000005.txt").read_text().strip() == toy_caption(5)  # class 5 or prompt 5: the same caption
    info = sample.read_json(one / "samples.json")
    assert info["num_images"] == n and info["images_per_sec"] > 0 and info["nfe"] == (16 if kind == "rar" else 4)


def test_rar_resumes_and_preemption_exits_75(data, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train_generator.RARStep.loss

    def loss_then_signal(self, model, batch, step):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGUSR2)  # as SLURM does before the time limit
        return real(self, model, batch, step)

    monkeypatch.setattr(train_generator.RARStep, "loss", loss_then_signal)
    with pytest.raises(SystemExit) as e:
        train(data, "rar", tmp_path / "run")
    assert e.value.code == 75 and (tmp_path / "run" / "preempted.json").is_file()
    assert (tmp_path / "run" / "checkpoints").is_dir()
    monkeypatch.setattr(train_generator.RARStep, "loss", real)
    train(data, "rar", tmp_path / "run")  # the same command again: resumes and finishes
    assert not (tmp_path / "run" / "preempted.json").exists()
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in
             (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 4 and steps == sorted(steps)


def test_bad_inputs(data, tmp_path):
    with pytest.raises(ConfigError, match="dataset.params.pretokenization"):
        train_generator.main({"config": f"{RECIPES}/tiny_rar.yaml", "scale": "tiny"})
    with pytest.raises(FileNotFoundError, match="no token folder"):
        train(data / "missing", "rar", tmp_path / "x")
    with pytest.raises(ConfigError, match=r"labels.npy: labels in \[.*condition_num_classes=10"):
        train(data, "rar", tmp_path / "y", model={"generator": {"condition_num_classes": 10}})
    with pytest.raises(ConfigError, match="generator='gan'"):
        train(data, "rar", tmp_path / "z", generator="gan")
    with pytest.raises(ConfigError, match="checkpoint="):
        sample.main({"config": f"{RECIPES}/tiny_rar.yaml", "scale": "tiny", "checkpoint": str(tmp_path / "nope"),
                     "tokenizer": str(data / "vq")})


def test_a_released_style_weights_file_samples_as_sample_imagenet_rar(data, tmp_path):
    """A bare .bin state dict (the released files' form) with the architecture given as config overrides."""
    from projects.titok_rar.rar import RAR, rar_config

    g = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_seq_len=16,
             condition_num_classes=80)
    torch.manual_seed(3)
    torch.save(RAR(rar_config(codebook_size=16, **g)).state_dict(), tmp_path / "rar_tiny.bin")
    out = sample.main({"config": f"{RECIPES}/rar.yaml", "scale": "tiny", "generator": "rar",
                       "experiment": {"output_dir": str(tmp_path / "rar_tiny"),
                                      "generator_checkpoint": str(tmp_path / "rar_tiny.bin"),
                                      "tokenizer_checkpoint": str(data / "vq")},
                       "model": {"vq_model": {"codebook_size": 16, "num_latent_tokens": 16}, "generator": g},
                       "num_images": 4})
    assert np.load(out / "samples.npz")["arr_0"].shape == (4, 16, 16, 3)
    assert sample.read_json(out / "samples.json")["sampling"]["guidance_scale"] == 16.0  # rar.yaml's RAR-B value
    with pytest.raises(ValueError, match="does not match RAR"):
        sample.main({"config": f"{RECIPES}/rar.yaml", "scale": "tiny", "generator": "rar", "num_images": 1,
                     "experiment": {"output_dir": str(tmp_path / "bad"),
                                    "generator_checkpoint": str(tmp_path / "rar_tiny.bin"),
                                    "tokenizer_checkpoint": str(data / "vq")},
                     "model": {"vq_model": {"codebook_size": 16, "num_latent_tokens": 16},
                               "generator": {**g, "hidden_size": 64}}})
