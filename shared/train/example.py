"""Train a small MLP on sklearn's 8x8 digits with shared.train: a worked example and a preemption/requeue drill.

Starting the same command again resumes from run_dir (its newest complete checkpoint); once max_steps are done it
only re-evaluates. `step_sleep` slows every micro-batch so a test, or a SLURM drill (`scontrol requeue <jobid>`,
`scancel --signal=USR2 <jobid>`), can interrupt it mid-run. Exit code 75 means "preempted, checkpoint saved:
requeue me" (see shared/train/preempt.py); 0 means finished.

    python -m shared.train.example scale=tiny run_dir=runs/example step_sleep=0.2
    torchrun --standalone --nproc_per_node 2 -m shared.train.example scale=tiny run_dir=runs/example_ddp

Outputs in run_dir: checkpoints/ckpt-*/, metrics.jsonl, metrics.json (test accuracy), model.safetensors
(EMA weights when ema_decay > 0), config.yaml.
"""
from __future__ import annotations

import gzip
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.config import cli, resolve
from shared.train.trainer import TrainConfig, Trainer


@dataclass
class Config(TrainConfig):
    run_dir: str = "runs/toy/train_example"
    scale: str = "toy"
    batch_size: int = field(default=32, metadata={"help": "per process (global = x processes x grad_accum)"})
    lr: float = 3e-3
    weight_decay: float = 1e-4
    hidden: int = 64
    dropout: float = 0.1
    noise: float = field(default=0.1, metadata={"help": "std of pixel noise on training inputs (0 = none)"})
    step_sleep: float = field(default=0.0, metadata={"help": "seconds per micro-batch, to interrupt mid-run"})
    threads: int = field(default=0, metadata={"help": "torch threads; 0 = torch's default"})

PRESETS = {
    "tiny": {"max_steps": 60, "ckpt_every": 10, "log_every": 5, "hidden": 32, "lr": 1e-2},
    "toy": {"max_steps": 600, "ckpt_every": 100, "lr_schedule": "cosine", "warmup_steps": 20, "ema_decay": 0.99},
    "paper": {"max_steps": 3000, "ckpt_every": 250, "lr_schedule": "cosine", "warmup_steps": 100,
              "ema_decay": 0.999, "milestone_every": 1000},
}


def load_digits_split(test_fraction: float = 0.2) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """((x_train, y_train), (x_test, y_test)): pixels scaled to 0..1, a fixed seeded split."""
    spec = importlib.util.find_spec("sklearn")
    # Read the CSV that sklearn ships directly: importing sklearn.datasets pulls in scipy (~3 s per start).
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.is_file():
        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.float32)
        x, y = data[:, :-1], data[:, -1].astype(np.int64)
    else:
        from sklearn.datasets import load_digits
        d = load_digits()
        x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    n_test = int(len(y) * test_fraction)
    te, tr = order[:n_test], order[n_test:]
    x = torch.from_numpy(x / 16.0)
    y = torch.from_numpy(y)
    return (x[tr], y[tr]), (x[te], y[te])


class MLP(nn.Module):
    def __init__(self, hidden: int = 64, dropout: float = 0.1, inputs: int = 64, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    acc = (model(x).argmax(1) == y).float().mean().item()
    model.train(was_training)
    return acc


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    trainer = Trainer(cfg)
    (x_train, y_train), (x_test, y_test) = load_digits_split()
    model = MLP(cfg.hidden, cfg.dropout)
    model, _ = trainer.add("model", model, torch.optim.AdamW(model.parameters(), lr=cfg.lr,
                                                             weight_decay=cfg.weight_decay))
    noise = trainer.generator("noise", seed=cfg.seed * 1000 + trainer.rank)
    model.train()
    for x, y in trainer.batches(trainer.loader((x_train, y_train), cfg.batch_size)):
        if cfg.noise > 0:
            x = x + cfg.noise * torch.randn(x.shape, generator=noise, device=x.device)
        loss = F.cross_entropy(model(x), y)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss)
        if cfg.step_sleep > 0:
            time.sleep(cfg.step_sleep)

    raw, ema = trainer.unit("model").raw, trainer.ema("model")
    x_test, y_test = x_test.to(trainer.device), y_test.to(trainer.device)
    metrics = {"test_accuracy": accuracy(raw, x_test, y_test), "skipped_steps": trainer.skipped_steps}
    if ema is not None:
        with ema.swap(raw):
            metrics["test_accuracy_ema"] = accuracy(raw, x_test, y_test)
    trainer.save_weights(Path(cfg.run_dir) / "model.safetensors", "model")
    trainer.finish(metrics)
    if trainer.is_main:
        print(f"step {trainer.global_step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
