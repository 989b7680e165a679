"""The original's config sections, one schema for every titok_rar training and sampling step.

    from projects.titok_rar.schema import Experiment, VQModel, Dataset, Optimizer, LRScheduler, Training, section
    @dataclass
    class Config:
        experiment: Experiment = section(Experiment, project="titok")          # this step's defaults
        training: Training = section(Training, per_gpu_batch_size=64)
    cfg = resolve(Config, with_config_file(given), PRESETS)                    # `config=<yaml>` as there
    trainer = Trainer(train_config(cfg))

bytedance/1d-tokenizer's YAML files (configs/training/TiTok/*, TA-TiTok/*, generator/*, MaskGen/*) share the
sections experiment, model.vq_model, model.text_encoder, dataset, optimizer, lr_scheduler and training, with the
same key names in every script; only their defaults differ by script. So the sections are defined once here, with
every key any of the original's configs carries in them, and each step (train_tokenizer.py, generator_config.py)
states its own defaults with `section(...)`. A key only one step reads is accepted by the other (as the original
accepts it: its scripts read what they need from one OmegaConf tree); the comment beside each key says who reads it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from shared.config import ConfigError
from shared.train.trainer import TrainConfig

LR_SCHEDULES = ("cosine", "constant", "warmup", "linear")


def section(cls, **defaults: Any):
    """A dataclass field holding `cls` with this step's `defaults` (nested sections as dicts)."""
    def make():
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name not in defaults:
                continue
            value = defaults[f.name]
            sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            kw[f.name] = dataclasses.replace(sub, **value) if dataclasses.is_dataclass(sub) and isinstance(value, dict) else value
        unknown = set(defaults) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"{cls.__name__}: no keys {sorted(unknown)}")
        return cls(**kw)
    return field(default_factory=make)


@dataclass
class Experiment:
    project: str = "titok"
    name: str = ""
    output_dir: str = "results/toy/titok_rar/run"
    max_train_examples: int = 0
    save_every: int = 500
    eval_every: int = 0           # the original evaluates while training; here evaluate / sample are their own steps
    generate_every: int = 0
    log_every: int = 10
    log_grad_norm_every: int = 0
    resume: bool = True           # always: the Trainer resumes from output_dir/checkpoints
    init_weight: str = ""         # tokenizer stage 2: the stage-1 tokenizer; generators: start from these weights
    tokenizer_checkpoint: str = ""   # generators (sample.py): the tokenizer that decodes the tokens
    generator_checkpoint: str = ""   # generators (sample.py): a released weights file (rar_b.bin) or our final/


@dataclass
class VQModel:
    """`model.vq_model`: the tokenizer's architecture (titok.TiTokConfig: same names) and its teacher. The
    tokenizer step builds a TiTok from it; the generators read codebook_size, num_latent_tokens (0 = the token
    folder's meta.json) and text_embed_dim (MaskGen; 0 = the text encoder's width)."""
    codebook_size: int = 4096
    token_size: int = 12
    use_l2_norm: bool = True
    commitment_cost: float = 0.25
    vit_enc_model_size: str = "large"
    vit_dec_model_size: str = "large"
    vit_enc_patch_size: int = 16
    vit_dec_patch_size: int = 16
    num_latent_tokens: int = 32
    finetune_decoder: bool = True
    is_legacy: bool = True
    quantize_mode: str = "vq"
    text_context_length: int = 77            # TA-TiTok: the text guidance's length and width (CLIP ViT-L/14)
    text_embed_dim: int = 768
    pretrained_tokenizer_weight: str = ""    # the MaskGIT-VQGAN: proxy codes (stage 1), pixel decoder (stage 2)
    clustering_vq: bool = False              # TA-TiTok's codebook trick: accepted, not implemented


@dataclass
class TextEncoder:
    """`model.text_encoder` (ours; the original hard-codes open_clip ViT-L-14-336 'openai' in its scripts):
    MaskGen's condition and TA-TiTok's text guidance (maskgen.build_text_encoder)."""
    kind: str = "open_clip"       # open_clip (paper) | toy
    # the original's 'openai' ViT-L-14-336 weights need QuickGELU; given as a file, the architecture must say it
    model_name: str = "ViT-L-14-336-quickgelu"
    pretrained: str = ""          # open_clip: local weights file from the download rule
    width: int = 64               # toy encoder
    layers: int = 2
    heads: int = 4
    context_length: int = 8
    train: bool = False           # MaskGen toy: trained with the model; the paper's CLIP (and TA-TiTok's) stay frozen


@dataclass
class DatasetParams:
    train_shards_path_or_url: str = ""
    eval_shards_path_or_url: str = ""
    pretokenization: str = ""     # generators: our token folder (token_data.py); the original: a JSONL of tokens
    caption_key: str = "json:caption"   # ours, TA-TiTok: where shards keep captions ("txt": img2dataset/DataComp)
    num_workers_per_gpu: int = 0
    dataset_with_class_label: bool = True     # (the shards here carry both when they have them)
    dataset_with_text_label: bool = False


@dataclass
class Preprocessing:
    resize_shorter_edge: int = 256
    crop_size: int = 256
    random_crop: bool = True
    random_flip: bool = True
    res_ratio_filtering: bool = False         # the original drops odd aspect ratios from DataComp; not done here


@dataclass
class Dataset:
    params: DatasetParams = field(default_factory=DatasetParams)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)


@dataclass
class OptimizerParams:
    learning_rate: float = 1e-4
    discriminator_learning_rate: float = 1e-4   # tokenizer: the discriminator's AdamW
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 1e-4
    epsilon: float = 1e-8


@dataclass
class Optimizer:
    name: str = "adamw"
    params: OptimizerParams = field(default_factory=OptimizerParams)


@dataclass
class LRParams:
    learning_rate: Any = 1e-4     # the original interpolates ${optimizer.params.learning_rate}; not read here
    warmup_steps: int = 0
    end_lr: float = 1e-5


@dataclass
class LRScheduler:
    scheduler: str = "cosine"
    params: LRParams = field(default_factory=LRParams)


@dataclass
class Training:
    gradient_accumulation_steps: int = 1
    per_gpu_batch_size: int = 32
    mixed_precision: str = "no"
    enable_tf32: bool = True
    enable_wandb: bool = False
    use_ema: bool = True
    ema_decay: float = 0.999      # ours: the original's EMAModel decay is not in its YAML
    seed: int = 42
    max_train_steps: int = 1000
    num_generated_images: int = 2
    max_grad_norm: float = 1.0


def with_config_file(cfg: Any) -> Any:
    """`config=<yaml>` as the original takes it: the file's values under the ones given beside it."""
    if cfg is None:
        return cfg
    given = OmegaConf.create(OmegaConf.to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg))
    path = given.get("config") or ""
    if not path:
        return given
    if not Path(path).is_file():
        raise ConfigError(f"config={path}: no such config file")
    return OmegaConf.merge(OmegaConf.load(path), given)


def check_optimization(cfg) -> None:
    if cfg.optimizer.name != "adamw":
        raise ConfigError(f"optimizer.name={cfg.optimizer.name!r}; allowed: adamw")
    if cfg.lr_scheduler.scheduler not in LR_SCHEDULES:
        raise ConfigError(f"lr_scheduler.scheduler={cfg.lr_scheduler.scheduler!r}; allowed: {', '.join(LR_SCHEDULES)}")


def train_config(cfg) -> TrainConfig:
    """shared.train's options from the original's sections (end_lr as a ratio of the optimizer's lr)."""
    check_optimization(cfg)
    t, o, s = cfg.training, cfg.optimizer.params, cfg.lr_scheduler
    return TrainConfig(run_dir=cfg.experiment.output_dir, max_steps=t.max_train_steps, seed=t.seed,
                       mixed_precision=t.mixed_precision, grad_accum=t.gradient_accumulation_steps,
                       max_grad_norm=t.max_grad_norm, lr_schedule=s.scheduler, warmup_steps=s.params.warmup_steps,
                       min_lr_ratio=s.params.end_lr / o.learning_rate if o.learning_rate else 0.0,
                       ema_decay=t.ema_decay if t.use_ema else 0.0, ckpt_every=cfg.experiment.save_every,
                       log_every=cfg.experiment.log_every, preempt_signals=cfg.preempt_signals,
                       progress=cfg.progress)
