"""Training infrastructure on accelerate that survives real clusters.

Pieces (usable alone or through `Trainer`):
    Trainer / TrainConfig      the loop helper a project's train.py wires together (trainer.py)
    Checkpointer               atomic checkpoints, last N + milestones, resume from the newest complete one
    EMA                        parameter EMA with decay warm-up
    StepLogger                 metrics.jsonl/.csv, tqdm, optional wandb/tensorboard
    PreemptionHandler          SIGUSR2/SIGTERM -> save at the next step boundary -> exit PREEMPTED_EXIT_CODE (75)
    seed_everything, capture_rng, restore_rng
    make_lr_schedule           constant | warmup | cosine | linear (registry: register_schedule)
    TextEmbeddingCache         on-disk cache of frozen text-encoder outputs
    fsdp_plugin                FSDP presets for the cluster
Data: `Trainer.loader()` builds a shared.data.ResumableLoader (the one resumable loader) and checkpoints it.
See shared/train/example.py for a complete step script.
"""
from shared.train.checkpoint import CheckpointInfo, Checkpointer
from shared.train.ema import EMA
from shared.train.fsdp import FSDP_PRESETS, WRAP_CLASSES, fsdp_plugin, fsdp_plugin_kwargs
from shared.train.log import StepLogger
from shared.train.preempt import PREEMPTED_EXIT_CODE, Preempted, PreemptionHandler
from shared.train.schedules import SCHEDULES, make_lr_schedule, register_schedule
from shared.train.seed import capture_rng, restore_rng, seed_everything
from shared.train.text_cache import TextEmbeddingCache
from shared.train.trainer import TrainConfig, Trainer, train_config

__all__ = [
    "CheckpointInfo", "Checkpointer", "EMA", "FSDP_PRESETS", "Preempted", "PreemptionHandler",
    "PREEMPTED_EXIT_CODE", "SCHEDULES", "StepLogger", "TextEmbeddingCache", "TrainConfig", "Trainer", "WRAP_CLASSES",
    "capture_rng", "fsdp_plugin", "fsdp_plugin_kwargs", "make_lr_schedule", "register_schedule", "restore_rng",
    "seed_everything", "train_config",
]
