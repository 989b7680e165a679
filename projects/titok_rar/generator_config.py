"""The generators' step configuration, in the original's nested shape (bytedance/1d-tokenizer
configs/training/generator/{maskgit,rar}.yaml, configs/training/MaskGen/*.yaml): experiment, model.vq_model,
model.generator (MaskGIT / RAR), model.maskgen + model.text_encoder (MaskGen), losses, dataset, optimizer,
lr_scheduler, training; plus our top-level `generator` (maskgit | rar | maskgen), `order` (RAR ablation), `scale`.

    python projects/titok_rar/train_generator.py config=projects/titok_rar/configs/generator/rar.yaml \
        model.generator.hidden_size=1024 experiment.output_dir=runs/rar_l          # the original's spelling works
    cfg = load(Config, {...})                                                    # in Python

The shared sections (experiment, model.vq_model, model.text_encoder, dataset, optimizer, lr_scheduler, training) are
schema.py's, the tokenizer step's too; the generator step's defaults are stated here. Keys the original configs
carry for the tokenizer (vit sizes, use_l2_norm, ...) are accepted and ignored here: the generators read only
codebook_size and num_latent_tokens (and take both from the token folder's meta.json when 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from shared.config import ConfigError
from projects.titok_rar.schema import (Dataset, Experiment, LRScheduler, Optimizer, TextEncoder, Training, VQModel,
                                       check_optimization, section)

GENERATOR_KINDS = ("maskgit", "rar", "maskgen")
ORDERS = ("annealed", "raster", "random")


@dataclass
class Generator:
    """MaskGIT (maskgit.py) and RAR (rar.py) options; each reads its own."""
    model_type: str = "ViT"
    hidden_size: int = 768
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 3072
    dropout: float = 0.1
    attn_drop: float = 0.1
    num_steps: int = 8
    class_label_dropout: float = 0.1
    image_seq_len: Any = 0        # 0 = num_latent_tokens (the original writes ${model.vq_model.num_latent_tokens})
    condition_num_classes: int = 1000
    randomize_temperature: float = 1.0
    guidance_scale: float = 4.5
    guidance_decay: str = "constant"
    guidance_scale_pow: float = 3.0
    softmax_temperature_annealing: bool = False
    use_checkpoint: bool = False
    randomness_anneal_start: int = 125_000
    randomness_anneal_end: int = 187_500


@dataclass
class MaskGenSection:
    decoder_embed_dim: int = 1024
    decoder_depth: int = 16
    decoder_num_heads: int = 16
    micro_condition: bool = True
    micro_condition_embed_dim: int = 256
    text_drop_prob: float = 0.1
    condition_num_classes: int = 1000
    cfg: float = 12.0
    num_iter: int = 16
    temperature: float = 2.0
    sample_aesthetic_score: float = 6.0
    weight_tying: bool = True
    mask_schedule_strategy: str = "arccos"
    guidance_decay: str = "cosine"
    guidance_decay_scale_pow: float = 1.0
    softmax_temperature_annealing: bool = True
    prob_sorting: bool = True


@dataclass
class Model:
    # 0 / "" = from the token folder (meta.json) or the tokenizer; not the tokenizer step's architecture defaults
    vq_model: VQModel = section(VQModel, codebook_size=0, num_latent_tokens=0, token_size=0, text_embed_dim=0,
                                vit_enc_model_size="", vit_dec_model_size="", finetune_decoder=False)
    generator: Generator = field(default_factory=Generator)
    maskgen: MaskGenSection = field(default_factory=MaskGenSection)
    text_encoder: TextEncoder = field(default_factory=TextEncoder)


@dataclass
class Losses:
    label_smoothing: float = 0.1
    loss_weight_unmasked_token: float = 0.1


@dataclass
class Config:
    scale: str = "toy"
    config: str = ""              # the original's `config=<yaml>`: merged under the other options
    generator: str = "maskgit"    # maskgit | rar | maskgen
    order: str = "annealed"       # RAR: annealed (randomness_anneal_start/end) | raster | random
    experiment: Experiment = section(Experiment, project="titok_generation",
                                     output_dir="results/toy/titok_rar/generators/run")
    model: Model = field(default_factory=Model)
    losses: Losses = field(default_factory=Losses)
    dataset: Dataset = section(Dataset, preprocessing={"random_crop": False})
    # configs/training/generator/{maskgit,rar}.yaml's optimisation values as defaults
    optimizer: Optimizer = section(Optimizer, params={"learning_rate": 2e-4, "beta2": 0.96, "weight_decay": 0.03})
    lr_scheduler: LRScheduler = section(LRScheduler, params={"learning_rate": 2e-4, "warmup_steps": 10_000})
    training: Training = section(Training, per_gpu_batch_size=64, mixed_precision="bf16", ema_decay=0.9999,
                                 max_train_steps=500_000)
    threads: int = 0              # torch CPU threads; 0 = torch default
    progress: bool = True         # progress bar while training
    preempt_signals: str = "SIGUSR2,SIGTERM"


def check(cfg) -> None:
    if cfg.generator not in GENERATOR_KINDS:
        raise ConfigError(f"generator={cfg.generator!r}; allowed: {', '.join(GENERATOR_KINDS)}")
    if cfg.order not in ORDERS:
        raise ConfigError(f"order={cfg.order!r}; allowed: {', '.join(ORDERS)}")
    check_optimization(cfg)


def model_section(cfg, codebook_size: int, num_tokens: int, text_width: int = 0) -> DictConfig:
    """The `model` part a generator is built from, with the token folder's sizes filled in."""
    m = OmegaConf.to_container(cfg.model, resolve=True)
    vq = m["vq_model"]
    vq["codebook_size"] = int(vq.get("codebook_size") or codebook_size)
    vq["num_latent_tokens"] = int(vq.get("num_latent_tokens") or num_tokens)
    if codebook_size and vq["codebook_size"] != codebook_size:
        raise ConfigError(f"model.vq_model.codebook_size={vq['codebook_size']} but the tokens have "
                          f"{codebook_size} codes (meta.json)")
    if num_tokens and vq["num_latent_tokens"] != num_tokens:
        raise ConfigError(f"model.vq_model.num_latent_tokens={vq['num_latent_tokens']} but the tokens have "
                          f"{num_tokens} per image (meta.json)")
    g = m["generator"]
    g["image_seq_len"] = int(g.get("image_seq_len") or vq["num_latent_tokens"])
    if g["image_seq_len"] != vq["num_latent_tokens"]:
        raise ConfigError(f"model.generator.image_seq_len={g['image_seq_len']} differs from "
                          f"num_latent_tokens={vq['num_latent_tokens']}")
    if text_width:
        vq["text_embed_dim"] = int(vq.get("text_embed_dim") or text_width)
    return OmegaConf.create({"model": m})
