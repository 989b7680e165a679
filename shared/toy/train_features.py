"""Train the digits CNN (digit + colour classifier) that scores toy-scale samples; report its test accuracy.

Outputs in out_dir: features.safetensors (weights + id), metrics.json (test accuracies), config.yaml, the training
loss and lr in metrics.jsonl (shared.train's StepLogger) and their curves in curves.png + curves.csv.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from shared import plots
from shared.config import cli, resolve, save_resolved
from shared.train.log import StepLogger
from shared.toy import features
from shared.toy.dataset import load_arrays
from shared.io import write_json


@dataclass
class Config:
    data_dir: str = "data/toy/digits"
    out_dir: str = "results/toy/digits_features"
    scale: str = "toy"
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32
    feature_dim: int = 64
    seed: int = 0
    threads: int = 1  # torch threads: 1 keeps the weights (hence every FD) independent of the machine; 0 = default


PRESETS = {"tiny": {"epochs": 1, "width": 8, "feature_dim": 16}, "toy": {}, "paper": {"threads": 0}}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 px, so generated digits that are slightly off-centre still classify."""
    pad = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    return pad[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


@torch.no_grad()
def accuracy(model: features.DigitsNet, images: torch.Tensor, digits: torch.Tensor, colours: torch.Tensor,
             batch_size: int = 256) -> dict[str, float]:
    model.eval()
    pd, pc = [], []
    for i in range(0, len(images), batch_size):
        ld, lc = model(images[i:i + batch_size])
        pd.append(ld.argmax(1))
        pc.append(lc.argmax(1))
    pd, pc = torch.cat(pd), torch.cat(pc)
    return {"digit_accuracy": (pd == digits).float().mean().item(),
            "colour_accuracy": (pc == colours).float().mean().item(),
            "joint_accuracy": ((pd == digits) & (pc == colours)).float().mean().item()}


def _tensors(split_dir: Path):
    images, digits, colours = load_arrays(split_dir)
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float(), torch.from_numpy(digits).long(),
            torch.from_numpy(colours).long())


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    x_train, d_train, c_train = _tensors(Path(cfg.data_dir) / "train")
    x_test, d_test, c_test = _tensors(Path(cfg.data_dir) / "test")

    model = features.DigitsNet(width=cfg.width, feature_dim=cfg.feature_dim)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(len(x_train) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="digits features")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)  # a rerun trains afresh: its log too
    # ~50 rows whatever the length (every step at tiny scale), for the training curves
    logger = StepLogger(out, every=max(1, cfg.epochs * steps_per_epoch // 50), progress=False)
    step = 0
    for _ in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            ld, lc = model(_augment(x_train[idx], gen))
            loss = F.cross_entropy(ld, d_train[idx]) + F.cross_entropy(lc, c_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            used_lr = opt.param_groups[0]["lr"]  # the rate this update used (the schedule moves on below)
            sched.step()
            step += 1
            logger.add({"loss": loss.detach()})
            logger.end_step(step, lambda: {"lr": used_lr})
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    if logger.pending:
        logger.flush(step, {"lr": used_lr})
    logger.close()
    plots.training_curves(out / "metrics.jsonl", out / "curves.png",
                          title=f"Digits feature CNN training ({cfg.scale} scale, batch {cfg.batch_size})")

    metrics = accuracy(model, x_test, d_test, c_test)
    extractor_id = features.save(model, out / "features.safetensors")
    write_json(out / "metrics.json", {"extractor_id": extractor_id, "num_test": len(x_test), **metrics})
    save_resolved(cfg, out)
    print(f"test accuracy: digit {metrics['digit_accuracy']:.3f}, colour {metrics['colour_accuracy']:.3f} "
          f"-> {out / 'features.safetensors'}")
    return metrics


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
