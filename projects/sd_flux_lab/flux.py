"""FLUX.2 pipelines: build a random one from configs (tiny/toy), or check a local released one (paper).

A random pipeline has every real FLUX.2 component at toy size: `Flux2Transformer2DModel`, `AutoencoderKLFlux2`
(with its latent batch-norm statistics), a `Mistral3ForConditionalGeneration` text encoder (Mistral text model +
Pixtral vision tower) and a byte-level BPE tokenizer with a chat template (the pipeline only calls
`apply_chat_template`). The BPE is trained here, offline, on the pipeline's system message and a small word list.
The pipeline folder is written with `save_pretrained` and loads back with `load_flux2` (no hub access).

The tiny text encoder has fewer than the 30 layers FLUX.2 reads hidden states from, so the layers to read are
kept in `sd_flux_lab.json` next to `model_index.json`; `load_flux2` returns them and every step of this project
passes them to the pipeline (`text_encoder_out_layers=`). A released folder without that file uses (10, 20, 30).

    python projects/sd_flux_lab/flux.py scale=tiny out_dir=models/tiny/flux2      # build + save a random one
    python -m projects.sd_flux_lab.flux scale=paper                                # check downloads/flux2 offline
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.config import cli, resolve, save_resolved
from shared.io import atomic_dir, write_json

SIDE_FILE = "sd_flux_lab.json"  # what the pipeline cannot record itself (text-encoder layers read)
RELEASED_OUT_LAYERS = (10, 20, 30)
COMPONENTS = ("scheduler", "vae", "text_encoder", "tokenizer", "transformer")

# Words the tiny tokenizer learns beyond the system message (the toy digits' captions, common prompt words).
_EXTRA_WORDS = ("a an the of in on with and red green blue yellow orange purple pink white black cyan magenta "
                "handwritten digit zero one two three four five six seven eight nine photo picture painting "
                "make it turn into style cat dog house tree sky high quality detailed blurry low worst best")

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
    "| join(' ') %}{% endif %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{{ text }}[/INST]"
    "{% else %}{{ text }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                  "[IMG]", "[IMG_BREAK]", "[IMG_END]")


@dataclass
class Config:
    scale: str = "tiny"
    source: str = "random"  # "random" = build from the sizes below; else a local FLUX.2 pipeline folder to check
    out_dir: str = "models/tiny/flux2"  # where a random pipeline is saved (unused when checking a folder)
    seed: int = 0
    # sizes of a random pipeline
    text_hidden: int = 32
    text_layers: int = 3
    text_heads: int = 2
    vocab_size: int = 1024
    vae_channels: list[int] | None = None  # default [16, 32]: two levels -> 2x VAE downsampling
    latent_channels: int = 4
    heads: int = 2
    head_dim: int = 16
    double_layers: int = 1
    single_layers: int = 1
    max_sequence_length: int = 128  # text tokens the pipeline pads to (the system message is ~40 of them)
    sample_size: int = 32  # default output size of a random pipeline (FLUX.2's own default is 1024)
    # check of a local folder (paper)
    load_weights: bool = False  # also load every component's weights (slow and large for the released model)


PRESETS = {
    "tiny": {},
    "toy": {"out_dir": "models/toy/flux2", "text_hidden": 64, "text_layers": 4, "heads": 4,
            "double_layers": 2, "single_layers": 2, "vae_channels": [32, 64], "latent_channels": 8},
    "paper": {"source": "downloads/flux2", "out_dir": "downloads/flux2", "max_sequence_length": 512},
}


def _train_tokenizer(vocab_size: int):
    """A byte-level BPE (any text tokenizes) with the Mistral-style special tokens and a chat template."""
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([SYSTEM_MESSAGE, _EXTRA_WORDS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", chat_template=CHAT_TEMPLATE, padding_side="left")
    return fast


def build_flux2(cfg) -> tuple["Flux2Pipeline", tuple[int, ...]]:
    """A random FLUX.2 pipeline of the configured size and the text-encoder layers its transformer reads."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Pipeline, Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    torch.manual_seed(cfg.seed)
    tokenizer = _train_tokenizer(cfg.vocab_size)
    vocab = len(tokenizer)
    text = MistralConfig(vocab_size=vocab, hidden_size=cfg.text_hidden, intermediate_size=2 * cfg.text_hidden,
                         num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
                         num_key_value_heads=1, head_dim=cfg.text_hidden // cfg.text_heads,
                         max_position_embeddings=max(512, cfg.max_sequence_length),
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    vision = PixtralVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 image_size=32, patch_size=8, head_dim=8)
    encoder = Mistral3ForConditionalGeneration(Mistral3Config(
        text_config=text, vision_config=vision, image_token_index=tokenizer.convert_tokens_to_ids("[IMG]")))
    encoder.eval()
    # every `text_layers // 3`-th hidden state, as FLUX.2 reads layers 10, 20, 30 of 40
    step = max(1, cfg.text_layers // 3)
    out_layers = tuple(min(cfg.text_layers, step * (i + 1)) for i in range(3))

    channels = list(cfg.vae_channels or [16, 32])
    vae = AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D",) * len(channels), up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=tuple(channels), layers_per_block=1, latent_channels=cfg.latent_channels,
        norm_num_groups=min(8, channels[0]), sample_size=32, mid_block_add_attention=False)
    with torch.no_grad():  # non-trivial latent statistics, so the normalisation is exercised
        vae.bn.running_mean.normal_(0, 0.1)
        vae.bn.running_var.uniform_(0.5, 1.5)
    vae.eval()
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=4 * cfg.latent_channels, num_layers=cfg.double_layers,
        num_single_layers=cfg.single_layers, attention_head_dim=cfg.head_dim, num_attention_heads=cfg.heads,
        joint_attention_dim=cfg.text_hidden * len(out_layers), timestep_guidance_channels=32, mlp_ratio=2.0,
        axes_dims_rope=_rope_axes(cfg.head_dim), guidance_embeds=True)
    # the released model's scheduler settings: resolution-dependent shift (mu) of the sigmas
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                                max_image_seq_len=4096)
    pipe = Flux2Pipeline(scheduler=scheduler, vae=vae, text_encoder=encoder, tokenizer=tokenizer,
                         transformer=transformer)
    return pipe, out_layers


def _rope_axes(head_dim: int) -> tuple[int, ...]:
    """Four even RoPE axes (t, h, w, l) summing to head_dim."""
    if head_dim % 8:
        raise ValueError(f"head_dim={head_dim}: must be a multiple of 8 (four even RoPE axes)")
    return (head_dim // 4,) * 4


def save_flux2(pipe, out_layers, out_dir: str | Path, max_sequence_length: int = 512, sample_size: int = 0) -> Path:
    """save_pretrained + the side file, atomically (a reader never sees half a pipeline)."""
    with atomic_dir(Path(out_dir)) as tmp:
        pipe.save_pretrained(tmp)
        write_json(Path(tmp) / SIDE_FILE, {"kind": "flux2", "text_encoder_out_layers": list(out_layers),
                                            "max_sequence_length": max_sequence_length,
                                            **({"sample_size": sample_size} if sample_size else {})})
    return Path(out_dir)


def pipeline_info(path: str | Path) -> dict:
    """`sd_flux_lab.json` of a pipeline folder, with defaults for a released one."""
    side = Path(path) / SIDE_FILE
    info = json.loads(side.read_text()) if side.is_file() else {}
    info.setdefault("text_encoder_out_layers", list(RELEASED_OUT_LAYERS))
    info.setdefault("max_sequence_length", 512)
    return info


def check_folder(path: str | Path) -> dict:
    """Clear errors for a folder that is not a complete FLUX.2 pipeline (before any large file is read)."""
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{path}: no model_index.json; expected a FLUX.2 pipeline folder saved with "
                                f"save_pretrained (e.g. a local copy of black-forest-labs/FLUX.2-dev)")
    entries = json.loads(index.read_text())
    if entries.get("_class_name") != "Flux2Pipeline":
        raise ValueError(f"{index}: _class_name is {entries.get('_class_name')!r}, expected 'Flux2Pipeline'")
    missing = [c for c in COMPONENTS if c not in entries or not (path / c).is_dir()]
    if missing:
        raise FileNotFoundError(f"{path}: missing component folder(s) {', '.join(missing)}")
    return {c: entries[c][1] for c in COMPONENTS}


def load_flux2(path: str | Path, dtype: torch.dtype | None = None, device: str | None = None):
    """(Flux2Pipeline, pipeline_info) from a local folder, without any hub access."""
    from diffusers import Flux2Pipeline

    check_folder(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pipe = Flux2Pipeline.from_pretrained(str(path), local_files_only=True,
                                         **({"dtype": dtype} if dtype is not None else {}))
    if device:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipeline_info(path)


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.source == "random":
        pipe, out_layers = build_flux2(cfg)
        out = save_flux2(pipe, out_layers, cfg.out_dir, cfg.max_sequence_length, cfg.sample_size)
        save_resolved(cfg, out, name="build_config.yaml")
        n = sum(p.numel() for p in pipe.transformer.parameters())
        print(f"random FLUX.2 pipeline (transformer {n / 1e6:.2f}M params, text layers {list(out_layers)}) -> {out}")
        return out
    components = check_folder(cfg.source)
    report = {"source": cfg.source, "components": components, **pipeline_info(cfg.source)}
    if cfg.load_weights:
        pipe, _ = load_flux2(cfg.source, dtype=torch.bfloat16)
        report["transformer_params"] = sum(p.numel() for p in pipe.transformer.parameters())
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
