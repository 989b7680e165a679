"""bytedance/1d-tokenizer's commands run here as typed there (issue 14, point 2): `scripts/train_titok.py`,
`scripts/train_rar.py`, `scripts/train_maskgit.py`, `scripts/train_maskgen.py`,
`sample_imagenet_rar.py` (under `torchrun`), `sample_imagenet_titok.py`, each with `config=<yaml>` and dotted
overrides, paths swapped for tiny fixtures; each checked for what the original does (a trained, loadable model in
experiment.output_dir, with the YAML's values under the command line's; samples and `<output_dir>.npz`).
Options without meaning here fail with what to use instead."""
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from projects.titok_rar import prepare
from projects.titok_rar.generator_common import toy_caption
from projects.titok_rar.generator_io import load_generator
from projects.titok_rar.image_tokenizers import TiTok, load_tokenizer
from projects.titok_rar.token_data import write_tokens
from projects.titok_rar.vqgan import MaskGITVQGAN, VQGANConfig

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
BIN = Path(PY).parent
GEN = "projects/titok_rar/configs/generator"
QUIET = ["progress=false", "threads=1"]


def _run(cmd, timeout=240):
    """Run a command line as typed, from the repository root; fail with its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))}\nrc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def fx(digits_tiny, tmp_path_factory):
    """Tiny stand-ins for the original's inputs: ImageNet shards (the digits), the MaskGIT-VQGAN (random, 32 px
    for TiTok, 16 px for the generators) and pretokenized data (random tokens with labels and captions)."""
    root = tmp_path_factory.mktemp("orig")
    prepare.main({"scale": "tiny", "digits": str(digits_tiny), "out_dir": str(root / "data")})
    torch.manual_seed(0)
    MaskGITVQGAN(VQGANConfig(channel_mult=(1, 1, 2), num_res_blocks=1, hidden_channels=16, z_channels=16,
                             resolution=32, codebook_size=128, norm_groups=8)).save_pretrained(root / "vq32")
    MaskGITVQGAN(VQGANConfig(channel_mult=(1, 2, 2), num_res_blocks=1, hidden_channels=16, z_channels=8,
                             resolution=16, codebook_size=16, norm_groups=4)).save_pretrained(root / "vq16")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 80, 48)
    write_tokens(root / "tokens", rng.integers(0, 16, (48, 16)), labels, captions=[toy_caption(c) for c in labels],
                 meta={"codebook_size": 16, "tokenizer": str(root / "vq16")})
    return root


def test_train_titok_both_stages_as_the_original(fx, tmp_path, monkeypatch):
    out = tmp_path / "titok_b64_stage1_run1"
    _run([PY, "projects/titok_rar/scripts/train_titok.py",
          "config=projects/titok_rar/configs/toy/titok_stage1.yaml",
          "experiment.project=titok_b64_stage1", "experiment.name=titok_b64_stage1_run1",
          f"experiment.output_dir={out}", "training.per_gpu_batch_size=8", "training.max_train_steps=2",
          f"model.vq_model.pretrained_tokenizer_weight={fx / 'vq32'}",
          f"dataset.params.train_shards_path_or_url={fx / 'data/shards/train'}",
          "model.vq_model.vit_enc_model_size=tiny", "model.vq_model.vit_dec_model_size=tiny",
          "model.vq_model.num_latent_tokens=4", "experiment.save_every=0", "experiment.log_every=1", *QUIET])
    cfg = OmegaConf.load(out / "config.yaml")
    # the command line over the YAML (batch 8, not its 32), the YAML over our defaults (its 256 codes, not 4096)
    assert cfg.experiment.name == "titok_b64_stage1_run1" and cfg.training.per_gpu_batch_size == 8
    assert cfg.model.vq_model.codebook_size == 256 and cfg.optimizer.params.learning_rate == 1e-3
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r][-1] == 2
    tok = load_tokenizer(out / "final")
    assert isinstance(tok, TiTok) and tok.config.num_latent_tokens == 4
    codes = tok.encode(torch.rand(2, 3, 32, 32))
    assert codes.shape == (2, 4) and int(codes.max()) < 256
    # stage 1 decodes to the teacher's codes, as the original's stage-1 model (pixels through the VQGAN)
    assert tuple(tok.decode_with_vqgan(codes, load_tokenizer(fx / "vq32")).shape) == (2, 3, 32, 32)

    # stage 2 from the stage-1 result (experiment.init_weight), in this interpreter: decodes to pixels, the encoder
    # frozen as the original's finetune_decoder freezes it
    s2 = tmp_path / "titok_b64_stage2_run1"
    assert _main("projects/titok_rar/scripts/train_titok.py",
                 ["config=projects/titok_rar/configs/toy/titok_stage2.yaml", f"experiment.output_dir={s2}",
                  f"experiment.init_weight={out / 'final'}", "training.per_gpu_batch_size=8",
                  "training.max_train_steps=2", f"model.vq_model.pretrained_tokenizer_weight={fx / 'vq32'}",
                  f"dataset.params.train_shards_path_or_url={fx / 'data/shards/train'}",
                  "model.vq_model.vit_enc_model_size=tiny", "model.vq_model.vit_dec_model_size=tiny",
                  "model.vq_model.num_latent_tokens=4", "losses.discriminator_start=1", "losses.perceptual_weight=0",
                  "experiment.save_every=0",
                  *QUIET], monkeypatch) == 0
    tok2 = load_tokenizer(s2 / "final")
    assert tuple(tok2.decode_tokens(codes).shape) == (2, 3, 32, 32)
    one, two = tok.state_dict(), tok2.state_dict()
    enc = [k for k in one if k.startswith("encoder.")]
    assert enc and all(torch.equal(one[k], two[k]) for k in enc)
    dec = [k for k in one if k.startswith("decoder.") and one[k].is_floating_point()]
    assert any(not torch.equal(one[k], two[k]) for k in dec)  # while the decoder trained


def _main(script, argv, monkeypatch):
    """`python script argv...` in this process (saves the interpreter start); returns its exit code (0 if none)."""
    monkeypatch.setattr(sys, "argv", [script, *argv])
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as e:
        return e.code
    return 0


@pytest.fixture(scope="module")
def trained(fx, tmp_path_factory):
    """The three generator scripts, each with the original's command line: train_rar.py in its own interpreter,
    train_maskgit.py / train_maskgen.py in this one (the same argv through runpy)."""
    root = tmp_path_factory.mktemp("gens")
    outs = {}
    with pytest.MonkeyPatch.context() as mp:
        for kind in ("rar", "maskgit", "maskgen"):
            out = outs[kind] = root / f"{kind}_run"
            script = f"projects/titok_rar/scripts/train_{kind}.py"
            # rar: a YAML whose `generator:` says maskgit; the script decides, as the original script does
            yaml = f"{GEN}/tiny_{'maskgit' if kind == 'rar' else kind}.yaml"
            argv = [f"config={yaml}", f"experiment.project={kind}", f"experiment.name={kind}_tiny",
                    f"experiment.output_dir={out}", f"dataset.params.pretokenization={fx / 'tokens'}",
                    "training.max_train_steps=3", "training.per_gpu_batch_size=8", "scale=tiny", *QUIET]
            if kind == "rar":
                _run([PY, script, *argv, "model.generator.hidden_size=48"])  # over the YAML's 32
            else:
                assert _main(script, argv, mp) == 0
    return outs


@pytest.mark.parametrize("kind", ["rar", "maskgit", "maskgen"])
def test_train_generators_as_the_original(trained, kind):
    out = trained[kind]
    g = load_generator(out)
    assert g.kind == kind and (out / "final/generator.safetensors").is_file()
    cfg = OmegaConf.load(out / "config.yaml")
    assert cfg.generator == kind and cfg.experiment.name == f"{kind}_tiny" and cfg.training.max_train_steps == 3
    assert cfg.training.per_gpu_batch_size == 8
    if kind == "maskgen":
        assert cfg.model.text_encoder.width == 32  # from the tiny YAML, not the default
    else:  # from the tiny YAML, not the default 24; rar's hidden_size from the command line, over the YAML's 32
        assert cfg.model.generator.num_hidden_layers == 2
        assert cfg.model.generator.hidden_size == (48 if kind == "rar" else 32)
        width = cfg.model.generator.hidden_size  # and the weights have it
        assert OmegaConf.load(out / "final/generator.yaml").model.generator.hidden_size == width
        norms = [t.shape for k, t in g.model.state_dict().items() if k.endswith(("norm1.weight", "LayerNorm.weight"))]
        assert norms and all(shape[-1] == width for shape in norms), norms
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in rows) == 3


def _samples_ok(out: Path, n: int, size: int) -> np.ndarray:
    beside = np.load(out.parent / f"{out.name}.npz")["arr_0"]  # where the original writes it
    assert beside.shape == (n, size, size, 3) and beside.dtype == np.uint8
    for i in range(n):
        assert np.array_equal(beside[i], np.asarray(Image.open(out / f"{i:06d}.png").convert("RGB")))
    ours = np.load(out / "samples.npz")
    assert np.array_equal(ours["arr_0"], beside) and list(ours["arr_1"]) == [i % 80 for i in range(n)]
    return beside


def test_sample_imagenet_rar_under_torchrun(fx, tmp_path):
    """A released-style bare RAR state dict, architecture and guidance as dotted overrides (RAR-B's 16.0 / 2.75),
    the tokenizer from model.vq_model.pretrained_tokenizer_weight as the original reads it."""
    from projects.titok_rar.rar import RAR, rar_config

    g = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             condition_num_classes=80)
    torch.manual_seed(3)
    torch.save(RAR(rar_config(codebook_size=16, image_seq_len=16, **g)).state_dict(), tmp_path / "rar_b.bin")
    out = tmp_path / "rar_b"
    _run([BIN / "torchrun", "--nproc_per_node=1", "projects/titok_rar/sample_imagenet_rar.py",
          f"config={GEN}/rar.yaml", f"experiment.output_dir={out}",
          f"experiment.generator_checkpoint={tmp_path / 'rar_b.bin'}",
          f"model.vq_model.pretrained_tokenizer_weight={fx / 'vq16'}",
          "model.vq_model.codebook_size=16", "model.vq_model.num_latent_tokens=16", "model.generator.image_seq_len=16",
          *[f"model.generator.{k}={v}" for k, v in g.items()], "model.generator.randomize_temperature=1.0",
          "model.generator.guidance_scale=16.0", "model.generator.guidance_scale_pow=2.75",
          "scale=tiny", "num_images=6", *QUIET])
    _samples_ok(out, 6, 16)
    info = json.loads((out / "samples.json").read_text())
    assert info["generator"] == "rar" and info["tokenizer"] == str(fx / "vq16")
    assert info["sampling"]["guidance_scale"] == 16.0 and info["sampling"]["guidance_scale_pow"] == 2.75


def test_sample_imagenet_titok_from_a_trained_maskgit(fx, trained, tmp_path, monkeypatch):
    out = tmp_path / "titok_b_64"
    assert _main("projects/titok_rar/sample_imagenet_titok.py",
                 [f"config={GEN}/tiny_maskgit.yaml", f"experiment.output_dir={out}",
                  f"experiment.generator_checkpoint={trained['maskgit'] / 'final'}",
                  f"experiment.tokenizer_checkpoint={fx / 'vq16'}", "scale=tiny", "num_images=4", *QUIET],
                 monkeypatch) == 0
    _samples_ok(out, 4, 16)
    assert json.loads((out / "samples.json").read_text())["nfe"] == 4  # tiny_maskgit.yaml's num_steps


def test_options_without_meaning_here_say_what_to_use(fx, tmp_path, monkeypatch, capsys):
    cases = [
        ("projects/titok_rar/scripts/train_rar.py", [f"config={GEN}/tiny_rar.yaml", "generator=maskgit"],
         "always runs generator=rar"),
        ("projects/titok_rar/scripts/train_rar.py", [f"config={GEN}/tiny_rar.yaml",
                                                     "dataset.params.pretokenization=imagenet_tokens.jsonl"],
         "pretokenize.py"),
        ("projects/titok_rar/scripts/train_maskgit.py", [f"config={GEN}/tiny_maskgit.yaml",
                                                         "training.enable_wandb=true"], "metrics.jsonl"),
        ("projects/titok_rar/scripts/train_titok.py", ["config=configs/training/TiTok/stage1/titok_b64.yaml"],
         "config=configs/training/TiTok/stage1/titok_b64.yaml: no such config file"),
        ("projects/titok_rar/scripts/train_titok.py", ["config=projects/titok_rar/configs/toy/vqgan_digits.yaml"],
         "always runs model.type=titok"),
        ("projects/titok_rar/scripts/train_tatitok.py", ["config=projects/titok_rar/configs/toy/titok_stage1.yaml"],
         "TA-TiTok training"),
        ("projects/titok_rar/sample_imagenet_rar.py", [f"config={GEN}/rar.yaml",
                                                       f"experiment.output_dir={tmp_path / 'x'}",
                                                       "experiment.generator_checkpoint=rar_b.bin"],
         "download.py item=rar_b"),
    ]
    for script, argv, message in cases:
        assert _main(script, argv, monkeypatch) == 2, script
        err = capsys.readouterr().err
        assert message in err, (script, err)
    assert not (tmp_path / "x").exists()
