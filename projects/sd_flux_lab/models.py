"""Pipeline presets per scale: SD1.5- and SDXL-architecture diffusers pipelines, built or loaded.

    PRESETS[(arch, scale)]       arch in ARCHS ("sd15", "sdxl"), scale in tiny | toy | paper
    build_pipeline("sd15", "toy", seed=0, vae=None)   random weights from the preset's configs (tiny, toy)
    load_pipeline(path)          a saved diffusers folder, offline; the arch is read from model_index.json
    base_pipeline(arch, scale)   build (tiny/toy) or load the preset's `path` (paper: downloads/sd15, ...)
    save_pipeline(pipe, dir)     save_pretrained, atomically
    build_controlnet(unet, vae)  ControlNetModel.from_unet with a conditioning embedding that matches the VAE
    clip_tokenizer()             the real CLIP BPE tokenizer (49408 tokens), built offline from open_clip's vocab

tiny = random models of NOTES.md's sizes (seconds, for tests and `smoke`); toy = small from-scratch models for
32x32 digits (VAE 32 px -> 8x8x4 latents, UNets on 8x8 latents), trainable on CPU in minutes; the text encoders
are randomly initialised, frozen CLIP text models (fixed seed) with the real CLIP tokenizer.
"""
from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers import (AutoencoderKL, ControlNetModel, DDIMScheduler, DiffusionPipeline, EulerDiscreteScheduler,
                       StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from shared.io import atomic_dir

ARCHS = ("sd15", "sdxl")
PIPELINE_CLASSES = {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}
CLIP_VOCAB_SIZE = 49408
BOS, EOS = 49406, 49407

# SD's training noise schedule (both SD1.5 and SDXL); steps_offset=1 as the released scheduler configs say.
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   steps_offset=1)


# ---- the CLIP tokenizer -----------------------------------------------------------------------------------
def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table, in vocabulary order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def clip_bpe_file() -> Path:
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: open_clip_torch ships the CLIP BPE vocabulary there; reinstall it")
    return path


@lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.open(clip_bpe_file(), "rt", encoding="utf-8").read().split("\n")
    # CLIP keeps the first 49152 - 256 - 2 merges (the file's first line is a header)
    merges = [tuple(line.split()) for line in lines[1:CLIP_VOCAB_SIZE - 256 - 256 - 2 + 1]]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == CLIP_VOCAB_SIZE, len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """SD1.5 pads with <|endoftext|>; SDXL's second tokenizer pads with "!" (pad_token="!")."""
    vocab, merges = _clip_vocab_and_merges()
    tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=77)
    if len(tok) != CLIP_VOCAB_SIZE:  # NOTES.md: wrong arguments silently give a 3-5 token vocabulary
        raise RuntimeError(f"CLIP tokenizer has {len(tok)} tokens, expected {CLIP_VOCAB_SIZE}")
    return tok


# ---- presets --------------------------------------------------------------------------------------------
def _vae(channels: tuple[int, ...], groups: int, sample_size: int) -> dict:
    n = len(channels)
    return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=channels,
                down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                layers_per_block=1, norm_num_groups=groups, sample_size=sample_size)


def _clip(hidden: int, layers: int, heads: int, act: str = "quick_gelu", projection: int = 0) -> dict:
    cfg = dict(hidden_size=hidden, intermediate_size=hidden * 4 if hidden > 32 else 37, num_hidden_layers=layers,
               num_attention_heads=heads, vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=77,
               bos_token_id=BOS, eos_token_id=EOS, pad_token_id=1, hidden_act=act)
    if projection:
        cfg["projection_dim"] = projection
    return cfg


@dataclass(frozen=True)
class PipelinePreset:
    """Either configs to build random models from, or `path`: a diffusers folder to load."""
    arch: str
    unet: dict = field(default_factory=dict)
    vae: dict = field(default_factory=dict)
    text_encoders: tuple[dict, ...] = ()
    path: str = ""
    description: str = ""


def _sd15_unet(channels, heads, cross, sample_size, layers=1, groups=32) -> dict:
    n = len(channels)
    return dict(sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=layers,
                block_out_channels=channels, down_block_types=("CrossAttnDownBlock2D",) * n,
                up_block_types=("CrossAttnUpBlock2D",) * n, cross_attention_dim=cross, attention_head_dim=heads,
                norm_num_groups=groups)


def _sdxl_unet(channels, heads, cross, sample_size, time_dim, pooled, depth, layers=1, groups=32) -> dict:
    return dict(sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=layers,
                block_out_channels=channels, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross,
                attention_head_dim=heads, use_linear_projection=True, transformer_layers_per_block=depth,
                addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                projection_class_embeddings_input_dim=6 * time_dim + pooled, norm_num_groups=groups)


PRESETS: dict[tuple[str, str], PipelinePreset] = {
    ("sd15", "tiny"): PipelinePreset(
        "sd15", unet=_sd15_unet((32, 64), (2, 4), 32, 16), vae=_vae((32, 64), 32, 32),
        text_encoders=(_clip(32, 2, 4),), description="random tiny SD1.5-like (0.8M UNet), 32 px"),
    ("sdxl", "tiny"): PipelinePreset(
        "sdxl", unet=_sdxl_unet((32, 64), (2, 4), 80, 16, 8, 32, (1, 2)), vae=_vae((32, 64), 32, 32),
        # the two encoders need different widths: from_single_file tells them apart by their width
        text_encoders=(_clip(32, 2, 4, "gelu"), _clip(48, 2, 4, "gelu", projection=32)),
        description="random tiny SDXL-like (text_time embedding, two text encoders), 32 px"),
    # toy: 32x32 digits -> 8x8x4 latents; the UNets (~1M parameters, ~0.3 s per batch of 32 on one CPU thread)
    # see 8x8 and 4x4 feature maps.
    ("sd15", "toy"): PipelinePreset(
        "sd15", unet=_sd15_unet((32, 64), (2, 4), 64, 8), vae=_vae((32, 64, 64), 16, 32),
        text_encoders=(_clip(64, 2, 4),), description="small SD1.5-architecture model for 32x32 digits"),
    ("sdxl", "toy"): PipelinePreset(
        "sdxl", unet=_sdxl_unet((32, 64), (2, 4), 96, 8, 16, 64, (1, 2)), vae=_vae((32, 64, 64), 16, 32),
        text_encoders=(_clip(32, 2, 4, "gelu"), _clip(64, 2, 4, "gelu", projection=64)),
        description="small SDXL-architecture model for 32x32 digits (two text encoders, size/crop conditioning)"),
    ("sd15", "paper"): PipelinePreset("sd15", path="downloads/sd15", description="stable-diffusion-v1-5"),
    ("sdxl", "paper"): PipelinePreset("sdxl", path="downloads/sdxl_base", description="stable-diffusion-xl-base-1.0"),
}

# where the download rules get the paper-scale pipelines from (Hugging Face repo ids)
HUB_REPOS = {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
             "sdxl": "stabilityai/stable-diffusion-xl-base-1.0"}


def get_preset(arch: str, scale: str) -> PipelinePreset:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    try:
        return PRESETS[(arch, scale)]
    except KeyError:
        raise ValueError(f"no pipeline preset for arch={arch!r} scale={scale!r}; "
                         f"have {', '.join(f'{a}/{s}' for a, s in PRESETS)}") from None


# ---- building ---------------------------------------------------------------------------------------------
def build_vae(config: dict, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(**config)


def build_unet(config: dict, seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**config)


def build_text_encoder(config: dict, seed: int = 0, token_std: float = 1.0):
    """A random, frozen CLIP text model. CLIP's own init (std 0.02 for token and position embeddings alike) makes
    a random encoder's outputs mostly positional: "a red three" and "a blue seven" come out 96 % cosine-similar and
    a toy UNet barely learns to use them. Token embeddings of std `token_std` keep each word's identity dominant
    in the residual stream, as a trained encoder's would be."""
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(**config)
    model = CLIPTextModelWithProjection(cfg) if "projection_dim" in config else CLIPTextModel(cfg)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, token_std)
    return model.eval().requires_grad_(False)


def build_scheduler(arch: str):
    if arch == "sdxl":
        return EulerDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="leading")
    return DDIMScheduler(**SD_SCHEDULE, clip_sample=False, set_alpha_to_one=False)


def _assemble(arch: str, unet, vae, encoders, scheduler):
    if arch == "sd15":
        return StableDiffusionPipeline(vae=vae, text_encoder=encoders[0], tokenizer=clip_tokenizer(), unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                     tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(pad_token="!"),
                                     unet=unet, scheduler=scheduler)


def build_pipeline(arch: str, scale: str, seed: int = 0, vae: AutoencoderKL | None = None):
    """A complete pipeline with random weights (fixed by `seed`) from the (arch, scale) preset.
    `vae`: use this (e.g. a trained toy VAE) instead of a random one."""
    preset = get_preset(arch, scale)
    if preset.path:
        raise ValueError(f"preset {arch}/{scale} is loaded from {preset.path}, not built; use base_pipeline()")
    encoders = [build_text_encoder(c, seed + 10 + i) for i, c in enumerate(preset.text_encoders)]
    unet = build_unet(preset.unet, seed)
    vae = vae if vae is not None else build_vae(preset.vae, seed + 1)
    return _assemble(arch, unet, vae.eval().requires_grad_(False), encoders, build_scheduler(arch))


def pipeline_folder(path: str | Path) -> Path:
    """A pipeline folder, or a folder holding one as pipeline/ (a train_sd.py run_dir, a base.py out_dir)."""
    path = Path(path)
    return path / "pipeline" if (path / "pipeline" / "model_index.json").is_file() else path


def read_model_index(path: str | Path) -> dict:
    index = pipeline_folder(path) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{path}: not a diffusers pipeline folder (no model_index.json)")
    try:
        return json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{index}: not valid JSON ({e})") from None


def arch_of(path: str | Path) -> str:
    cls = read_model_index(path).get("_class_name", "")
    for arch, pipe_cls in PIPELINE_CLASSES.items():
        if cls == pipe_cls.__name__:
            return arch
    raise ValueError(f"{path}/model_index.json: pipeline class {cls!r} is neither "
                     f"{' nor '.join(c.__name__ for c in PIPELINE_CLASSES.values())}")


def load_pipeline(path: str | Path, dtype: torch.dtype = torch.float32):
    """A saved SD1.5/SDXL pipeline folder (or a folder holding one as pipeline/), offline (never the hub)."""
    path = pipeline_folder(path)
    arch = arch_of(path)
    return PIPELINE_CLASSES[arch].from_pretrained(str(path), dtype=dtype, local_files_only=True)


def base_pipeline(arch: str, scale: str, seed: int = 0):
    preset = get_preset(arch, scale)
    return load_pipeline(preset.path) if preset.path else build_pipeline(arch, scale, seed)


def save_pipeline(pipe, out_dir: str | Path, **kwargs: Any) -> Path:
    """save_pretrained into `out_dir` atomically (a reader never sees a half-written pipeline)."""
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(str(tmp), **kwargs)
    return Path(out_dir)


def build_controlnet(unet: UNet2DConditionModel, vae: AutoencoderKL,
                     channels: tuple[int, ...] = (16, 32, 96, 256)) -> ControlNetModel:
    """A ControlNet copying `unet`'s encoder. Its conditioning embedding downsamples the control image
    len(channels)-1 times, so it needs as many levels as the VAE has (NOTES.md pitfall)."""
    levels = len(vae.config.block_out_channels)
    if levels > len(channels):
        channels = tuple(channels) + (channels[-1],) * (levels - len(channels))
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(channels[:levels]))


def vae_scale_factor(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def describe() -> str:
    return "\n".join(f"{a}/{s}: {p.description}" + (f" (from {p.path})" if p.path else "")
                     for (a, s), p in PRESETS.items())

