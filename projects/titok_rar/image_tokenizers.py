"""Every image tokenizer of this project behind one interface, and the released configurations by name.

    from projects.titok_rar.image_tokenizers import load_tokenizer, build_released
    tok = load_tokenizer("results/toy/titok/k16/stage2/final")   # a save_pretrained folder (any class)
    tok = load_tokenizer("downloads/titok_rar/maskgit_vqgan/maskgit-vqgan-imagenet-f16-256.bin")
    tokens = tok.encode(images)          # images float [0,1] (B,3,H,W) -> LongTensor (B, tok.num_tokens)
    images = tok.decode_tokens(tokens)   # -> float [0,1] (B,3,H,W)
    tok.num_tokens, tok.codebook_size; tok.save_pretrained(folder); type(tok).from_pretrained(folder)
    model = build_released("titok_l32")  # the architecture of a released tokenizer (random weights)

Classes: `TiTok` (VQ and VAE, legacy and pixel decoders), `TATiTok` (text-aware: `decode_tokens(tokens,
text_guidance)`), `MaskGITVQGAN`. A VAE TiTok has no discrete tokens: `encode` raises and `encode_latents` gives
(B, K, token_size). The generators (maskgit.py, rar.py, maskgen.py) need only this module and token_data.py.

RELEASED holds the `model.vq_model` sections of bytedance/1d-tokenizer's configs, as listed with the released
files' state dicts in `shared/reference/titok_rar_checkpoints.json` (configs/infer/TiTok/*.yaml; stage-1
models are the same configs with finetune_decoder=False, configs/training/TiTok/stage1/*.yaml).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from projects.titok_rar.titok import TATiTok, TiTok, TiTokConfig
from projects.titok_rar.vqgan import MaskGITVQGAN, VQGANConfig

TOKENIZER_CLASSES = {"TiTok": TiTok, "TATiTok": TATiTok, "MaskGITVQGAN": MaskGITVQGAN}

_L2_4096 = dict(codebook_size=4096, token_size=12, use_l2_norm=True, commitment_cost=0.25,
                vit_enc_patch_size=16, vit_dec_patch_size=16, finetune_decoder=True)
_VQ8K = dict(codebook_size=8192, token_size=64, use_l2_norm=False, commitment_cost=0.25, vit_enc_patch_size=16,
             vit_dec_patch_size=16, finetune_decoder=False, is_legacy=False)
_VAE16 = dict(quantize_mode="vae", token_size=16, vit_enc_patch_size=16, vit_dec_patch_size=16,
              finetune_decoder=False, is_legacy=False)

# name -> (hub repo of the released weights, vq_model section). Source: the configs named in the reference JSON.
RELEASED: dict[str, tuple[str, dict[str, Any]]] = {
    "titok_l32": ("yucornetto/tokenizer_titok_l32_imagenet",
                  dict(_L2_4096, vit_enc_model_size="large", vit_dec_model_size="large", num_latent_tokens=32)),
    "titok_b64": ("yucornetto/tokenizer_titok_b64_imagenet",
                  dict(_L2_4096, vit_enc_model_size="base", vit_dec_model_size="base", num_latent_tokens=64)),
    "titok_s128": ("yucornetto/tokenizer_titok_s128_imagenet",
                   dict(_L2_4096, vit_enc_model_size="small", vit_dec_model_size="small", num_latent_tokens=128)),
    "titok_bl64_vq8k": ("yucornetto/tokenizer_titok_bl64_vq8k_imagenet",
                        dict(_VQ8K, vit_enc_model_size="base", vit_dec_model_size="large", num_latent_tokens=64)),
    "titok_bl128_vq8k": ("yucornetto/tokenizer_titok_bl128_vq8k_imagenet",
                         dict(_VQ8K, vit_enc_model_size="base", vit_dec_model_size="large", num_latent_tokens=128)),
    "titok_sl256_vq8k": ("yucornetto/tokenizer_titok_sl256_vq8k_imagenet",
                         dict(_VQ8K, vit_enc_model_size="small", vit_dec_model_size="large", num_latent_tokens=256)),
    "titok_ll32_vae_c16": ("yucornetto/tokenizer_titok_ll32_vae_c16_imagenet",
                           dict(_VAE16, vit_enc_model_size="large", vit_dec_model_size="large", num_latent_tokens=32)),
    "titok_bl64_vae_c16": ("yucornetto/tokenizer_titok_bl64_vae_c16_imagenet",
                           dict(_VAE16, vit_enc_model_size="base", vit_dec_model_size="large", num_latent_tokens=64)),
    "titok_bl128_vae_c16": ("yucornetto/tokenizer_titok_bl128_vae_c16_imagenet",
                            dict(_VAE16, vit_enc_model_size="base", vit_dec_model_size="large", num_latent_tokens=128)),
}
# The MaskGIT-VQGAN: one torch state dict, no config (its conf is fixed: vqgan.MASKGIT_VQGAN_F16_256).
MASKGIT_VQGAN_REPO = ("fun-research/TiTok", "maskgit-vqgan-imagenet-f16-256.bin")


# Small configurations (ours) for 32x32 digits: tests and the toy scale. The VQGAN is f4 (8x8 = 64 codes), so the
# TiTok decoder's grid (32 / patch 4 = 8) matches it, as patch 16 matches the f16 VQGAN at 256 px.
def small_vqgan_config(size: str = "tiny", codebook_size: int = 64) -> VQGANConfig:
    ch = {"tiny": 16, "toy": 32}[size]
    return VQGANConfig(channel_mult=(1, 1, 2), num_res_blocks=1, hidden_channels=ch, z_channels=16, resolution=32,
                       codebook_size=codebook_size, norm_groups=8)


def small_titok_config(num_latent_tokens: int = 8, size: str = "tiny", quantize_mode: str = "vq",
                       legacy: bool = False, finetune_decoder: bool = True, codebook_size: int = 64,
                       token_size: int = 8, vqgan: VQGANConfig | None = None) -> TiTokConfig:
    """A TiTok for 32x32 images (patch 4): legacy=True predicts the codes of `vqgan` (small_vqgan_config)."""
    return TiTokConfig(codebook_size=codebook_size, token_size=token_size, use_l2_norm=quantize_mode == "vq",
                       vit_enc_model_size=size, vit_dec_model_size=size, vit_enc_patch_size=4, vit_dec_patch_size=4,
                       num_latent_tokens=num_latent_tokens, finetune_decoder=finetune_decoder and legacy,
                       is_legacy=legacy, quantize_mode=quantize_mode, image_size=32,
                       pixel_vqgan=(vqgan or small_vqgan_config(size)).to_dict())


def released_config(name: str, stage: int = 2) -> TiTokConfig:
    """The TiTokConfig of a released tokenizer; stage=1 gives the legacy models' stage-1 architecture."""
    if name not in RELEASED:
        raise ValueError(f"unknown released tokenizer {name!r}; known: {', '.join(RELEASED)}")
    vq = dict(RELEASED[name][1])
    if stage == 1:
        if not vq.get("is_legacy", True):
            raise ValueError(f"{name} is trained in one stage (no stage-1 model)")
        vq["finetune_decoder"] = False
    return TiTokConfig.from_dict(vq)


def build_released(name: str, stage: int = 2) -> TiTok:
    return TiTok(released_config(name, stage))


def load_tokenizer(path_or_folder: str | Path, config: str | Mapping | None = None):
    """A tokenizer from a save_pretrained folder (config.json + weights), the released MaskGIT-VQGAN file, or a
    bare TiTok weights file (the original's `tokenizer_titok_b64.bin`) with `config` = a RELEASED name, a
    YAML/JSON config in the original's shape (configs/infer/*.yaml) or such a mapping. Loading is strict."""
    from projects.titok_rar.hub import load_strict, read_state_dict
    path = Path(path_or_folder)
    if path.is_file():
        if path.suffix not in (".bin", ".pt", ".pth", ".safetensors"):
            raise ValueError(f"{path}: expected a tokenizer folder (config.json + model.safetensors) or a weights file")
        if config is None:
            return MaskGITVQGAN.from_released(str(path))
        if isinstance(config, str) and config in RELEASED:
            cfg = released_config(config)
        elif isinstance(config, Mapping):
            cfg = TiTokConfig.from_dict(config)
        else:
            from omegaconf import OmegaConf
            if not Path(config).is_file():
                raise FileNotFoundError(f"config={config}: neither a released name ({', '.join(RELEASED)}) nor a file")
            cfg = TiTokConfig.from_dict(OmegaConf.to_container(OmegaConf.load(config), resolve=False))
        model = TiTok(cfg)
        load_strict(model, read_state_dict(path), str(path))
        return model.eval()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no tokenizer here (expected a folder with config.json)")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (not a save_pretrained tokenizer folder)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: not valid JSON ({e})") from None
    name = cfg.get("_class_name", "TiTok")  # the original's TiTok config.json files have no class name
    if name not in TOKENIZER_CLASSES:
        raise ValueError(f"{cfg_path}: _class_name {name!r}; known: {', '.join(TOKENIZER_CLASSES)}")
    return TOKENIZER_CLASSES[name].from_pretrained(path)


__all__ = ["load_tokenizer", "build_released", "released_config", "small_titok_config", "small_vqgan_config", "RELEASED", "TOKENIZER_CLASSES",
           "TiTok", "TATiTok", "TiTokConfig", "MaskGITVQGAN", "VQGANConfig"]
