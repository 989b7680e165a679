"""TA-TiTok training (train_tokenizer.py model.type=tatitok) at tiny scale: a few steps on the digits with the toy
text encoder over their captions, the text guidance saved beside the tokenizer and changing its reconstruction, the
text path in the loss's graph, resume equal to an uninterrupted run, the released configs' architecture on meta,
and bad configs named."""
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from shared.config import ConfigError
from projects.titok_rar import prepare, train_tokenizer
from projects.titok_rar.image_tokenizers import TATiTok, load_tokenizer
from projects.titok_rar.text_guidance import load_text_guidance

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "projects/titok_rar/configs/toy/tatitok.yaml"
TATITOK = REPO / "projects/titok_rar/configs/training/TA-TiTok"
TINY = {"scale": "tiny", "threads": 1,
        "training": {"max_train_steps": 3, "per_gpu_batch_size": 8},
        "experiment": {"save_every": 0, "log_every": 1},
        "model": {"vq_model": {"vit_enc_model_size": "tiny", "vit_dec_model_size": "tiny", "num_latent_tokens": 4,
                               "codebook_size": 32},
                  "text_encoder": {"width": 16, "layers": 1, "heads": 2, "context_length": 8}},
        "losses": {"perceptual_weight": 0.0, "discriminator_start": 1}}


def _train(out, shards, **over):
    cfg = OmegaConf.merge({"config": str(TOY)}, TINY, {"dataset": {"params": {"train_shards_path_or_url": str(shards)}}},
                          over, {"experiment": {"output_dir": str(out)}})
    return train_tokenizer.main(OmegaConf.to_container(cfg))


def _metrics(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def shards(digits_tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("tatitok")
    prepare.main({"scale": "tiny", "digits": str(digits_tiny), "out_dir": str(root / "data")})
    return root / "data/shards/train"


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("tatitok_run") / "run"
    return run, _train(run, shards)


def test_trains_and_saves_the_text_guidance(trained):
    run, final = trained
    tok = load_tokenizer(final)
    assert isinstance(tok, TATiTok) and tok.config.text_conditioned
    # the decoder's text input is the toy encoder's output shape (context 8 x width 16), not CLIP's 77 x 768
    assert (tok.config.text_context_length, tok.config.text_embed_dim) == (8, 16)
    assert tuple(tok.decoder.text_guidance_proj.weight.shape) == (32, 16)
    assert (final / "text_encoder.json").is_file() and (final / "text_encoder.safetensors").is_file()
    rows = [r for r in _metrics(run) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"reconstruction_loss", "quantizer_loss", "codebook_usage"} <= rows[0].keys()
    assert any("d_loss" in r and "gan_loss" in r for r in rows)       # discriminator_start=1
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.model.type == "tatitok" and saved.model.text_encoder.kind == "toy"


def test_the_text_changes_the_reconstruction(trained, shards):
    _, final = trained
    tok, text = load_tokenizer(final), load_text_guidance(final)
    captions = ["a red handwritten three", "a blue handwritten seven"]
    g = text(captions)
    assert g.shape == (2, 8, 16) and not torch.allclose(g[0], g[1])
    # the saved encoder is the one trained with: a fresh load gives the same guidance
    torch.testing.assert_close(load_text_guidance(final)(captions), g, rtol=0, atol=0)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = tok.encode(images)
    same = tok.decode_tokens(tokens, text([captions[0]] * 2))
    other = tok.decode_tokens(tokens, text([captions[1]] * 2))
    assert (same - other).abs().max() > 1e-4                          # other words, other pixels
    torch.testing.assert_close(tok.decode_tokens(tokens, text([captions[0]] * 2)), same)
    with pytest.raises(ValueError, match="needs text_guidance"):
        tok.decode_tokens(tokens)
    # and the reconstruction loss reaches the text path: the projection of the guidance gets a gradient
    tok.train()
    recon, q = tok(images, g)
    (torch.mean((recon - images) ** 2) + q["quantizer_loss"]).backward()
    assert tok.decoder.text_guidance_proj.weight.grad.abs().sum() > 0


def test_resume_equals_an_uninterrupted_run(trained, shards, tmp_path):
    run, final = trained
    part = tmp_path / "part"
    _train(part, shards, training={"max_train_steps": 2})
    _train(part, shards)                                               # resumes at step 2, trains step 3
    assert [r["step"] for r in _metrics(part) if "loss" in r] == [1, 2, 3]
    want = load_tokenizer(final).state_dict()
    got = load_tokenizer(part / "final").state_dict()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


def test_caption_dropout_is_a_seeded_draw_per_step():
    caps = [f"a red handwritten {i}" for i in range(2000)]
    assert train_tokenizer.drop_captions(caps, 0.0, 0, 5) is caps                   # the released recipe
    a = train_tokenizer.drop_captions(caps, 0.5, 0, 5)
    dropped = [c == "" for c in a]
    assert 0.45 < sum(dropped) / len(caps) < 0.55                                  # ~p of them, binomial sd 0.011
    assert all(x in ("", c) for x, c in zip(a, caps))
    # the same (seed, step, rank) drops the same captions, so a resumed run repeats them; another step, seed or
    # rank drops others
    assert train_tokenizer.drop_captions(caps, 0.5, 0, 5) == a
    for other in ((0, 6, 0), (1, 5, 0), (0, 5, 1)):
        assert train_tokenizer.drop_captions(caps, 0.5, *other) != a, other


def test_caption_dropout_trains_another_tokenizer(trained, shards, tmp_path):
    _, final = trained
    dropped = _train(tmp_path / "drop", shards, model={"text_guidance_dropout": 0.5})
    assert OmegaConf.load(tmp_path / "drop/config.yaml").model.text_guidance_dropout == 0.5
    want, got = load_tokenizer(final).state_dict(), load_tokenizer(dropped).state_dict()
    assert want.keys() == got.keys()
    assert any(not torch.equal(want[k], got[k]) for k in want)   # same seed and data, other captions seen


def test_released_configs_build_on_meta():
    from projects.titok_rar.titok import TiTokConfig
    for name, k, mode in (("tatitok_bl32_vq", 32, "vq"), ("tatitok_bl128_vq", 128, "vq"), ("tatitok_bl32_vae", 32, "vae")):
        cfg = train_tokenizer.resolve(train_tokenizer.Config, train_tokenizer.with_config_file(
            {"config": str(TATITOK / f"{name}.yaml"), "scale": "paper"}), train_tokenizer.PRESETS)
        assert train_tokenizer.stage_of(cfg) == "tatitok"
        assert cfg.losses.perceptual_loss.startswith("lpips-convnext_s-1.0-0.1:") and cfg.losses.perceptual_weight == 1.1
        assert cfg.model.text_encoder.model_name == "ViT-L-14-336-quickgelu" and cfg.dataset.params.caption_key == "txt"
        vq = dict(OmegaConf.to_container(cfg.model.vq_model), image_size=256)
        with torch.device("meta"):
            model = TATiTok(TiTokConfig.from_dict(vq))
        assert model.num_tokens == k and model.config.quantize_mode == mode
        sd = model.state_dict()
        assert tuple(sd["decoder.text_guidance_proj.weight"].shape) == (1024, 768)    # CLIP L/14 -> ViT-L width
        assert tuple(sd["decoder.text_guidance_positional_embedding"].shape) == (77, 1024)
        assert tuple(sd["encoder.positional_embedding"].shape) == (257, 768)          # ViT-B encoder, 16x16 grid
        if mode == "vq":
            assert tuple(sd["quantize.embedding.weight"].shape) == (8192, 64)


def test_bad_tatitok_configs_are_named(shards, tmp_path):
    with pytest.raises(ConfigError, match="TA-TiTok training is the single-stage recipe"):
        _train(tmp_path / "a", shards, model={"vq_model": {"is_legacy": True}})
    with pytest.raises(ConfigError, match="text_encoder.train=true"):
        _train(tmp_path / "b", shards, model={"text_encoder": {"train": True}})
    with pytest.raises(ConfigError, match="model.text_encoder: model.text_encoder.pretrained"):
        _train(tmp_path / "c", shards, model={"text_encoder": {"kind": "open_clip", "pretrained": ""}})
    with pytest.raises(ConfigError, match=r"model.text_guidance_dropout=1.0: a probability in \[0, 1\)"):
        _train(tmp_path / "e", shards, model={"text_guidance_dropout": 1.0})
    with pytest.raises(ConfigError, match="text_guidance_dropout=0.5: only TA-TiTok"):
        _train(tmp_path / "f", shards, model={"type": "titok", "text_guidance_dropout": 0.5})
    with pytest.raises(ConfigError, match="caption_key='txt'"):
        _train(tmp_path / "d", shards, dataset={"params": {"caption_key": "txt"}})
    assert not (tmp_path / "a").exists()


def test_open_clip_guidance_is_the_text_towers_final_states(tmp_path):
    """The paper path (kind=open_clip) on a tiny registered open_clip config with random weights saved to a file:
    the guidance equals the original's computation (token + positional embedding, every text block, ln_final;
    utils/train_utils.py train_one_epoch) on the open_clip model itself; 77 tokens; nothing but the spec is saved."""
    import open_clip

    from projects.titok_rar.text_guidance import build_text_guidance

    arch = {"embed_dim": 16, "quick_gelu": True,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (tmp_path / "titok-test-tiny-clip.json").write_text(json.dumps(arch))
    open_clip.add_model_config(tmp_path / "titok-test-tiny-clip.json")
    torch.manual_seed(0)
    clip = open_clip.create_model("titok-test-tiny-clip").eval()
    torch.save(clip.state_dict(), tmp_path / "clip.bin")
    text = build_text_guidance({"kind": "open_clip", "model_name": "titok-test-tiny-clip",
                                "pretrained": str(tmp_path / "clip.bin")})
    assert (text.context_length, text.width) == (77, 32)
    captions = ["a red handwritten three", "a photo of a cat"]
    with torch.no_grad():
        ids = open_clip.get_tokenizer("titok-test-tiny-clip")(captions)
        x = clip.token_embedding(ids) + clip.positional_embedding
        want = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
    torch.testing.assert_close(text(captions), want)
    text.save(tmp_path / "final")
    assert not (tmp_path / "final/text_encoder.safetensors").exists()   # CLIP's weights stay the named file
    torch.testing.assert_close(load_text_guidance(tmp_path / "final")(captions), want)
    # the released configs' architecture: OpenAI's weights need QuickGELU, 77 x 768 text states
    paper = open_clip.get_model_config("ViT-L-14-336-quickgelu")
    assert paper["quick_gelu"] is True and paper["text_cfg"]["width"] == 768 and paper["text_cfg"]["context_length"] == 77
