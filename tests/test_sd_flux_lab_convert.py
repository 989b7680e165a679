"""convert.py: every exported UNet/VAE key is the original latent-diffusion name (derived below from the CompVis
module structure, independently of convert.py), diffusers' own original->diffusers converters give back the source
state dicts exactly, and from_single_file (config from a local folder, offline) loads the file into a pipeline
with the same weights and (to float tolerance) the same images (SD1.5 and SDXL)."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from projects.sd_flux_lab import convert, models

torch.set_num_threads(1)


# ---- the original layout, written from CompVis' ldm/modules/diffusionmodules/{model,openaimodel}.py -------------
def _params(prefix: str, *modules: str, bias: bool = True) -> set[str]:
    return {f"{prefix}.{m}.{p}" for m in modules for p in (("weight", "bias") if bias else ("weight",))}


def original_vae_keys(cfg) -> dict[str, tuple | None]:
    """Encoder/Decoder of the LDM autoencoder: ResnetBlock(norm1, conv1, norm2, conv2, nin_shortcut when the width
    changes), AttnBlock(norm, q, k, v, proj_out: 1x1 convolutions), Downsample/Upsample(.conv).
    Maps each name to its shape where the layout fixes it (attention and shortcut convolutions), else None."""
    ch = list(cfg.block_out_channels)
    n, levels = cfg.layers_per_block, len(ch)
    keys: dict[str, tuple | None] = {}

    def resnet(prefix, c_in, c_out):
        keys.update(dict.fromkeys(_params(prefix, "norm1", "conv1", "norm2", "conv2")))
        if c_in != c_out:
            keys.update({f"{prefix}.nin_shortcut.weight": (c_out, c_in, 1, 1), f"{prefix}.nin_shortcut.bias": None})

    def mid(part, c):
        resnet(f"{part}.mid.block_1", c, c)
        for m in ("q", "k", "v", "proj_out"):
            keys.update({f"{part}.mid.attn_1.{m}.weight": (c, c, 1, 1), f"{part}.mid.attn_1.{m}.bias": None})
        keys.update(dict.fromkeys(_params(f"{part}.mid.attn_1", "norm")))
        resnet(f"{part}.mid.block_2", c, c)

    c = ch[0]
    for i in range(levels):
        for j in range(n):
            resnet(f"encoder.down.{i}.block.{j}", c, ch[i])
            c = ch[i]
        if i != levels - 1:
            keys.update(dict.fromkeys(_params(f"encoder.down.{i}.downsample", "conv")))
    mid("encoder", c)
    mid("decoder", ch[-1])
    c = ch[-1]
    for i in reversed(range(levels)):
        for j in range(n + 1):
            resnet(f"decoder.up.{i}.block.{j}", c, ch[i])
            c = ch[i]
        if i != 0:
            keys.update(dict.fromkeys(_params(f"decoder.up.{i}.upsample", "conv")))
    for part in ("encoder", "decoder"):
        keys.update(dict.fromkeys(_params(part, "conv_in", "norm_out", "conv_out")))
    keys.update(dict.fromkeys(_params("", "quant_conv", "post_quant_conv")))
    return {k.lstrip("."): v for k, v in keys.items()}


def original_unet_keys(cfg) -> set[str]:
    """openaimodel.UNetModel: input_blocks / middle_block / output_blocks of ResBlock(in_layers.0/.2,
    emb_layers.1, out_layers.0/.3, skip_connection when the width changes) and SpatialTransformer(norm, proj_in,
    transformer_blocks.d.{attn1,attn2,ff,norm1-3}, proj_out); Downsample(.op), Upsample(.conv)."""
    ch = list(cfg.block_out_channels)
    n, levels = cfg.layers_per_block, len(ch)
    depth = cfg.transformer_layers_per_block
    depth = [depth] * levels if isinstance(depth, int) else list(depth)
    keys = _params("input_blocks.0.0", "") | _params("time_embed", "0", "2") | _params("out", "0", "2")
    if cfg.addition_embed_type == "text_time":
        keys |= _params("label_emb.0", "0", "2")

    def res(prefix, c_in, c_out):
        out = _params(prefix, "in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3")
        return out | (_params(prefix, "skip_connection") if c_in != c_out else set())

    def transformer(prefix, d):
        out = _params(prefix, "norm", "proj_in", "proj_out")
        for b in range(d):
            tb = f"{prefix}.transformer_blocks.{b}"
            for a in ("attn1", "attn2"):
                out |= _params(f"{tb}.{a}", "to_q", "to_k", "to_v", bias=False) | _params(f"{tb}.{a}", "to_out.0")
            out |= _params(tb, "ff.net.0.proj", "ff.net.2", "norm1", "norm2", "norm3")
        return out

    skips, c, k = [ch[0]], ch[0], 1
    for i in range(levels):
        attn = "CrossAttn" in cfg.down_block_types[i]
        for _ in range(n):
            keys |= res(f"input_blocks.{k}.0", c, ch[i]) | (transformer(f"input_blocks.{k}.1", depth[i]) if attn
                                                           else set())
            c = ch[i]
            skips.append(c)
            k += 1
        if i != levels - 1:
            keys |= _params(f"input_blocks.{k}.0.op", "")
            skips.append(c)
            k += 1
    keys |= res("middle_block.0", c, c) | transformer("middle_block.1", depth[-1]) | res("middle_block.2", c, c)
    k = 0
    for u in range(levels):
        i = levels - 1 - u
        attn = "CrossAttn" in cfg.up_block_types[u]
        for j in range(n + 1):
            keys |= res(f"output_blocks.{k}.0", c + skips.pop(), ch[i])
            c = ch[i]
            if attn:
                keys |= transformer(f"output_blocks.{k}.1", depth[i])
            if j == n and i != 0:
                keys |= _params(f"output_blocks.{k}.{2 if attn else 1}.conv", "")
            k += 1
    return {key.replace("..", ".") for key in keys}


def _strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.mark.parametrize("arch", models.ARCHS)
def test_export_uses_the_original_names_and_diffusers_converts_it_back_exactly(arch):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    pipe = models.build_pipeline(arch, "tiny", seed=3)
    sd = convert.pipeline_to_original(pipe, arch)
    vae = _strip(sd, "first_stage_model.")
    want_vae = original_vae_keys(pipe.vae.config)
    assert sorted(vae) == sorted(want_vae)
    assert any(".nin_shortcut." in k for k in want_vae) and not any("conv_shortcut" in k for k in vae)
    for k, shape in want_vae.items():
        assert shape is None or tuple(vae[k].shape) == shape, (k, tuple(vae[k].shape), shape)
    unet = _strip(sd, "model.diffusion_model.")
    assert sorted(unet) == sorted(original_unet_keys(pipe.unet.config))

    # diffusers' original -> diffusers converters give back the source weights, key for key, value for value
    for got, module in ((convert_ldm_vae_checkpoint(sd, pipe.vae.config), pipe.vae),
                        (convert_ldm_unet_checkpoint(sd, pipe.unet.config), pipe.unet)):
        src = module.state_dict()
        assert sorted(got) == sorted(src)
        assert all(torch.equal(got[k], src[k]) for k in src), type(module).__name__


@pytest.mark.parametrize("arch", models.ARCHS)
def test_single_file_round_trip(arch, tmp_path):
    src_dir = tmp_path / "src"
    pipe = models.build_pipeline(arch, "tiny", seed=3)
    models.save_pipeline(pipe, src_dir)
    out = tmp_path / "model.safetensors"
    convert.main({"pipeline": str(src_dir), "out": str(out)})
    sd = load_file(str(out))
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in sd)
    assert any(k.startswith("first_stage_model.encoder.down.") for k in sd)
    text_key = ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" if arch == "sd15"
                else "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight")
    assert text_key in sd

    loaded = models.PIPELINE_CLASSES[arch].from_single_file(str(out), config=str(src_dir), local_files_only=True)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a = getattr(pipe, name, None)
        if a is None:
            continue
        sa, sb = a.state_dict(), getattr(loaded, name).state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    kw = dict(num_inference_steps=2, output_type="np", height=32, width=32)
    for p in (pipe, loaded):
        p.set_progress_bar_config(disable=True)
    a = pipe("a blue handwritten one", generator=torch.Generator().manual_seed(0), **kw).images
    b = loaded("a blue handwritten one", generator=torch.Generator().manual_seed(0), **kw).images
    # same weights (checked exactly above); the images may differ by float rounding (another BLAS path when a
    # loaded weight is laid out differently in memory), so compare them to a tolerance
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_half_and_bad_output(tmp_path):
    src_dir = tmp_path / "src"
    models.save_pipeline(models.build_pipeline("sd15", "tiny"), src_dir)
    out = tmp_path / "half.safetensors"
    convert.main({"pipeline": str(src_dir), "out": str(out), "half": True})
    assert {v.dtype for v in load_file(str(out)).values() if v.is_floating_point()} == {torch.float16}
    with pytest.raises(ValueError, match="only .safetensors"):
        convert.main({"pipeline": str(src_dir), "out": str(tmp_path / "x.ckpt")})
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        convert.main({"pipeline": str(tmp_path), "out": str(out)})
