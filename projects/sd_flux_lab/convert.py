"""Convert a diffusers SD1.5/SDXL pipeline folder into one original-format checkpoint (.safetensors).

The key layout is the one of the original latent-diffusion code (what A1111/ComfyUI and diffusers'
`from_single_file` read): `model.diffusion_model.*` (UNet), `first_stage_model.*` (VAE),
`cond_stage_model.transformer.text_model.*` (SD1.5 text encoder) or `conditioner.embedders.0.transformer.*`
and `conditioner.embedders.1.model.*` (SDXL's CLIP-L in HF layout and its OpenCLIP-bigG-layout second encoder).
The mapping is derived from the UNet/VAE configs, so any number of levels and layers per level converts.

    python projects/sd_flux_lab/convert.py pipeline=runs/ft/pipeline out=ft.safetensors half=true
    # load it back:  StableDiffusionPipeline.from_single_file(out, config=<a local pipeline folder>)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from projects.sd_flux_lab import models
from shared.config import Alias, cli, resolve
from shared.io import atomic_path

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(sd: dict, prefixes: list[tuple[str, str, Callable[[str], str] | None]], what: str) -> dict:
    """Every key must start with one of the diffusers prefixes; the longest wins; `inner` renames the rest."""
    prefixes = sorted(prefixes, key=lambda p: -len(p[0]))
    out = {}
    for key, value in sd.items():
        for src, dst, inner in prefixes:
            if key == src or key.startswith(src + "."):
                rest = key[len(src) + 1:]
                out[dst + ("." + (inner(rest) if inner else rest) if rest else "")] = value
                break
        else:
            raise KeyError(f"{what}: no original-format name for diffusers key {key!r}")
    return out


def _sub(table: dict[str, str]) -> Callable[[str], str]:
    def inner(rest: str) -> str:
        for a, b in sorted(table.items(), key=lambda kv: -len(kv[0])):
            if rest == a or rest.startswith(a + "."):
                return b + rest[len(a):]
        return rest
    return inner


def unet_to_original(unet) -> dict:
    cfg = unet.config
    n = cfg.layers_per_block
    if not isinstance(n, int):
        raise ValueError(f"layers_per_block={n!r}: only one value for every level converts")
    res = _sub(_RESNET)
    p: list = [("conv_in", "input_blocks.0.0", None), ("time_embedding.linear_1", "time_embed.0", None),
               ("time_embedding.linear_2", "time_embed.2", None), ("add_embedding.linear_1", "label_emb.0.0", None),
               ("add_embedding.linear_2", "label_emb.0.2", None), ("conv_norm_out", "out.0", None),
               ("conv_out", "out.2", None), ("mid_block.resnets.0", "middle_block.0", res),
               ("mid_block.attentions.0", "middle_block.1", None), ("mid_block.resnets.1", "middle_block.2", res)]
    levels = len(cfg.block_out_channels)
    for i in range(levels):
        for j in range(n):
            k = 1 + i * (n + 1) + j
            p += [(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{k}.0", res),
                  (f"down_blocks.{i}.attentions.{j}", f"input_blocks.{k}.1", None)]
        p.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{1 + i * (n + 1) + n}.0.op", None))
        has_attn = "CrossAttn" in cfg.up_block_types[i]
        for j in range(n + 1):
            k = i * (n + 1) + j
            p += [(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{k}.0", res),
                  (f"up_blocks.{i}.attentions.{j}", f"output_blocks.{k}.1", None)]
        p.append((f"up_blocks.{i}.upsamplers.0", f"output_blocks.{i * (n + 1) + n}.{2 if has_attn else 1}", None))
    return _rename(unet.state_dict(), p, "unet")


def vae_to_original(vae) -> dict:
    levels = len(vae.config.block_out_channels)
    n = vae.config.layers_per_block  # resnets per encoder level; the decoder has one more
    res = _sub({"conv_shortcut": "nin_shortcut"})  # the LDM ResnetBlock's 1x1 shortcut (8 tensors in SD's VAE)
    p: list = [("quant_conv", "quant_conv", None), ("post_quant_conv", "post_quant_conv", None)]
    for part in ("encoder", "decoder"):
        p += [(f"{part}.conv_in", f"{part}.conv_in", None), (f"{part}.conv_out", f"{part}.conv_out", None),
              (f"{part}.conv_norm_out", f"{part}.norm_out", None),
              (f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", res),
              (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", res),
              (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _sub(_VAE_ATTN))]
    for i in range(levels):
        # one prefix per resnet, so that `res` sees the rest of the name start at the layer (conv_shortcut...)
        p += [(f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", res) for j in range(n)]
        p += [(f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{levels - 1 - i}.block.{j}", res)
              for j in range(n + 1)]
        p += [(f"encoder.down_blocks.{i}.downsamplers.0", f"encoder.down.{i}.downsample", None),
              (f"decoder.up_blocks.{i}.upsamplers.0", f"decoder.up.{levels - 1 - i}.upsample", None)]
    out = _rename(vae.state_dict(), p, "vae")
    for k, v in out.items():  # the original attention uses 1x1 convolutions where diffusers has linears
        if ".mid.attn_1." in k and k.endswith(".weight") and v.dim() == 2:
            out[k] = v[:, :, None, None]
    return out


def _hf_text(te) -> dict:
    """transformers >= 5.6 drops the `text_model.` prefix from CLIPTextModel state dicts; the format keeps it."""
    sd = te.state_dict()
    return {(k if k.startswith("text_model.") or k.startswith("text_projection") else f"text_model.{k}"): v
            for k, v in sd.items()}


def openclip_text(te) -> dict:
    """A CLIPTextModelWithProjection in OpenCLIP's layout (fused q/k/v, ln_*, mlp.c_*, transposed projection)."""
    sd = {k.removeprefix("text_model."): v for k, v in te.state_dict().items()}
    out = {"token_embedding.weight": sd["embeddings.token_embedding.weight"],
           "positional_embedding": sd["embeddings.position_embedding.weight"],
           "ln_final.weight": sd["final_layer_norm.weight"], "ln_final.bias": sd["final_layer_norm.bias"],
           "text_projection": sd["text_projection.weight"].t().contiguous()}
    names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in range(te.config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([sd[src + f"self_attn.{q}_proj.{kind}"] for q in "qkv"])
            for a, b in names.items():
                out[dst + f"{b}.{kind}"] = sd[src + f"{a}.{kind}"]
    return out


def pipeline_to_original(pipe, arch: str) -> dict:
    sd = {f"model.diffusion_model.{k}": v for k, v in unet_to_original(pipe.unet).items()}
    sd.update({f"first_stage_model.{k}": v for k, v in vae_to_original(pipe.vae).items()})
    if arch == "sd15":
        sd.update({f"cond_stage_model.transformer.{k}": v for k, v in _hf_text(pipe.text_encoder).items()})
    else:
        sd.update({f"conditioner.embedders.0.transformer.{k}": v for k, v in _hf_text(pipe.text_encoder).items()})
        sd.update({f"conditioner.embedders.1.model.{k}": v for k, v in openclip_text(pipe.text_encoder_2).items()})
    return sd


@dataclass
class Config:
    pipeline: str = ""  # diffusers pipeline folder (or a train_sd run_dir)
    out: str = ""  # .safetensors file
    half: bool = False  # store float16 (half the size; what most single-file checkpoints are)
    scale: str = "toy"


PRESETS = {"tiny": {}, "toy": {}, "paper": {"half": True}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if not cfg.pipeline or not cfg.out:
        raise ValueError("set pipeline=<diffusers folder> and out=<file.safetensors>")
    if not cfg.out.endswith(".safetensors"):
        raise ValueError(f"out={cfg.out}: only .safetensors is written (pickles are unsafe to share)")
    folder = models.pipeline_folder(cfg.pipeline)
    arch = models.arch_of(folder)
    pipe = models.load_pipeline(folder)
    sd = pipeline_to_original(pipe, arch)
    dtype = torch.float16 if cfg.half else torch.float32
    sd = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    with atomic_path(cfg.out) as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt", "source": str(folder), "arch": arch})
    print(f"{arch}: {len(sd)} tensors ({'fp16' if cfg.half else 'fp32'}) -> {cfg.out}")
    return cfg.out


# the option names of diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py (also accepted here)
ALIASES = {"model_path": "pipeline", "checkpoint_path": "out",
           "use_safetensors": Alias(flag=True, convert=lambda _: {}, help="always on: only .safetensors is written")}


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__, aliases=ALIASES)
