"""The toy ImageNet-64 analogue's teacher: a class-conditional EDM (ADM network, EDM preconditioning and loss)
trained on the toy digits in pixel space, 80 classes (digit x colour), label dropout for an unconditional mode.

    python projects/dmd2/train_teacher.py data=data/toy/dmd2/digits/real.lmdb run_dir=results/toy/dmd2/teacher

Outputs in run_dir: edm.json (network kwargs), model.safetensors (EMA weights, EDMPrecond key names: the same
format backbones.EDMBackbone.load reads for the released ImageNet weights), grid.png, checkpoints/ (resumed from).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from shared.config import cli, resolve
from shared.data import LMDBDataset
from shared.io import atomic_path, write_json
from shared.plots import image_grid
from shared.train.trainer import TrainConfig, Trainer
from projects.dmd2.edm import EDM_CONFIGS, build_edm


@dataclass
class Config(TrainConfig):
    scale: str = "toy"
    run_dir: str = "results/toy/dmd2/teacher"
    data: str = "data/toy/dmd2/digits/real.lmdb"
    network: str = "digits"  # EDM_CONFIGS name
    label_dropout: float = 0.1
    batch_size: int = 64
    lr: float = 2e-3
    p_mean: float = -1.2  # log-normal training sigma distribution (EDM)
    p_std: float = 1.2
    sigma_data: float = 0.5
    grid_size: int = 8
    threads: int = 0


PRESETS = {
    "tiny": {"max_steps": 2, "batch_size": 4, "ckpt_every": 1, "log_every": 1, "progress": False,
             "grid_size": 2},
    "toy": {"max_steps": 1500, "batch_size": 32, "ckpt_every": 250, "log_every": 50, "lr_schedule": "cosine", "warmup_steps": 100,
            "min_lr_ratio": 0.05, "ema_decay": 0.999},
    "paper": {"max_steps": 50000, "batch_size": 256, "lr": 1e-3, "ckpt_every": 2000, "lr_schedule": "warmup",
              "warmup_steps": 1000, "ema_decay": 0.9999},
}


def edm_loss(net, x0, labels, p_mean: float, p_std: float, sigma_data: float) -> torch.Tensor:
    """EDM training loss: sigma ~ logN(p_mean, p_std), weight (s^2 + sd^2) / (s sd)^2."""
    sigma = (torch.randn(x0.shape[0], 1, 1, 1, device=x0.device) * p_std + p_mean).exp()
    weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
    d = net(x0 + sigma * torch.randn_like(x0), sigma, labels)
    return (weight * (d - x0) ** 2).mean()


def network_kwargs(cfg) -> dict:
    return {**EDM_CONFIGS[cfg.network], "label_dropout": cfg.label_dropout, "sigma_data": cfg.sigma_data}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    trainer = Trainer(cfg)
    ds = LMDBDataset(cfg.data, fields=["image", "label"])
    # the toy set is small: hold it in memory as tensors (the loader indexes them in one go)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    labels = torch.tensor([ds[i]["label"] for i in range(len(ds))])
    kwargs = network_kwargs(cfg)
    net = build_edm(kwargs)
    if images.shape[-1] != net.img_resolution:
        raise ValueError(f"{cfg.data}: images are {images.shape[-1]}px, network '{cfg.network}' is "
                         f"{net.img_resolution}px")
    net, _ = trainer.add("edm", net, torch.optim.Adam(net.parameters(), lr=cfg.lr))
    net.train()
    for x, y in trainer.batches(trainer.loader((images, labels), cfg.batch_size)):
        x0 = x.float() / 127.5 - 1
        onehot = F.one_hot(y, net.module.label_dim if hasattr(net, "module") else kwargs["label_dim"]).float()
        loss = edm_loss(net, x0, onehot, cfg.p_mean, cfg.p_std, cfg.sigma_data)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss)

    run_dir = Path(cfg.run_dir)
    trainer.save_weights(run_dir / "model.safetensors", "edm")
    if trainer.is_main:
        write_json(run_dir / "edm.json", {k: v for k, v in kwargs.items() if k != "label_dropout"})
        from projects.dmd2.backbones import EDMBackbone
        from projects.dmd2.generation import prompts_for_grid, teacher_generate, to_pil

        bb = EDMBackbone.load(run_dir)
        n = cfg.grid_size
        images = teacher_generate(bb, prompts_for_grid(bb, n * n), "edm_dpm++", 16, seeds=range(n * n))
        with atomic_path(run_dir / "grid.png") as tmp:
            image_grid(to_pil(images), n).save(tmp, format="PNG")
    trainer.finish({"steps": trainer.global_step})
    return run_dir


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
