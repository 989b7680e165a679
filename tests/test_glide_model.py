"""GLIDE networks: the released checkpoints' exact names/shapes (meta device), options, tiny models' round trip."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from projects.glide_finetune.unet import (VARIANTS, create_model, model_and_diffusion_defaults,
                                          model_and_diffusion_defaults_upsampler, tiny_options)

# the reference files live beside the checkout (../shared/reference), as the issue names them
REF_FILE = (Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "glide_checkpoints.json").resolve()
REF = json.loads(REF_FILE.read_text())


def perturb(model):
    """Give the zero-initialised output convs (ResBlock out_layers, attention proj_out, out) random weights, as a
    trained model has, so every path reaches the output."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.05)
    return model


def released_options(name):
    base = model_and_diffusion_defaults_upsampler() if name.startswith("upsample") else model_and_diffusion_defaults()
    return {**base, "inpaint": name.endswith("inpaint")}


def test_default_options_are_the_released_ones():
    assert model_and_diffusion_defaults() == REF["options_base_64"]
    assert model_and_diffusion_defaults_upsampler() == REF["options_upsampler_256"]


@pytest.mark.parametrize("name", ["base", "upsample", "base-inpaint", "upsample-inpaint"])
def test_full_config_state_dict_equals_the_released_file(name):
    ref = REF["checkpoints"][name]
    model = create_model(released_options(name), "meta")
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert ours == ref["state_dict"]  # names, shapes, dtypes and order
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]
    assert model.in_channels == ref["in_channels"] and model.out_channels == ref["out_channels"]
    assert list(model.channel_mult) == ref["channel_mult"]
    assert type(model).__name__ == "GlideUNet" and VARIANTS[name].in_channels() == ref["in_channels"]


def test_tiny_models_run_and_reload_strict(tmp_path):
    torch.manual_seed(0)
    for name, v in VARIANTS.items():
        opts = tiny_options(v.super_res, v.inpaint, image_size=16 if v.super_res else 8)
        model = create_model(opts).eval()
        perturb(model)
        x = torch.randn(2, 3, opts["image_size"], opts["image_size"])
        kw = {"tokens": torch.randint(0, 64, (2, 8)), "mask": torch.tensor([[1] * 3 + [0] * 5, [1] * 8]).bool()}
        if v.super_res:
            kw["low_res"] = torch.rand(2, 3, 4, 4) * 2 - 1
        if v.inpaint:
            kw["inpaint_image"] = torch.randn_like(x)
            kw["inpaint_mask"] = (torch.rand(2, 1, *x.shape[-2:]) > 0.5).float()
        out = model(x, torch.tensor([10, 900]), **kw)
        assert out.shape == (2, 6, *x.shape[-2:]) and torch.isfinite(out).all() and out.abs().sum() > 0
        path = tmp_path / f"{name}.safetensors"
        save_file(model.state_dict(), str(path))
        again = create_model(opts).eval()
        again.load_state_dict(load_file(str(path)), strict=True)
        assert torch.equal(again(x, torch.tensor([10, 900]), **kw), out)
        with pytest.raises(RuntimeError):  # a variant's file does not load into another variant
            other = [n for n in VARIANTS if VARIANTS[n].in_channels() != v.in_channels()][0]
            create_model(tiny_options(VARIANTS[other].super_res, VARIANTS[other].inpaint)).load_state_dict(
                load_file(str(path)), strict=True)


def test_text_conditioning_and_precomputed_text_agree():
    torch.manual_seed(0)
    model = perturb(create_model(tiny_options()).eval())
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 5])
    tok = torch.randint(0, 64, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.bool)
    with torch.no_grad():
        a = model(x, t, tokens=tok, mask=mask)
        b = model(x, t, tokens=torch.flip(tok, [1]), mask=mask)
        enc = model.encode_text(tok, mask)
        c = model(x, t, **enc)
    assert not torch.allclose(a, b)  # the text reaches the output
    torch.testing.assert_close(a, c)
    # padded positions take the learned padding embedding: changing a padded token changes nothing
    mask[:, 4:] = False
    tok2 = tok.clone()
    tok2[:, 6] = (tok2[:, 6] + 1) % 64
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, tokens=tok, mask=mask), model(x, t, tokens=tok2, mask=mask))


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = perturb(create_model(tiny_options()))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 700])
    kw = {"tokens": torch.randint(0, 64, (2, 8)), "mask": torch.ones(2, 8, dtype=torch.bool)}
    model(x, t, **kw).square().mean().backward()
    g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x, t, **kw).square().mean().backward()
    for a, p in zip(g1, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="unknown xf_depth"):
        create_model({**tiny_options(), "xf_depth": 3}, "meta")
    with pytest.raises(ValueError, match="image_size=48: no default channel_mult"):
        create_model({**tiny_options(), "image_size": 48, "channel_mult": ""}, "meta")
    model = create_model(tiny_options(super_res=True, image_size=16))
    with pytest.raises(ValueError, match="needs low_res"):
        model(torch.randn(1, 3, 16, 16), torch.tensor([1]), tokens=torch.zeros(1, 8).long(),
              mask=torch.ones(1, 8).bool())


@pytest.mark.parametrize("name", ["base", "upsample", "base-inpaint", "upsample-inpaint"])
def test_a_released_file_is_recognised_from_its_keys_and_shapes(name, tmp_path):
    """identify() only reads names and shapes, so meta tensors of the released layout stand in for the real file."""
    from projects.glide_finetune.glide_util import identify

    sd = create_model(released_options(name), "meta").state_dict()
    found = identify(tmp_path / f"{name}.pt", sd, {})
    assert found.variant == name and found.kind == "released" and found.options == released_options(name)
    assert "released GLIDE (filtered) weights" in found.message and f"{len(sd)} tensors" in found.message
    assert identify(tmp_path / f"{name}_ema.pt", sd, {}).kind == "ema"
    bad = dict(sd)
    bad["out.2.weight"] = torch.empty(3, 192, 3, 3, device="meta")
    with pytest.raises(ValueError, match=r"1 with other shapes; first: out\.2\.weight\); put the options"):
        identify(tmp_path / f"{name}.pt", bad, {})
