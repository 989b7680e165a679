"""titok_rar tokenizer steps at tiny scale, in process: prepare -> VQGAN teacher -> TiTok stage 1 -> stage 2, a
single-stage VAE, evaluation, pretokenization (ten crops); losses against their formulas; bad configs and corrupt
data; the paper-scale plan of `snakemake --profile slurm titok`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.config import ConfigError
from projects.titok_rar import convert_to_wds, evaluate, prepare, pretokenize, train_tokenizer
from projects.titok_rar.losses import hinge_d_loss, lecam_loss
from projects.titok_rar.token_data import load_tokens
from projects.titok_rar.image_tokenizers import MaskGITVQGAN, TiTok, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "projects/titok_rar/configs/toy"
TINY = {"training": {"max_train_steps": 2, "per_gpu_batch_size": 8}, "experiment": {"save_every": 0, "log_every": 1},
        "threads": 1}
TINY_VIT = {"vit_enc_model_size": "tiny", "vit_dec_model_size": "tiny", "num_latent_tokens": 4}


def _train(yaml, out, shards, **over):
    """train_tokenizer.main with the recipe `yaml` (as config=), tiny sizes and `over` (nested dicts) on top."""
    from omegaconf import OmegaConf
    cfg = OmegaConf.merge({"config": str(CFG / yaml), "scale": "tiny"}, TINY,
                          {"dataset": {"params": {"train_shards_path_or_url": str(shards)}}}, over,
                          {"experiment": {"output_dir": str(out)}})
    return train_tokenizer.main(OmegaConf.to_container(cfg))


@pytest.fixture(scope="module")
def chain(digits_tiny, tmp_path_factory):
    from shared.toy import train_features
    root = tmp_path_factory.mktemp("titok")
    prepare.main({"scale": "tiny", "digits": str(digits_tiny), "out_dir": str(root / "data")})
    train_features.main({"scale": "tiny", "data_dir": str(digits_tiny), "out_dir": str(root / "feat")})
    feats = root / "feat/features.safetensors"
    shards = root / "data/shards/train"
    vq = _train("vqgan_digits.yaml", root / "vqgan", shards,
                model={"vqgan": {"hidden_channels": 16}},
                losses={"perceptual_loss": f"digits:{feats}", "discriminator_start": 1})
    s1 = _train("titok_stage1.yaml", root / "s1", shards,
                model={"vq_model": {**TINY_VIT, "pretrained_tokenizer_weight": str(vq)}})
    s2 = _train("titok_stage2.yaml", root / "s2", shards,
                model={"vq_model": {**TINY_VIT, "pretrained_tokenizer_weight": str(vq)}},
                experiment={"init_weight": str(s1)},
                losses={"perceptual_loss": f"digits:{feats}", "discriminator_start": 1})
    return {"root": root, "vqgan": vq, "s1": s1, "s2": s2, "feats": feats, "shards": shards}


def _metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_prepare_writes_labelled_shards(chain):
    data = chain["root"] / "data"
    index = json.loads((data / "shards/train/index.json").read_text())
    assert index["count"] == 160
    classes = json.loads((data / "shards/train/classes.json").read_text())
    # label = digit * 8 + colour: the folder name's prefix
    for name in classes:
        label, colour, digit = name.split("_")
        from shared.toy.dataset import COLOUR_NAMES, DIGIT_WORDS
        assert int(label) == DIGIT_WORDS.index(digit) * 8 + COLOUR_NAMES.index(colour)


def test_stages_train_and_stage2_freezes_the_encoder(chain):
    vq, s1, s2 = (load_tokenizer(chain[k]) for k in ("vqgan", "s1", "s2"))
    assert isinstance(vq, MaskGITVQGAN) and vq.num_tokens == 64
    assert isinstance(s1, TiTok) and not s1.outputs_pixels and s2.outputs_pixels
    sd1, sd2 = s1.state_dict(), s2.state_dict()
    for k in sd1:
        if k.startswith(("encoder.", "quantize.", "latent_tokens")):
            assert torch.equal(sd1[k], sd2[k]), k          # frozen in stage 2
    assert any(not torch.equal(sd1[k], sd2[k]) for k in sd1 if k.startswith("decoder."))  # trained
    rows = _metrics(chain["root"] / "s1")
    assert {"ce", "code_accuracy", "codebook_usage", "dead_codes"} <= rows[0].keys()
    assert rows[0]["ce"] > 0 and 0 < rows[0]["codebook_usage"] <= 1
    rows2 = _metrics(chain["root"] / "s2")
    assert {"d_loss", "lecam_loss", "gan_loss", "perceptual_loss", "reconstruction_loss"} <= set().union(*rows2)
    cfg = (chain["root"] / "s2/config.yaml").read_text()
    assert "discriminator_weight: 0.01" in cfg and "init_weight:" in cfg   # the whole nested config is kept


def test_single_stage_vae(chain):
    out = _train("titok_single_vae.yaml", chain["root"] / "vae", chain["shards"],
                 model={"vq_model": TINY_VIT},
                 losses={"discriminator_start": 0, "perceptual_loss": f"digits:{chain['feats']}"})
    rows = _metrics(chain["root"] / "vae")
    assert rows[0]["kl_loss"] > 0 and "d_loss" in rows[0]
    assert load_tokenizer(out).is_continuous


def test_evaluate_and_pretokenize(chain):
    root = chain["root"]
    res = evaluate.main({"scale": "tiny", "tokenizer": str(chain["s2"]), "experiment": "k4_stage2",
                         "data": str(root / "data/shards/test"), "extractor": f"digits:{chain['feats']}",
                         "out": str(root / "eval/k4.json")})
    got = {e["metric"]: e["value"] for e in res["metrics"]}
    assert {"rfid", "psnr", "ssim", "codebook_usage", "codebook_perplexity", "tokens_per_image"} <= got.keys()
    assert got["tokens_per_image"] == 4 and got["rfid"] >= 0 and 0 < got["codebook_usage"] <= 1
    assert len(list((root / "eval/k4/recon").glob("*.png"))) == 32 and (root / "eval/k4_grid.png").is_file()
    assert res["checkpoint"] == str(chain["s2"])            # the tokenizer folder unless a name is given
    # a training seed's row (the workflow's titok_seeds): experiment and checkpoint end with the seed, so
    # shared/tables.py shows it and the seed-0 row as one row of two seeds
    seeded = evaluate.main({"scale": "tiny", "tokenizer": str(chain["s2"]), "experiment": "k4_stage2_seed1",
                            "checkpoint": "k4_stage2_seed1", "data": str(root / "data/shards/test"),
                            "extractor": f"digits:{chain['feats']}",
                            "out": str(root / "eval/k4_seed1.json")})
    assert seeded["checkpoint"] == "k4_stage2_seed1"
    from shared import tables
    bare = dict(res, checkpoint="k4_stage2")
    (root / "eval/k4_bare.json").write_text(json.dumps(bare))
    entries = tables.collect([root / "eval/k4_bare.json", root / "eval/k4_seed1.json"], "tiny")[4]
    rows = tables.group_seeds(entries)
    assert len(rows) == 1 and rows[0].seeds == [0, 1]
    # stage 1 decodes through the VQGAN
    res1 = evaluate.main({"scale": "tiny", "tokenizer": str(chain["s1"]), "vqgan": str(chain["vqgan"]),
                          "experiment": "k4_stage1", "data": str(root / "data/shards/test"),
                          "extractor": f"digits:{chain['feats']}", "out": str(root / "eval/k4s1.json")})
    assert res1["num_reconstructed"] == 32
    out = pretokenize.main({"scale": "tiny", "tokenizer": str(chain["s2"]), "data": str(chain["shards"]),
                            "out_dir": str(root / "tokens/k4"), "ten_crop": True})
    data = load_tokens(out)
    assert data.tokens.shape == (48, 10, 4) and data.tokens.dtype == np.uint8  # 256 codes fit in a byte
    assert data.labels.min() >= 0 and data.labels.max() < 80 and data.captions[0].startswith("a ")
    # the stored tokens are the tokenizer's codes of those crops: crop 4 is the centre crop
    tok = load_tokenizer(chain["s2"])
    from projects.titok_rar.data import image_source, to_unit
    from shared.data import ResumableLoader
    batch = next(iter(ResumableLoader(image_source(str(chain["shards"]), 32,
                                                   transform=pretokenize.TenCrop(32, 1.1)), 4, shuffle=False)))
    want = tok.encode(to_unit(batch["image"][:, 4]))
    assert np.array_equal(data.tokens[:4, 4], want.numpy())


def test_bad_configs_are_named(chain, tmp_path):
    with pytest.raises(ConfigError, match="experiment.init_weight"):
        _train("titok_stage2.yaml", tmp_path / "x", chain["shards"],
               model={"vq_model": {**TINY_VIT, "pretrained_tokenizer_weight": str(chain["vqgan"])}},
               experiment={"init_weight": ""})
    with pytest.raises(ConfigError, match="pretrained_tokenizer_weight=/nope: not found"):
        _train("titok_stage1.yaml", tmp_path / "y", chain["shards"],
               model={"vq_model": {**TINY_VIT, "pretrained_tokenizer_weight": "/nope"}})
    with pytest.raises(ConfigError, match="model.vq_model.bogus"):
        _train("titok_stage1.yaml", tmp_path / "z", chain["shards"], model={"vq_model": {"bogus": 1}})
    with pytest.raises(ValueError, match="not this config's stage-1 model"):   # K=8 stage 2 from a K=4 stage 1
        _train("titok_stage2.yaml", tmp_path / "w", chain["shards"],
               model={"vq_model": {**TINY_VIT, "num_latent_tokens": 8, "pretrained_tokenizer_weight": str(chain["vqgan"])}},
               experiment={"init_weight": str(chain["s1"])})


def test_convert_to_wds_skips_corrupt_images(tmp_path):
    from PIL import Image
    for cls in ("n01", "n02"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "src" / cls / f"{i}.png")
    (tmp_path / "src/n02/bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    res = convert_to_wds.main({"src": str(tmp_path / "src"), "out_dir": str(tmp_path / "out"), "max_skip_rate": 0.5})
    assert res["count"] == 6 and res["classes"] == 2 and res["skipped"]["bad"] == 1
    from shared.data import iter_shard
    labels = sorted(json.loads(s["json"])["label"] for shard in sorted((tmp_path / "out").glob("*.tar"))
                    for s in iter_shard(str(shard), None, {"png", "json", "cls"}))
    assert labels == [0, 0, 0, 1, 1, 1]


def test_gan_losses_match_their_formulas():
    real, fake = torch.tensor([0.5, 2.0, -1.0]), torch.tensor([-2.0, 0.3, 1.5])
    want = 0.5 * (np.mean(np.maximum(0, 1 - real.numpy())) + np.mean(np.maximum(0, 1 + fake.numpy())))
    assert hinge_d_loss(real, fake).item() == pytest.approx(want)
    r, f, er, ef = torch.tensor(0.8), torch.tensor(-0.4), torch.tensor(0.1), torch.tensor(0.3)
    assert lecam_loss(r, f, er, ef).item() == pytest.approx(max(0, 0.8 - 0.3) ** 2 + max(0, 0.1 + 0.4) ** 2)


def test_paper_plan_uses_eight_gpus():
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", "titok"], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    for rule in ("titok_download", "titok_prepare_imagenet", "titok_paper_train", "titok_paper_evaluate_released",
                 "titok_paper_table"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, rule
    train = out.split("rule titok_paper_train:")[1].split("\n\n")[0]
    assert "gpus=8" in train and "nproc_per_node=8" in train and "--backend slurm" in train
    assert "configs/training/TiTok/stage1/titok_b64.yaml" in out and "stage2/titok_b64.yaml" in out


def test_stage1_resumes_from_its_checkpoint(chain, tmp_path):
    import shutil
    run = tmp_path / "s1"
    shutil.copytree(chain["root"] / "s1", run)
    over = {"model": {"vq_model": {**TINY_VIT, "pretrained_tokenizer_weight": str(chain["vqgan"])}}}
    _train("titok_stage1.yaml", run, chain["shards"], training={"max_train_steps": 3}, **over)
    steps = [r["step"] for r in _metrics(run) if "loss" in r]
    assert steps == [1, 2, 3]          # steps 1-2 from the first run, only step 3 trained now
    assert (run / "checkpoints").is_dir()


def test_stage2_two_process_gloo(chain, tmp_path):
    """DDP (torchrun through shared.launch, gloo on CPU): tokenizer and discriminator wrapped, GAN + LeCam on."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = tmp_path / "s2ddp"
    py = sys.executable
    args = [f"{CFG / 'titok_stage2.yaml'}", "scale=tiny", "threads=1", "training.max_train_steps=2",
            "training.per_gpu_batch_size=4", "experiment.save_every=0", "experiment.log_every=1",
            f"experiment.output_dir={run}", f"experiment.init_weight={chain['s1']}",
            f"dataset.params.train_shards_path_or_url={chain['shards']}", "losses.discriminator_start=0",
            f"losses.perceptual_loss=digits:{chain['feats']}",
            f"model.vq_model.pretrained_tokenizer_weight={chain['vqgan']}"] + [
            f"model.vq_model.{k}={v}" for k, v in TINY_VIT.items()]
    r = subprocess.run([py, "-m", "shared.launch", "--nproc-per-node", "2", "--", py,
                        "projects/titok_rar/train_tokenizer.py", *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _metrics(run)
    assert any("d_loss" in row and "gan_loss" in row and "lecam_loss" in row for row in rows)
    assert (run / "final/model.safetensors").is_file()
