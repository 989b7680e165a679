"""TiTok / TA-TiTok / MaskGIT-VQGAN: the released checkpoints' exact names and shapes, the tokenizer interface,
strict loading, clear config errors, and the pretokenized-data format."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from projects.titok_rar import token_data
from projects.titok_rar.image_tokenizers import (RELEASED, MaskGITVQGAN, TATiTok, TiTok, TiTokConfig, build_released,
                                           load_tokenizer, released_config, small_titok_config, small_vqgan_config)
from projects.titok_rar.vqgan import VectorQuantizer

REF = json.loads((Path(__file__).resolve().parents[2] / "shared/reference/titok_rar_checkpoints.json")
                 .read_text())["checkpoints"]
VQGAN_KEY = "maskgit_vqgan_f16_256 (PretrainedTokenizer keys)"


def _names_shapes(model):
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def _groups(model):
    out = {}
    for k, v in model.state_dict().items():
        g = k.split(".")[0]
        out[g] = out.get(g, 0) + v.numel()
    return out


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_tokenizer_matches_reference(name):
    ref = REF[f"tokenizer:{name}.yaml"]
    # the config we build from equals the one the reference lists (every key it gives)
    cfg = TiTokConfig.from_dict({"model": {"vq_model": ref["vq_model"]}})
    assert cfg == released_config(name)
    with torch.device("meta"):
        model = build_released(name)
        from_ref = TiTok(cfg)
    assert _names_shapes(model) == [[n, s] for n, s, _ in ref["state_dict"]]
    assert _names_shapes(from_ref) == _names_shapes(model)
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]
    assert _groups(model) == ref["group_param_counts"]


@pytest.mark.parametrize("name", ["titok_l32", "titok_b64", "titok_s128"])
def test_released_stage1_matches_reference(name):
    ref = REF[f"tokenizer_stage1:{name}.yaml"]
    with torch.device("meta"):
        model = build_released(name, stage=1)
    assert len(model.state_dict()) == ref["n_keys"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]
    assert _groups(model) == ref["group_param_counts"]
    assert not model.outputs_pixels


def test_maskgit_vqgan_matches_reference():
    ref = REF[VQGAN_KEY]
    with torch.device("meta"):
        model = MaskGITVQGAN()
    assert _names_shapes(model) == [[n, s] for n, s, _ in ref["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]
    assert _groups(model) == ref["group_param_counts"]
    conf = model.config.to_dict()
    assert {k: conf[k] for k in ref["conf"]} == ref["conf"]
    assert [model.codebook_size, model.config.z_channels] == ref["codebook"]


def _tiny_models():
    torch.manual_seed(0)
    return {"titok_vq": TiTok(small_titok_config(8)),
            "titok_legacy_stage2": TiTok(small_titok_config(8, legacy=True)),
            "tatitok": TATiTok(small_titok_config(8)),
            "vqgan": MaskGITVQGAN(small_vqgan_config())}


def test_tokenizer_interface_and_roundtrip(tmp_path):
    x = torch.rand(2, 3, 32, 32)
    text = torch.randn(2, 77, 768)
    for name, model in _tiny_models().items():
        model.eval()
        tokens = model.encode(x)
        assert tokens.dtype == torch.long and tokens.shape == (2, model.num_tokens)
        assert int(tokens.min()) >= 0 and int(tokens.max()) < model.codebook_size
        kw = {"text_guidance": text} if name == "tatitok" else {}
        rec = model.decode_tokens(tokens, **kw)
        assert rec.shape == x.shape and float(rec.min()) >= 0.0 and float(rec.max()) <= 1.0
        model.save_pretrained(tmp_path / name)
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["config.json", "model.safetensors"]
        again = load_tokenizer(tmp_path / name)
        assert type(again) is type(model)
        assert torch.equal(again.encode(x), tokens)
        assert torch.equal(again.decode_tokens(tokens, **kw), rec)
    assert (tmp_path / "vqgan").exists() and _tiny_models()["vqgan"].num_tokens == 64


def test_vae_tokenizer_is_continuous():
    model = TiTok(small_titok_config(8, quantize_mode="vae")).eval()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(TypeError, match="encode_latents"):
        model.encode(x)
    z = model.encode_latents(x)
    assert z.shape == (2, 8, 8)
    assert model.decode_tokens(z).shape == x.shape
    _, extra = model(x)
    assert extra["kl"].shape == (2,) and bool((extra["kl"] >= 0).all())


def test_original_config_json_loads_as_titok(tmp_path):
    """The original's config.json (whole training config, no _class_name) builds a TiTok."""
    model = TiTok(small_titok_config(4))
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m/config.json").read_text())
    cfg.pop("_class_name")
    cfg["experiment"] = {"project": "titok", "output_dir": "x"}
    cfg["model"]["vq_model"]["pretrained_tokenizer_weight"] = "maskgit-vqgan-imagenet-f16-256.bin"
    (tmp_path / "m/config.json").write_text(json.dumps(cfg))
    assert type(load_tokenizer(tmp_path / "m")) is TiTok


def test_strict_load_names_the_mismatch(tmp_path):
    TiTok(small_titok_config(8)).save_pretrained(tmp_path / "k8")
    cfg = json.loads((tmp_path / "k8/config.json").read_text())
    cfg["model"]["vq_model"]["num_latent_tokens"] = 4
    (tmp_path / "k8/config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"shape mismatch.*latent_tokens: file \(8, 32\) vs model \(4, 32\)"):
        load_tokenizer(tmp_path / "k8")


@pytest.mark.parametrize("vq, message", [
    ({"bogus": 1}, "model.vq_model: unknown keys \\['bogus'\\]"),
    ({"vit_enc_model_size": "huge"}, "vit_enc_model_size: 'huge'; allowed: tiny, toy, small, base, large"),
    ({"quantize_mode": "fsq"}, "quantize_mode: 'fsq'; allowed: vq, vae"),
    ({"quantize_mode": "vae"}, "is_legacy"),
])
def test_bad_config_is_named(vq, message):
    with pytest.raises(ValueError, match=message):
        TiTokConfig.from_dict({"model": {"vq_model": vq}})


def test_vector_quantizer_matches_brute_force():
    torch.manual_seed(0)
    for l2 in (True, False):
        q = VectorQuantizer(16, 4, commitment_cost=0.25, use_l2_norm=l2)
        z = torch.randn(2, 4, 1, 5, requires_grad=True)
        zq, out = q(z)
        vecs = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
        code = q.embedding.weight.detach()
        if l2:
            vecs, code = torch.nn.functional.normalize(vecs, dim=-1), torch.nn.functional.normalize(code, dim=-1)
        want = torch.cdist(vecs, code).argmin(1)
        assert torch.equal(out["indices"].flatten(), want)
        assert torch.allclose(zq.detach().permute(0, 2, 3, 1).reshape(-1, 4), code[want], atol=1e-6)
        ref_loss = 1.25 * ((code[want] - vecs) ** 2).mean()
        assert torch.allclose(out["quantizer_loss"], ref_loss, atol=1e-6)
        zq.sum().backward()  # straight-through: the gradient reaches the encoder output
        assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_pixel_decoder_unpatchify_matches_einops():
    """The pixel head's (p*p*3, g, g) -> image layout is einops' 'b (p1 p2 c) h w -> b c (h p1) (w p2)'."""
    from einops import rearrange
    model = TiTok(small_titok_config(4)).eval()
    captured = {}
    model.decoder.ffn.register_forward_hook(lambda m, i, o: captured.setdefault("ffn", o))
    conv_in = {}
    model.decoder.conv_out.register_forward_hook(lambda m, i, o: conv_in.setdefault("x", i[0]))
    model.decode_latent(torch.randn(1, 8, 1, 4))
    want = rearrange(captured["ffn"], "b (p1 p2 c) h w -> b c (h p1) (w p2)", p1=4, p2=4)
    assert torch.equal(conv_in["x"], want)


def test_token_data_roundtrip_and_errors(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 300, (6, 2, 8))
    token_data.write_tokens(tmp_path / "t", tokens, np.arange(6), captions=[f"c{i}" for i in range(6)],
                            meta={"codebook_size": 300, "tokenizer": "tok"})
    data = token_data.load_tokens(tmp_path / "t")
    assert data.tokens.dtype == np.uint16 and isinstance(data.tokens, np.memmap)
    assert np.array_equal(data.tokens, tokens) and data.labels.dtype == np.int64
    assert data.meta == {"codebook_size": 300, "tokenizer": "tok", "num_tokens": 8, "crops": 2, "count": 6}
    assert data.captions[5] == "c5" and len(data) == 6 and data.crops == 2
    assert token_data.token_dtype(256) == np.uint8 and token_data.token_dtype(257) == np.uint16
    assert token_data.token_dtype(8192) == np.uint16 and token_data.token_dtype(70000) == np.int32
    np.save(tmp_path / "t/labels.npy", np.arange(5))
    with pytest.raises(ValueError, match=r"labels.npy: shape \(5,\)"):
        token_data.load_tokens(tmp_path / "t")
    np.save(tmp_path / "t/tokens.npy", tokens[:, 0])
    with pytest.raises(ValueError, match=r"tokens.npy: shape \(6, 8\)"):
        token_data.load_tokens(tmp_path / "t")
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 100\)"):
        token_data.write_tokens(tmp_path / "u", tokens, np.arange(6), meta={"codebook_size": 100, "tokenizer": "x"})
    with pytest.raises(FileNotFoundError, match="pretokenize.py"):
        token_data.load_tokens(tmp_path / "missing")


def test_bare_weights_file_with_original_config(tmp_path):
    """The original's inference path: configs/infer/<name>.yaml + tokenizer_<name>.bin (a torch state dict)."""
    model = TiTok(small_titok_config(4)).eval()
    torch.save(model.state_dict(), tmp_path / "tokenizer_tiny.bin")
    yaml_text = json.dumps(model.config.to_dict())  # JSON is YAML; the infer configs' shape: model.vq_model + dataset
    (tmp_path / "tiny.yaml").write_text(yaml_text)
    again = load_tokenizer(tmp_path / "tokenizer_tiny.bin", config=str(tmp_path / "tiny.yaml"))
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(again.encode(x), model.encode(x))
    with pytest.raises(ValueError, match="weights do not match the config"):
        load_tokenizer(tmp_path / "tokenizer_tiny.bin", config=small_titok_config(8).to_dict())
