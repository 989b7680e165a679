"""SwinIR for upscaling GLIDE samples: state dicts equal the released files' names/shapes (meta device, against
tests/data/swinir_state_dicts.json), forward equals an independent implementation (tests/data/
swinir_peer_outputs.safetensors), strict safe loading with clear errors, and the upscale.py step."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from projects.glide_finetune import upscale as upscale_step
from projects.glide_finetune.swinir import (SWINIR_PRESETS, SwinIR, build_swinir, load_swinir, tiny_config,
                                            upscale_images)
from shared.config import ConfigError

DATA = Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location("make_swinir_fixtures", DATA / "make_swinir_fixtures.py")
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", fixtures.JSON_PRESETS)
def test_released_layout_names_and_shapes(name):
    ref = json.loads((DATA / "swinir_state_dicts.json").read_text())["presets"][name]
    cfg = SWINIR_PRESETS[name]
    assert cfg.release_file == ref["release_file"] and cfg.param_key == ref["param_key"]
    ours = [[k, list(v.shape)] for k, v in build_swinir(name, "meta").state_dict().items()]
    assert ours == ref["tensors"]  # same names, same order, same shapes
    assert len(ours) == {"classical_x2": 548, "classical_x4": 550, "classical_x8": 552, "real_x4": 552,
                         "real_large_x4": 859}[name]


def test_real_world_layout_differs_from_classical():
    real = build_swinir("real_x4", "meta").state_dict()
    classical = build_swinir("classical_x4", "meta").state_dict()
    assert {"conv_up1.weight", "conv_up2.weight", "conv_hr.weight"} <= set(real)
    assert "upsample.0.weight" in classical and not any(k.startswith("upsample.") for k in real)
    # the shifted-window masks are sized by the training patch: s48 files do not load into an s64 network
    assert classical["layers.0.residual_group.blocks.1.attn_mask"].shape == (64, 64, 64)
    assert build_swinir("classical48_x4", "meta").state_dict()[
        "layers.0.residual_group.blocks.1.attn_mask"].shape == (36, 64, 64)


@pytest.mark.parametrize("case", fixtures.NUMERIC, ids=[c[0] for c in fixtures.NUMERIC])
def test_forward_equals_independent_implementation(case):
    name, s, up, size = case
    expected = load_file(str(DATA / "swinir_peer_outputs.safetensors"))[name]
    model = SwinIR(tiny_config(upscale=s, upsampler=up)).eval()
    fixtures.fill_params(model)
    with torch.no_grad():
        out = model(fixtures.case_input(size))
    assert out.shape == (1, 3, size[0] * s, size[1] * s) == expected.shape
    # float32 rounding only (outputs reach |4| with these weights); a wrong wiring differs by O(1)
    assert (out - expected).abs().max().item() < 1e-5 * max(1.0, expected.abs().max().item())


def test_strict_load_of_release_style_files_and_clear_errors(tmp_path):
    src = SwinIR(tiny_config(upscale=2)).eval()
    sd = src.state_dict()
    x = torch.rand(2, 3, 10, 6)
    want = upscale_images(src, x)
    assert want.shape == (2, 3, 20, 12)  # padded to the window, cropped back
    tiled = upscale_images(src, x, tile=4)  # 4 px tiles of the padded 12x8 input: same size; no context across tiles
    assert tiled.shape == want.shape and not torch.equal(tiled, want)
    with pytest.raises(ValueError, match="tile=6 must be a multiple of the window size 4"):
        upscale_images(src, x, tile=6)
    torch.save({"params": sd}, tmp_path / "classical.pth")
    torch.save({"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}}, tmp_path / "gan.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "plain.safetensors"))
    for file, key, same in (("classical.pth", "params", True), ("gan.pth", "params_ema", True),
                            ("gan.pth", "params", False), ("plain.safetensors", "params", True)):
        torch.manual_seed(123)
        model = SwinIR(tiny_config(upscale=2, param_key=key)).eval()
        load_swinir(model, tmp_path / file)
        assert torch.equal(upscale_images(model, x), want) == same, (file, key)

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth: not a weights-only torch checkpoint"):
        load_swinir(SwinIR(tiny_config(upscale=2)), tmp_path / "junk.pth")
    torch.save({"model": sd}, tmp_path / "wrapped.pth")
    with pytest.raises(ValueError, match=r"wrapped\.pth: no SwinIR weights.*'params' or 'params_ema'.*model"):
        load_swinir(SwinIR(tiny_config(upscale=2)), tmp_path / "wrapped.pth")
    with pytest.raises(ValueError, match=r"classical\.pth: not the weights of this SwinIR \(x4.*unexpected "
                                         r"upsample\.0"):
        load_swinir(SwinIR(tiny_config(upscale=4, upsampler="nearest+conv")), tmp_path / "classical.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_swinir(SwinIR(tiny_config(upscale=2)), tmp_path / "nope.pth")


def _folder(tmp_path, n=3, size=(8, 12)):
    d = tmp_path / "samples"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(d / f"{i:06d}.png")
        (d / f"{i:06d}.txt").write_text(f"a red handwritten {i}\n")
    (d / "000009.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # a corrupt sample: skipped, counted
    return d


def test_upscale_step_swinir_and_bicubic(tmp_path):
    src = _folder(tmp_path)
    for factor in (2, 4, 8):
        info = upscale_step.main({"scale": "tiny", "in_dir": str(src), "out_dir": str(tmp_path / f"x{factor}"),
                                  "factor": factor})
        assert info["images"] == 3 and info["skipped"] == 1 and info["random_init"]
        img = Image.open(tmp_path / f"x{factor}" / "000001.png")
        assert img.size == (12 * factor, 8 * factor)
        assert (tmp_path / f"x{factor}" / "000001.txt").read_text() == "a red handwritten 1\n"
        assert json.loads((tmp_path / f"x{factor}" / "upscale.json").read_text())["skip_reasons"]
    # weights given: the step's output is that network's upscaling (8-bit rounded)
    torch.manual_seed(7)
    net = SwinIR(tiny_config(upscale=4)).eval()
    torch.save({"params": net.state_dict()}, tmp_path / "standin.pth")
    upscale_step.main({"scale": "tiny", "in_dir": str(src), "out_dir": str(tmp_path / "w"), "factor": 4,
                       "weights": str(tmp_path / "standin.pth"), "random_init": False})
    x = torch.from_numpy(np.array(Image.open(src / "000002.png"))).permute(2, 0, 1)[None].float() / 255
    want = (upscale_images(net, x)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "w" / "000002.png")), want)
    # bicubic baseline
    upscale_step.main({"scale": "tiny", "in_dir": str(src), "out_dir": str(tmp_path / "bic"), "factor": 4,
                       "method": "bicubic"})
    assert Image.open(tmp_path / "bic" / "000000.png").size == (48, 32)
    # held-out mode: originals shrunk by 4, then upscaled back to their size and names; a smooth image survives
    smooth = tmp_path / "smooth"
    smooth.mkdir()
    yy, xx = np.mgrid[0:32, 0:32]
    ramp = np.stack([xx * 8, yy * 8, (xx + yy) * 4], -1).astype(np.uint8)
    Image.fromarray(ramp).save(smooth / "ramp.png")
    upscale_step.main({"scale": "tiny", "in_dir": str(smooth), "out_dir": str(tmp_path / "held"), "factor": 4,
                       "method": "bicubic", "downscale_first": True})
    back = np.asarray(Image.open(tmp_path / "held" / "ramp.png")).astype(float)
    inner = (slice(4, -4), slice(4, -4))  # away from the border, where bicubic extrapolates a ramp exactly enough
    assert back.shape == ramp.shape and np.abs(back[inner] - ramp[inner]).max() <= 3
    with pytest.raises(ValueError, match="not divisible by factor=8"):
        upscale_step.main({"scale": "tiny", "in_dir": str(src), "out_dir": str(tmp_path / "odd"), "factor": 8,
                           "method": "bicubic", "downscale_first": True})
    # no weights and no random_init: refused, naming the option and the file it expects
    with pytest.raises(ConfigError, match=r"weights=.*001_classicalSR_DF2K_s64w8_SwinIR-M_x4\.pth"):
        upscale_step.main({"scale": "toy", "in_dir": str(src), "out_dir": str(tmp_path / "no"), "factor": 4})
    with pytest.raises(ValueError, match=r"standin\.pth: not the weights of this SwinIR"):
        upscale_step.main({"scale": "tiny", "in_dir": str(src), "out_dir": str(tmp_path / "bad"), "factor": 2,
                           "weights": str(tmp_path / "standin.pth")})
