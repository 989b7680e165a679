"""sd_flux_lab FLUX.2: tiny pipeline build/save/load offline, flow-matching fine-tuning (full, resume, LoRA)."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from projects.sd_flux_lab import flux, train_flux


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return flux.main({"scale": "tiny", "out_dir": str(tmp_path_factory.mktemp("flux") / "flux2")})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two folder-prompt classes of 4 random 40x40 images each (the folder name is the caption)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name in ("red_seven", "blue_two"):
        (root / name).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _generate(pipe, info, prompt="a red seven", seed=0):
    return pipe(prompt=prompt, height=32, width=32, num_inference_steps=2, guidance_scale=4.0, output_type="np",
                generator=torch.Generator().manual_seed(seed),
                text_encoder_out_layers=tuple(info["text_encoder_out_layers"]),
                max_sequence_length=info["max_sequence_length"]).images[0]


def test_tiny_flux2_saves_and_loads_offline_with_identical_outputs(flux_dir):
    pipe, info = flux.load_flux2(flux_dir)
    assert type(pipe).__name__ == "Flux2Pipeline"
    assert info["text_encoder_out_layers"] == [1, 2, 3] and info["sample_size"] == 32
    assert pipe.transformer.config.joint_attention_dim == 3 * pipe.text_encoder.config.text_config.hidden_size
    # the tokenizer is a real BPE: more than a handful of tokens, and the chat template carries the prompt
    tok = pipe.tokenizer
    assert 300 < len(tok) <= 1024
    conv = [[{"role": "system", "content": [{"type": "text", "text": "sys"}]},
             {"role": "user", "content": [{"type": "text", "text": "a red handwritten seven"}]}]]
    ids = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_tensors="pt", padding="max_length",
                                  truncation=True, max_length=64)["input_ids"]
    assert ids.shape == (1, 64)
    assert "a red handwritten seven[/INST]" in tok.decode(ids[0], skip_special_tokens=False)
    a = _generate(pipe, info)
    again, _ = flux.load_flux2(flux_dir)
    np.testing.assert_array_equal(a, _generate(again, info))
    assert a.shape == (32, 32, 3)
    assert np.abs(a - _generate(pipe, info, "a blue handwritten two")).max() > 1e-4  # the prompt matters


def test_check_folder_names_what_is_wrong(tmp_path, flux_dir):
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        flux.check_folder(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="expected 'Flux2Pipeline'"):
        flux.check_folder(tmp_path)
    report = flux.main({"scale": "paper", "source": str(flux_dir)})
    assert report["components"]["transformer"] == "Flux2Transformer2DModel"


def test_timestep_sampling_and_shift():
    cfg = train_flux.resolve(train_flux.Config, {"scale": "tiny"}, train_flux.PRESETS)
    g = torch.Generator().manual_seed(0)
    cfg.shift = "none"
    plain = train_flux.sample_timesteps(4000, cfg, 1024, g)
    assert 0 < plain.min() and plain.max() < 1 and abs(plain.mean() - 0.5) < 0.02  # logit-normal(0, 1)
    cfg.shift = "fixed"
    cfg.shift_value = 3.0
    shifted = train_flux.sample_timesteps(4000, cfg, 1024, torch.Generator().manual_seed(0))
    torch.testing.assert_close(shifted, 3 * plain / (1 + 2 * plain))
    cfg.shift = "auto"  # more tokens -> larger mu -> noisier training timesteps, as at sampling time
    small = train_flux.sample_timesteps(4000, cfg, 64, torch.Generator().manual_seed(0))
    large = train_flux.sample_timesteps(4000, cfg, 4096, torch.Generator().manual_seed(0))
    assert plain.mean() < small.mean() < large.mean()
    cfg.timestep_sampling = "cosine"
    with pytest.raises(ValueError, match="timestep_sampling"):
        train_flux.sample_timesteps(2, cfg, 64)


def _train(flux_dir, data_dir, run_dir, **kw):
    return train_flux.main({"scale": "tiny", "pipeline": str(flux_dir), "data_dir": str(data_dir),
                            "run_dir": str(run_dir), "progress": False, **kw})


def test_full_finetune_trains_only_the_transformer_and_resumes_exactly(flux_dir, data_dir, tmp_path):
    out = _train(flux_dir, data_dir, tmp_path / "full", max_steps=4)
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["lr"] == 1e-4 for r in rows if "loss" in r)
    base, info = flux.load_flux2(flux_dir)
    tuned, tuned_info = flux.load_flux2(out["pipeline"])
    assert tuned_info == info
    changed = [n for n, p in tuned.transformer.state_dict().items()
               if not torch.equal(p, base.transformer.state_dict()[n])]
    assert len(changed) > 10
    for part in ("vae", "text_encoder"):  # frozen
        for n, p in getattr(tuned, part).state_dict().items():
            assert torch.equal(p, getattr(base, part).state_dict()[n]), f"{part}.{n} changed"
    # stop at 2, start the same command with max_steps=4: the same weights as the uninterrupted run
    _train(flux_dir, data_dir, tmp_path / "split", max_steps=2)
    _train(flux_dir, data_dir, tmp_path / "split", max_steps=4)
    a = load_file(tmp_path / "full" / "transformer" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "split" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_adapter_is_saved_alone_and_loads_into_the_base_pipeline(flux_dir, data_dir, tmp_path):
    out = _train(flux_dir, data_dir, tmp_path / "lora", lora=True, lora_rank=4, max_steps=3, lr=1e-2)
    files = sorted(p.name for p in (tmp_path / "lora" / "lora").iterdir())
    assert files == ["adapter_info.json", "pytorch_lora_weights.safetensors"]
    saved = load_file(tmp_path / "lora" / "lora" / "pytorch_lora_weights.safetensors")
    assert saved and all("lora_A" in k or "lora_B" in k for k in saved)
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in saved.items())  # B starts at zero: it trained
    pipe, info = flux.load_flux2(flux_dir)
    before = _generate(pipe, info)
    pipe.load_lora_weights(out["lora"])
    after = _generate(pipe, info)
    assert np.abs(after - before).max() > 1e-4
    assert not (tmp_path / "lora" / "transformer").exists()  # the base weights are not copied
