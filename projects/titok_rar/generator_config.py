"""The generators' step configuration, in the original's nested shape (bytedance/1d-tokenizer
configs/training/generator/{maskgit,rar}.yaml, configs/training/MaskGen/*.yaml): experiment, model.vq_model,
model.generator (MaskGIT / RAR), model.maskgen + model.text_encoder (MaskGen), losses, dataset, optimizer,
lr_scheduler, training; plus our top-level `generator` (maskgit | rar | maskgen), `order` (RAR ablation), `scale`.

    python projects/titok_rar/train_generator.py config=projects/titok_rar/configs/generator/rar.yaml \
        model.generator.hidden_size=1024 experiment.output_dir=runs/rar_l          # the original's spelling works
    cfg = load(Config, {...})                                                    # in Python

Keys the original configs carry for the tokenizer (vit sizes, use_l2_norm, ...) are accepted and ignored here: the
generators read only codebook_size and num_latent_tokens (and take both from the token folder's meta.json when 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from shared.config import ConfigError
from shared.train.trainer import TrainConfig

GENERATOR_KINDS = ("maskgit", "rar", "maskgen")
ORDERS = ("annealed", "raster", "random")


@dataclass
class Experiment:
    project: str = "titok_generation"
    name: str = ""
    output_dir: str = "results/toy/titok_rar/generators/run"
    max_train_examples: int = 0
    save_every: int = 500
    eval_every: int = 0           # the original evaluates while training; here sample.py + evaluate are steps
    generate_every: int = 0
    log_every: int = 10
    log_grad_norm_every: int = 0
    resume: bool = True           # always: the Trainer resumes from output_dir/checkpoints
    tokenizer_checkpoint: str = ""   # the tokenizer that decodes the tokens (sample.py)
    generator_checkpoint: str = ""   # sample.py: a released weights file (rar_b.bin) or our final/ folder
    init_weight: str = ""            # train: start from these generator weights


@dataclass
class VQModel:
    codebook_size: int = 0        # 0 = the token folder's meta.json
    num_latent_tokens: int = 0    # 0 = the token folder's meta.json
    token_size: int = 0
    text_embed_dim: int = 0       # MaskGen: 0 = the text encoder's width
    # read by the tokenizer, accepted here so the original YAML files load unchanged
    quantize_mode: str = "vq"
    use_l2_norm: bool = True
    commitment_cost: float = 0.25
    clustering_vq: bool = False
    vit_enc_model_size: str = ""
    vit_dec_model_size: str = ""
    vit_enc_patch_size: int = 16
    vit_dec_patch_size: int = 16
    finetune_decoder: bool = False
    is_legacy: bool = True
    pretrained_tokenizer_weight: str = ""


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
class TextEncoder:
    kind: str = "open_clip"       # open_clip (paper) | toy
    model_name: str = "ViT-L-14-336"
    pretrained: str = ""          # open_clip: local weights file from the download rule
    width: int = 64               # toy encoder
    layers: int = 2
    heads: int = 4
    context_length: int = 8
    train: bool = False           # toy: trained with MaskGen; the paper's CLIP stays frozen


@dataclass
class Model:
    vq_model: VQModel = field(default_factory=VQModel)
    generator: Generator = field(default_factory=Generator)
    maskgen: MaskGenSection = field(default_factory=MaskGenSection)
    text_encoder: TextEncoder = field(default_factory=TextEncoder)


@dataclass
class Losses:
    label_smoothing: float = 0.1
    loss_weight_unmasked_token: float = 0.1


@dataclass
class DatasetParams:
    pretokenization: str = ""     # our token folder (token_data.py); the original: a JSONL of tokens
    train_shards_path_or_url: str = ""
    eval_shards_path_or_url: str = ""
    num_workers_per_gpu: int = 0
    dataset_with_class_label: bool = True
    dataset_with_text_label: bool = False


@dataclass
class Preprocessing:
    resize_shorter_edge: int = 256
    crop_size: int = 256
    random_crop: bool = False
    random_flip: bool = True
    res_ratio_filtering: bool = False


@dataclass
class Dataset:
    params: DatasetParams = field(default_factory=DatasetParams)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)


@dataclass
class OptimizerParams:
    learning_rate: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.96
    weight_decay: float = 0.03


@dataclass
class Optimizer:
    name: str = "adamw"
    params: OptimizerParams = field(default_factory=OptimizerParams)


@dataclass
class LRParams:
    learning_rate: Any = 2e-4     # the original interpolates ${optimizer.params.learning_rate}
    warmup_steps: int = 10_000
    end_lr: float = 1e-5


@dataclass
class LRScheduler:
    scheduler: str = "cosine"
    params: LRParams = field(default_factory=LRParams)


@dataclass
class Training:
    gradient_accumulation_steps: int = 1
    per_gpu_batch_size: int = 64
    mixed_precision: str = "bf16"
    enable_tf32: bool = True
    enable_wandb: bool = False
    use_ema: bool = True
    ema_decay: float = 0.9999     # ours: the original's EMAModel decay is not in its YAML
    seed: int = 42
    max_train_steps: int = 500_000
    max_grad_norm: float = 1.0
    num_generated_images: int = 2


@dataclass
class Config:
    scale: str = "toy"
    config: str = ""              # the original's `config=<yaml>`: merged under the other options
    generator: str = "maskgit"    # maskgit | rar | maskgen
    order: str = "annealed"       # RAR: annealed (randomness_anneal_start/end) | raster | random
    experiment: Experiment = field(default_factory=Experiment)
    model: Model = field(default_factory=Model)
    losses: Losses = field(default_factory=Losses)
    dataset: Dataset = field(default_factory=Dataset)
    optimizer: Optimizer = field(default_factory=Optimizer)
    lr_scheduler: LRScheduler = field(default_factory=LRScheduler)
    training: Training = field(default_factory=Training)
    threads: int = 0              # torch CPU threads; 0 = torch default
    progress: bool = True         # progress bar while training
    preempt_signals: str = "SIGUSR2,SIGTERM"


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


def check(cfg) -> None:
    if cfg.generator not in GENERATOR_KINDS:
        raise ConfigError(f"generator={cfg.generator!r}; allowed: {', '.join(GENERATOR_KINDS)}")
    if cfg.order not in ORDERS:
        raise ConfigError(f"order={cfg.order!r}; allowed: {', '.join(ORDERS)}")
    if cfg.optimizer.name != "adamw":
        raise ConfigError(f"optimizer.name={cfg.optimizer.name!r}; allowed: adamw")
    if cfg.lr_scheduler.scheduler not in ("cosine", "constant", "warmup", "linear"):
        raise ConfigError(f"lr_scheduler.scheduler={cfg.lr_scheduler.scheduler!r}; "
                          "allowed: cosine, constant, warmup, linear")


def train_config(cfg) -> TrainConfig:
    t, o, s = cfg.training, cfg.optimizer.params, cfg.lr_scheduler
    return TrainConfig(run_dir=cfg.experiment.output_dir, max_steps=t.max_train_steps, seed=t.seed,
                       mixed_precision=t.mixed_precision, grad_accum=t.gradient_accumulation_steps,
                       max_grad_norm=t.max_grad_norm, lr_schedule=s.scheduler, warmup_steps=s.params.warmup_steps,
                       min_lr_ratio=s.params.end_lr / o.learning_rate if o.learning_rate else 0.0,
                       ema_decay=t.ema_decay if t.use_ema else 0.0, ckpt_every=cfg.experiment.save_every,
                       log_every=cfg.experiment.log_every, preempt_signals=cfg.preempt_signals,
                       progress=cfg.progress)


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
