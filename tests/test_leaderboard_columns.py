"""The leaderboard's parameters / seconds-per-image / NFE columns for every project's rows: the sample steps record
them in samples.json (dmd2 teacher and generator, titok_rar generators, sd_flux_lab make_samples, glide), the
tokenizer evaluation in its info, shared/evaluate.py carries samples.json into the evaluation JSON, and
shared/tables.py kind=leaderboard shows them (n/a for real-vs-real rows)."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from projects.dmd2.tiny import save_tiny_edm

    root = tmp_path_factory.mktemp("lb")
    save_tiny_edm(root / "teacher", seed=0)
    (root / "prompts.txt").write_text("a red handwritten seven\na blue handwritten one\n")
    return root


def _teacher_sample(root, out, **kw):
    from projects.dmd2 import sample

    cfg = {"scale": "tiny", "mode": "teacher", "backbone": "edm", "teacher": str(root / "teacher"),
           "prompts": str(root / "prompts.txt"), "out_dir": str(out), "steps": 2, "num_images": 3, "batch_size": 2,
           **kw}
    sample.main(cfg)
    record = out / "samples.json"
    return json.loads(record.read_text()) if record.is_file() else None  # None: shards still pending


def test_dmd2_sample_records_parameters_seconds_and_nfe(teacher, tmp_path):
    from projects.dmd2.edm import build_edm

    weights = load_file(str(teacher / "teacher" / "model.safetensors"))
    info = _teacher_sample(teacher, tmp_path / "g1")
    params = sum(p.numel() for p in build_edm("digits").parameters())  # the teacher's architecture, built anew
    assert info["parameters"] == params and params < sum(v.numel() for v in weights.values())  # buffers left out
    assert info["nfe"] == 2 and 0 < info["seconds_per_image"] < 60  # Euler: one network row per step and image
    assert _teacher_sample(teacher, tmp_path / "g2", guidance_scale=2.0)["nfe"] == 4  # guidance counts twice
    # two shards: the time is summed over both shard files, and a re-run that makes nothing keeps it
    assert _teacher_sample(teacher, tmp_path / "sh", num_shards=2, shard_index=0) is None
    _teacher_sample(teacher, tmp_path / "sh", num_shards=2, shard_index=1)
    timing = [json.loads((tmp_path / f"sh/timing.shard{k}.json").read_text()) for k in (0, 1)]
    assert [t["images"] for t in timing] == [2, 1]
    sharded = json.loads((tmp_path / "sh/samples.json").read_text())
    assert sharded["seconds_per_image"] == pytest.approx(sum(t["seconds"] for t in timing) / 3, rel=1e-12)
    again = _teacher_sample(teacher, tmp_path / "sh", num_shards=2, shard_index=0)
    assert again["seconds_per_image"] == sharded["seconds_per_image"] and again["nfe"] == 2


def test_evaluate_carries_samples_json_and_the_leaderboard_shows_every_column(teacher, digits_tiny, tmp_path):
    from shared import evaluate, tables
    from shared.toy import features

    torch.manual_seed(0)
    net = tmp_path / "features.safetensors"
    features.save(features.DigitsNet(width=8, feature_dim=6).eval(), net)
    s = tmp_path / "results/tiny/dmd2/samples/teacher"
    info = _teacher_sample(teacher, s, num_images=8)  # more images than the features' 6 dimensions
    common = {"scale": "tiny", "extractor": f"digits:{net}", "metrics": ["fd"], "batch_size": 32,
              "reference": str(digits_tiny / "train"), "reference_stats": str(tmp_path / "ref.npz")}
    e = evaluate.main({**common, "images": str(s), "experiment": "teacher_euler", "checkpoint": "teacher",
                       "sampler": "edm_euler", "steps": 2, "out": str(tmp_path / "results/tiny/dmd2/eval/t.json")})
    assert {k: e["info"][k] for k in ("parameters", "seconds_per_image", "nfe")} == \
        {k: info[k] for k in ("parameters", "seconds_per_image", "nfe")}
    real = evaluate.main({**common, "images": str(digits_tiny / "test"), "experiment": "real_test_vs_train",
                          "checkpoint": "none", "sampler": "none", "steps": 0,
                          "out": str(tmp_path / "results/tiny/metrics/digits/real.json")})
    assert real["info"] == {}
    md = tables.main({"kind": "leaderboard", "scale": "tiny", "title": "LB", "out_md": str(tmp_path / "lb.md"),
                      "inputs": [str(tmp_path / "results/tiny/**/eval/*.json"),
                                 str(tmp_path / "results/tiny/metrics/digits/*.json")]})
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((tmp_path / "lb.csv").read_text()))}
    t = rows["teacher_euler"]
    assert (int(t["parameters"]), float(t["seconds_per_image"]), float(t["nfe"]), t["project"]) == \
        (info["parameters"], info["seconds_per_image"], 2.0, "dmd2")
    r = rows["real_test_vs_train"]
    assert (r["parameters"], r["seconds_per_image"]) == ("n/a", "n/a") and r["fd"] != ""
    assert "| real_test_vs_train |" in md and "| n/a | n/a |" in md and "n/a = no model sampled" in md


def test_titok_generator_sample_records_parameters_and_seconds(tmp_path):
    from projects.titok_rar import sample
    from projects.titok_rar.rar import RAR, rar_config
    from projects.titok_rar.vqgan import MaskGITVQGAN, VQGANConfig

    torch.manual_seed(0)
    MaskGITVQGAN(VQGANConfig(channel_mult=(1, 2, 2), num_res_blocks=1, hidden_channels=16, z_channels=8,
                             resolution=16, codebook_size=16, norm_groups=4)).save_pretrained(tmp_path / "vq")
    g = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_seq_len=16,
             condition_num_classes=80)
    model = RAR(rar_config(codebook_size=16, **g))
    torch.save(model.state_dict(), tmp_path / "rar_tiny.bin")
    out = sample.main({"config": "projects/titok_rar/configs/generator/rar.yaml", "scale": "tiny", "generator": "rar",
                       "experiment": {"output_dir": str(tmp_path / "s"),
                                      "generator_checkpoint": str(tmp_path / "rar_tiny.bin"),
                                      "tokenizer_checkpoint": str(tmp_path / "vq")},
                       "model": {"vq_model": {"codebook_size": 16, "num_latent_tokens": 16}, "generator": g},
                       "num_images": 4, "write_npz": False})
    info = json.loads((out / "samples.json").read_text())
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["seconds_per_image"] == pytest.approx(1 / info["images_per_sec"], rel=1e-12)
    assert info["nfe"] > 0


def test_sd_flux_lab_make_samples_records_the_unet(tmp_path):
    from projects.dmd2.tiny import tiny_pipeline
    from projects.sd_flux_lab import make_samples

    pipe = tiny_pipeline("sd15", seed=1)
    pipe.save_pretrained(tmp_path / "pipe")
    make_samples.main({"scale": "tiny", "pipeline": str(tmp_path / "pipe"), "prompts": ["a red handwritten one"],
                       "save_images": True, "out_dir": str(tmp_path / "out")})
    info = json.loads((tmp_path / "out/images/samples.json").read_text())
    assert info["parameters"] == sum(p.numel() for p in pipe.unet.parameters())
    assert info["num_images"] == 2 and info["steps"] == 2 and 0 < info["seconds_per_image"] < 60
    assert len(list((tmp_path / "out/images").glob("*.png"))) == 2


def test_titok_tokenizer_evaluation_records_its_size_and_time(digits_tiny, tmp_path):
    from projects.titok_rar import evaluate, prepare
    from projects.titok_rar.vqgan import MaskGITVQGAN, VQGANConfig
    from shared.toy import features

    prepare.main({"scale": "tiny", "digits": str(digits_tiny), "out_dir": str(tmp_path / "data")})
    torch.manual_seed(0)
    features.save(features.DigitsNet(width=8, feature_dim=6).eval(), tmp_path / "f.safetensors")
    vq = MaskGITVQGAN(VQGANConfig(channel_mult=(1, 2, 2), num_res_blocks=1, hidden_channels=16, z_channels=8,
                                  resolution=32, codebook_size=16, norm_groups=4))
    vq.save_pretrained(tmp_path / "vq")
    res = evaluate.main({"scale": "tiny", "tokenizer": str(tmp_path / "vq"), "experiment": "vqgan", "metrics": "rfid",
                         "data": str(tmp_path / "data/shards/test"), "extractor": f"digits:{tmp_path}/f.safetensors",
                         "out": str(tmp_path / "eval/vq.json")})
    assert res["info"]["parameters"] == sum(p.numel() for p in vq.parameters())
    assert res["info"]["seconds_per_image"] == pytest.approx(
        1 / res["encode_images_per_sec"] + 1 / res["decode_images_per_sec"], rel=1e-9)
    assert json.loads((tmp_path / "eval/vq.json").read_text())["info"] == res["info"]


def test_glide_sample_records_parameters_and_seconds(digits_tiny, tmp_path):
    from projects.glide_finetune import sample as sample_step
    from projects.glide_finetune import train as train_step
    from projects.glide_finetune.tokenizer import main as tokenizer_main

    threads = torch.get_num_threads()
    tokenizer_main({"scale": "tiny", "captions": str(digits_tiny / "train"), "out_dir": str(tmp_path / "tok")})
    train_step.main({"scale": "tiny", "data_dir": str(digits_tiny / "train"), "tokenizer": str(tmp_path / "tok"),
                     "run_dir": str(tmp_path / "base")})
    (tmp_path / "p.txt").write_text("a red handwritten seven\na blue handwritten one\n")
    common = {"scale": "tiny", "base": str(tmp_path / "base"), "prompts": str(tmp_path / "p.txt"), "num_images": 3,
              "steps": "2", "sampler": "euler_a", "batch_size": 2, "out_dir": str(tmp_path / "s"), "num_shards": 2}
    for shard in (0, 1):
        sample_step.main({**common, "shard_index": shard})
    torch.set_num_threads(threads)  # the tiny presets set 1 thread in this process
    info = json.loads((tmp_path / "s/samples.json").read_text())
    weights = load_file(str(tmp_path / "base/model.safetensors"))
    assert info["parameters"] == sum(v.numel() for v in weights.values())  # the base network's weights
    timing = [json.loads((tmp_path / f"s/timing.shard{k}.json").read_text()) for k in (0, 1)]
    assert info["seconds_per_image"] == pytest.approx(sum(t["seconds"] for t in timing) / 3, rel=1e-12)
