"""TA-TiTok after training, at tiny scale: evaluate.py reconstructs each image with its caption's text guidance (the
encoder saved beside the tokenizer) and writes TiTok's metrics; pretokenize.py writes MaskGen's token folder with
it; sample.py decodes a tiny MaskGen's tokens with that guidance; the open_clip architecture defaults agree."""
import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from shared.config import ConfigError
from shared.data import ResumableLoader
from projects.titok_rar import evaluate, prepare, pretokenize, sample, train_generator, train_tokenizer
from projects.titok_rar.data import image_source, to_unit
from projects.titok_rar.image_tokenizers import TATiTok, load_tokenizer
from projects.titok_rar.text_guidance import build_text_guidance, load_text_guidance
from projects.titok_rar.token_data import load_tokens

REPO = Path(__file__).resolve().parents[1]
TT = REPO / "projects/titok_rar"
TINY = {"scale": "tiny", "threads": 1, "training": {"max_train_steps": 3, "per_gpu_batch_size": 8},
        "experiment": {"save_every": 0, "log_every": 1},
        "model": {"vq_model": {"vit_enc_model_size": "tiny", "vit_dec_model_size": "tiny", "num_latent_tokens": 4,
                               "codebook_size": 32},
                  "text_encoder": {"width": 16, "layers": 1, "heads": 2, "context_length": 8}},
        "losses": {"perceptual_weight": 0.0, "discriminator_start": 1}}


@pytest.fixture(scope="module")
def chain(digits_tiny, tmp_path_factory):
    """digits -> shards -> TA-TiTok (3 steps) and the digits feature net (the toy scale's FD extractor)."""
    from shared.toy import train_features
    root = tmp_path_factory.mktemp("tatitok_eval")
    prepare.main({"scale": "tiny", "digits": str(digits_tiny), "out_dir": str(root / "data")})
    train_features.main({"scale": "tiny", "data_dir": str(digits_tiny), "out_dir": str(root / "feat")})
    cfg = OmegaConf.merge({"config": str(TT / "configs/toy/tatitok.yaml")}, TINY,
                          {"dataset": {"params": {"train_shards_path_or_url": str(root / "data/shards/train")}},
                           "experiment": {"output_dir": str(root / "run")}})
    final = train_tokenizer.main(OmegaConf.to_container(cfg))
    return {"root": root, "tok": final, "feats": root / "feat/features.safetensors",
            "train": root / "data/shards/train", "test": root / "data/shards/test"}


def _png(path):
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255.0


def test_evaluate_decodes_with_each_caption(chain):
    root, final = chain["root"], chain["tok"]
    out = root / "eval/tatitok.json"
    res = evaluate.main({"scale": "tiny", "tokenizer": str(final), "experiment": "tatitok", "data": str(chain["test"]),
                         "extractor": f"digits:{chain['feats']}", "out": str(out)})
    saved = json.loads(out.read_text())
    got = {e["metric"]: e["value"] for e in saved["metrics"]}
    assert {"rfid", "psnr", "ssim", "codebook_usage", "codebook_perplexity", "tokens_per_image",
            "encode_images_per_sec", "decode_images_per_sec"} <= got.keys()
    assert got["tokens_per_image"] == 4 and got["rfid"] >= 0 and 0 < got["codebook_usage"] <= 1
    assert 0 < got["psnr"] < 60 and -1 <= got["ssim"] <= 1 and got["decode_images_per_sec"] > 0
    assert saved["num_reconstructed"] == 32 and saved["tokenizer_class"] == "TATiTok"
    assert saved["text_guidance"]["kind"] == "toy" and saved["text_guidance"]["folder"] == str(final)
    assert res["text_guidance"] == saved["text_guidance"] and (root / "eval/tatitok_grid.png").is_file()
    # each stored reconstruction is the tokenizer's decoding of that image with its own caption's guidance
    tok, text = load_tokenizer(final), load_text_guidance(final)
    batch = next(iter(ResumableLoader(image_source(str(chain["test"]), 32), 4, shuffle=False)))
    x, captions = to_unit(batch["image"]), [str(c) for c in batch["caption"]]
    assert len(set(captions)) > 1 and all(c.startswith("a ") for c in captions)
    tokens = tok.encode(x)
    own = tok.decode_tokens(tokens, text(captions))
    other = tok.decode_tokens(tokens, text(captions[1:] + captions[:1]))
    off = []
    for i, key in enumerate(batch["key"]):
        rec = _png(root / "eval/tatitok/recon" / f"{str(key).replace('/', '_')}.png")
        assert (rec - own[i]).abs().max() <= 1 / 255 + 1e-6
        off.append((rec - other[i]).abs().max().item())
        torch.testing.assert_close(_png(root / "eval/tatitok/originals" / f"{str(key).replace('/', '_')}.png"), x[i])
    assert max(off) > 2 / 255, off                             # another caption would have given other pixels
    # PSNR is the mean over pairs of 10 log10(1 / MSE) of the stored PNGs
    names = sorted(p.name for p in (root / "eval/tatitok/recon").glob("*.png"))
    psnr = np.mean([10 * np.log10(1 / ((_png(root / "eval/tatitok/recon" / n) -
                                        _png(root / "eval/tatitok/originals" / n)) ** 2).mean().item())
                    for n in names])
    assert got["psnr"] == pytest.approx(psnr, rel=1e-4)
    # token_swap_change: the first batch (16 at tiny), each image decoded with the next one's tokens, own caption
    first = next(iter(ResumableLoader(image_source(str(chain["test"]), 32), 16, shuffle=False)))
    x16, caps16 = to_unit(first["image"]), [str(c) for c in first["caption"]]
    with torch.no_grad():
        t16, g16 = tok.encode(x16), text(caps16)
        rec16 = tok.decode_tokens(t16, g16).clamp(0, 1)
        swapped = tok.decode_tokens(t16.roll(1, 0), g16).clamp(0, 1)
    want = ((swapped - rec16) ** 2).mean() / ((x16 - x16.roll(1, 0)) ** 2).mean()
    assert got["token_swap_change"] == pytest.approx(want.item(), rel=1e-4)


class _FollowsTokens(torch.nn.Module):
    """'Tokens' are the images themselves: the decode is exactly what the tokens say."""
    def decode_tokens(self, tokens, guidance=None):
        return tokens


class _IgnoresTokens(torch.nn.Module):
    """The decode is the caption's guidance alone (the toy TA-TiTok's collapse, in its purest form)."""
    def decode_tokens(self, tokens, guidance=None):
        return guidance


def test_token_swap_change_tells_a_decoder_that_ignores_its_tokens():
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert evaluate.token_swap_change(_FollowsTokens(), x, x, x) == pytest.approx(1.0, rel=1e-6)
    drawn = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert evaluate.token_swap_change(_IgnoresTokens(), x, x, drawn, guidance=drawn) == 0.0
    # half of each decode from the tokens, half from the caption: the change is a quarter of the originals'
    mixed = type("Mixed", (torch.nn.Module,), {"decode_tokens": lambda self, t, g=None: 0.5 * t + 0.5 * g})()
    change = evaluate.token_swap_change(mixed, x, x, 0.5 * x + 0.5 * drawn, guidance=drawn)
    assert change == pytest.approx(0.25, rel=1e-5)


def test_evaluate_names_missing_or_mismatched_guidance(chain, tmp_path):
    common = {"scale": "tiny", "tokenizer": str(chain["tok"]), "experiment": "x", "data": str(chain["test"]),
              "extractor": f"digits:{chain['feats']}"}
    bare = tmp_path / "bare"
    shutil.copytree(chain["tok"], bare)
    (bare / "text_encoder.json").unlink()
    with pytest.raises(ConfigError, match="tokenizer=.*bare.*no text_encoder.json"):
        evaluate.main({**common, "tokenizer": str(bare), "out": str(tmp_path / "a.json")})
    build_text_guidance({"kind": "toy", "width": 8, "layers": 1, "heads": 2, "context_length": 8}).save(tmp_path / "w8")
    with pytest.raises(ConfigError, match=r"text_guidance=.*w8.*8 x 8 .* reads 8 x 16"):
        evaluate.main({**common, "text_guidance": str(tmp_path / "w8"), "out": str(tmp_path / "b.json")})
    with pytest.raises(ValueError, match="caption_key='txt'"):
        evaluate.main({**common, "caption_key": "txt", "out": str(tmp_path / "c.json")})
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "c.json").exists()


@pytest.fixture(scope="module")
def tokens(chain):
    return pretokenize.main({"scale": "tiny", "tokenizer": str(chain["tok"]), "data": str(chain["train"]),
                             "out_dir": str(chain["root"] / "tokens/tatitok")})


def test_pretokenize_writes_maskgens_token_folder(chain, tokens, tmp_path):
    data = load_tokens(tokens)
    assert data.tokens.shape == (48, 4) and data.captions is not None and len(data.captions) == 48
    meta = json.loads((Path(tokens) / "meta.json").read_text())
    assert meta["tokenizer_class"] == "TATiTok" and meta["text_guidance"] == str(chain["tok"])
    assert meta["codebook_size"] == 32
    tok = load_tokenizer(chain["tok"])
    batch = next(iter(ResumableLoader(image_source(str(chain["train"]), 32), 8, shuffle=False)))
    assert np.array_equal(data.tokens[:8], tok.encode(to_unit(batch["image"])).numpy())   # encoding needs no text
    assert data.captions[:8] == [str(c) for c in batch["caption"]]
    with pytest.raises(ConfigError, match="captions=false.*TA-TiTok"):
        pretokenize.main({"scale": "tiny", "tokenizer": str(chain["tok"]), "data": str(chain["train"]),
                          "out_dir": str(tmp_path / "t"), "captions": False})


def test_sample_decodes_maskgen_tokens_with_the_tokenizers_guidance(chain, tokens, tmp_path):
    run = tmp_path / "maskgen"
    train_generator.main({"config": str(TT / "configs/generator/tiny_maskgen.yaml"), "scale": "tiny",
                          "progress": False, "dataset": {"params": {"pretokenization": str(tokens)}},
                          "experiment": {"output_dir": str(run)}})
    # no tokenizer=: the one recorded in the token folder the generator was trained from (the TA-TiTok)
    cfg = {"config": str(TT / "configs/generator/tiny_maskgen.yaml"), "scale": "tiny", "checkpoint": str(run),
           "num_images": 4, "out_dir": str(tmp_path / "samples")}
    out = sample.main(cfg)
    info = json.loads((out / "samples.json").read_text())
    assert info["tokenizer"] == str(chain["tok"]) and info["text_guidance"]["kind"] == "toy"
    assert info["text_guidance"]["width"] == 16 and info["num_images"] == 4
    # the images are the generator's tokens decoded with the TA-TiTok's own text encoder on each prompt
    loaded = sample.load_model(sample.resolve(sample.SampleConfig, sample.with_config_file(cfg), sample.PRESETS),
                               torch.device("cpu"))
    kw, _ = sample.sampling_settings("maskgen", sample.resolve(sample.SampleConfig, sample.with_config_file(cfg),
                                                               sample.PRESETS), loaded.model)
    prompts = sample.prompts_of(sample.resolve(sample.SampleConfig, cfg, sample.PRESETS))[:4]
    toks = sample.generate_batch(loaded, "maskgen", kw, [0, 1, 2, 3], prompts, [0, 1, 2, 3], torch.device("cpu"))
    tok, text = load_tokenizer(chain["tok"]), load_text_guidance(chain["tok"])
    want = sample.to_uint8(tok.decode_tokens(toks, text(prompts)))
    for i in range(4):
        assert np.array_equal(np.asarray(Image.open(out / f"{i:06d}.png")), want[i])
        assert (out / f"{i:06d}.txt").read_text().strip() == prompts[i]
    # a TA-TiTok without its text_encoder.json and a MaskGen with the toy text encoder: no guidance, named early
    bare = tmp_path / "bare"
    shutil.copytree(chain["tok"], bare)
    (bare / "text_encoder.json").unlink()
    with pytest.raises(ConfigError, match="is a TA-TiTok: decoding needs its text guidance"):
        sample.main({**cfg, "tokenizer": str(bare), "out_dir": str(tmp_path / "none")})
    assert not (tmp_path / "none").exists()


def test_open_clip_default_architecture_is_the_configs():
    """OpenAI's CLIP weights from a file need QuickGELU: OpenCLIPText's default architecture, the schema's, the
    text guidance's and every paper config's are the same "-quickgelu" name, and open_clip knows it as QuickGELU."""
    import open_clip

    from projects.titok_rar.maskgen import OpenCLIPText
    from projects.titok_rar.schema import TextEncoder
    from projects.titok_rar.text_guidance import spec_of

    default = inspect.signature(OpenCLIPText).parameters["model_name"].default
    assert default == "ViT-L-14-336-quickgelu" == TextEncoder().model_name
    assert spec_of({"kind": "open_clip", "pretrained": "clip.bin"})["model_name"] == default
    configs = sorted((TT / "configs").rglob("*.yaml"))
    names = {str(p.relative_to(TT)): OmegaConf.load(p).model.text_encoder.model_name for p in configs
             if OmegaConf.select(OmegaConf.load(p), "model.text_encoder.model_name") is not None}
    assert len(names) >= 4 and set(names.values()) == {default}, names
    arch = open_clip.get_model_config(default)
    assert arch["quick_gelu"] is True and arch["text_cfg"]["width"] == 768 and arch["text_cfg"]["context_length"] == 77
