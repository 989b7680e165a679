"""Tiny random SD1.5- / SDXL-shaped pipelines and a tiny EDM teacher, built from configs (no download): what the
tests distil. The toy and paper teachers come from sd_flux_lab's rules and the download rules instead.

    pipe = tiny_pipeline("sdxl"); pipe.save_pretrained(dir)       # 32x32 images, 8x8x4 latents
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def _clip_vocab() -> tuple[dict, list]:
    """CLIP's BPE vocabulary from the file open_clip ships: the 256 byte symbols, their end-of-word forms, the
    first 48894 merges, then the two special tokens (49408 tokens; ids match open_clip.tokenize)."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = [tuple(line.split()) for line in gzip.open(path, "rt", encoding="utf-8").read().split("\n")[1:49152 - 256 - 2 + 1]]
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    symbols = [chr(c) for c in cs]
    words = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {w: i for i, w in enumerate(words)}, merges


def clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77)
    assert len(tok) == 49408, len(tok)  # a wrong vocab argument silently gives a 3-token tokenizer
    return tok


def _text_encoder(hidden: int, projection: int = 0, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                         projection_dim=projection or hidden)
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def tiny_pipeline(arch: str = "sd15", seed: int = 0):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, \
        UNet2DConditionModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), latent_channels=4,
                        layers_per_block=1, norm_num_groups=8, sample_size=32)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    if arch == "sd15":
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                    block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D",) * 2,
                                    up_block_types=("CrossAttnUpBlock2D",) * 2, cross_attention_dim=32,
                                    attention_head_dim=(2, 4), norm_num_groups=32)
        return StableDiffusionPipeline(vae=vae, text_encoder=_text_encoder(32, seed=seed), tokenizer=clip_tokenizer(),
                                       unet=unet, scheduler=sched, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    if arch == "sdxl":
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                    block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
                                    attention_head_dim=(2, 4), use_linear_projection=True,
                                    transformer_layers_per_block=(1, 2), addition_embed_type="text_time",
                                    addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
                                    norm_num_groups=32)
        return StableDiffusionXLPipeline(vae=vae, text_encoder=_text_encoder(32, seed=seed),
                                         text_encoder_2=_text_encoder(32, projection=32, seed=seed + 1),
                                         tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=unet,
                                         scheduler=sched)
    raise ValueError(f"arch {arch!r}: sd15 or sdxl")


def save_tiny_edm(out_dir: str | Path, config: str = "tiny", seed: int = 0) -> Path:
    """A random EDM teacher folder (edm.json + model.safetensors), as train_teacher.py writes one."""
    from safetensors.torch import save_file

    from projects.dmd2.edm import EDM_CONFIGS, build_edm
    from shared.io import write_json

    torch.manual_seed(seed)
    net = build_edm(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "model.safetensors"))
    write_json(out / "edm.json", dict(EDM_CONFIGS[config]))
    return out
