"""Train a small class-conditional pixel-space diffusion UNet (diffusers UNet2DModel) on the toy digits.

One class per (digit, colour) pair, label = digit * 8 + colour (80 classes), plus a null label (80) used for
`p_uncond` of the batches so the model also supports classifier-free guidance. While training, a class's
embedding is tied to digit part + colour part, so each image also teaches the other colours of its digit and
the other digits of its colour (a few minutes of CPU training show each of the 80 pairs only a few hundred
images); the export is a plain UNet2DModel with an 81-row class embedding. Epsilon prediction on a cosine DDPM
schedule with min-SNR-gamma loss weighting (Hang et al. 2023); the EMA weights are exported.

The model works at `resolution` (toy: 16 px). The toy digits are sklearn's 8x8 digits upscaled (bicubic) to 32 px,
so 16 px keeps all they contain and costs a quarter of the compute per image: at the toy budget that buys four
times the training images, which is what makes the samples clean (see README "Performance"). labels.json records
`image_size` (32), and shared/toy/sampler_compare.py upsamples samples to it (bicubic) before scoring.

The loop is `shared.train.Trainer`'s: its LR schedule (cosine with warm-up), EMA (linear warm-up), resumable
batch order (`Trainer.loader()`), checkpointed noise generator, checkpoints every `ckpt_every` steps and on SIGINT,
SIGTERM or SIGUSR2 (save, then exit 75). Starting the same command again resumes from the newest checkpoint and
ends with the weights an uninterrupted run gives (to the bit, at the same thread count).

Outputs in out_dir:
    checkpoints/                  the Trainer's checkpoints (the last `keep_last` kept)
    model/                        diffusers DDPMPipeline folder (unet/ + scheduler/) of the EMA weights, plus
                                  labels.json (the label encoding), written once training is done
    metrics.jsonl                 loss, lr, grad norm, skipped steps every `log_every` steps
    curves.png (+ .csv)           those against the step (shared/plots.py)
    metrics.json, config.yaml, run.json

    python shared/toy/train_diffusion.py scale=toy data_dir=data/toy/digits out_dir=results/toy/digits_diffusion
    python -m shared.toy.train_diffusion scale=tiny data_dir=/tmp/digits out_dir=/tmp/dd max_steps=6
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.training_utils import compute_snr
from omegaconf import OmegaConf
from torch import nn

from shared import plots
from shared.config import cli, resolve
from shared.toy.dataset import COLOUR_NAMES, DIGIT_WORDS, load_arrays
from shared.io import atomic_dir, write_json
from shared.train import TrainConfig, Trainer

NUM_CLASSES = len(DIGIT_WORDS) * len(COLOUR_NAMES)
NULL_LABEL = NUM_CLASSES
ARCHITECTURE_KEYS = ("resolution", "channels", "layers_per_block", "attention", "norm_groups")


def class_label(digit, colour):
    """The class index of a (digit, colour index) pair; works on ints and tensors."""
    return digit * len(COLOUR_NAMES) + colour


@dataclass
class Config(TrainConfig):
    data_dir: str = "data/toy/digits"
    out_dir: str = field(default="results/toy/digits_diffusion", metadata={"help": "outputs; also the run_dir"})
    scale: str = "toy"
    resolution: int = field(default=16, metadata={"help": "model resolution in px (the data is 32 px)"})
    batch_size: int = 32
    lr: float = 2e-3
    p_uncond: float = 0.1  # fraction of labels replaced by the null label (for classifier-free guidance)
    snr_gamma: float = field(default=5.0, metadata={"help": "min-SNR-gamma loss weight; 0 = plain MSE"})
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    layers_per_block: int = 1
    attention: bool = True  # self-attention in the lowest-resolution block
    norm_groups: int = 8
    beta_schedule: str = "squaredcos_cap_v2"  # or linear
    num_train_timesteps: int = 1000
    threads: int = field(default=1, metadata={"help": "torch threads; 1 keeps results independent of the "
                                                      "machine (see README Performance); 0 = torch default"})
    # Trainer options with this step's defaults
    max_steps: int = 1800
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    ema_decay: float = 0.995
    ema_warmup: str = "linear"
    ckpt_every: int = 500
    keep_last: int = 2
    log_every: int = 50
    preempt_signals: str = "SIGUSR2,SIGTERM,SIGINT"  # Ctrl-C saves too


PRESETS = {
    "tiny": {"max_steps": 4, "batch_size": 8, "channels": [8, 16], "attention": False, "norm_groups": 4,
             "ckpt_every": 2, "warmup_steps": 1, "log_every": 1, "progress": False},
    "toy": {},
    "paper": {"max_steps": 20000, "batch_size": 128, "resolution": 32, "channels": [64, 128, 256],
              "layers_per_block": 2, "lr": 2e-4, "ema_decay": 0.9999, "ckpt_every": 2000, "warmup_steps": 500,
              "threads": 0},
}


def build_unet(cfg, label_table: bool = True) -> UNet2DModel:
    """The UNet; with label_table=False it takes class embeddings as vectors (training with LabelEmbedding)."""
    n = len(cfg.channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if cfg.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    labels = {"num_class_embeds": NUM_CLASSES + 1} if label_table else {"class_embed_type": "identity"}
    return UNet2DModel(sample_size=cfg.resolution, in_channels=3, out_channels=3,
                       block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
                       down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=cfg.norm_groups,
                       **labels)


class LabelEmbedding(nn.Module):
    """Embedding of label digit * 8 + colour = digit vector + colour vector; the null label has its own."""

    def __init__(self, dim: int):
        super().__init__()
        self.digit = nn.Embedding(len(DIGIT_WORDS), dim)
        self.colour = nn.Embedding(len(COLOUR_NAMES), dim)
        self.null = nn.Parameter(torch.randn(dim))

    def table(self) -> torch.Tensor:
        pairs = self.digit.weight[:, None, :] + self.colour.weight[None, :, :]
        return torch.cat([pairs.reshape(NUM_CLASSES, -1), self.null[None]])

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table()[labels]


class DigitsDenoiser(nn.Module):
    """UNet + factorised label embedding: eps(x_t, t, label)."""

    def __init__(self, cfg):
        super().__init__()
        self.unet = build_unet(cfg, label_table=False)
        self.labels = LabelEmbedding(self.unet.config.block_out_channels[0] * 4)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=self.labels(labels)).sample


def build_model(cfg) -> DigitsDenoiser:
    return DigitsDenoiser(cfg)


def to_diffusers_unet(model: DigitsDenoiser, cfg) -> UNet2DModel:
    """The trained model as a standard class-conditional UNet2DModel (label table materialised)."""
    unet = build_unet(cfg)
    state = {**model.unet.state_dict(), "class_embedding.weight": model.labels.table().detach()}
    unet.load_state_dict(state)
    return unet


def build_scheduler(cfg) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type="epsilon", clip_sample=True)


def diffusion_loss(model: DigitsDenoiser, scheduler: DDPMScheduler, x0: torch.Tensor, labels: torch.Tensor,
                   gen: torch.Generator, snr_gamma: float) -> torch.Tensor:
    """Epsilon-prediction loss, each timestep weighted by min(SNR, gamma) / SNR (gamma = 0: plain MSE)."""
    noise = torch.randn(x0.shape, generator=gen, device=x0.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=gen, device=x0.device)
    err = (model(scheduler.add_noise(x0, noise, t), t, labels) - noise).pow(2).mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        snr = compute_snr(scheduler, t)
        err = err * torch.clamp(snr, max=snr_gamma) / snr
    return err.mean()


def load_training_data(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in -1..1 at cfg.resolution, class labels) of the train split."""
    images, digits, colours = load_arrays(Path(cfg.data_dir) / "train")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-1] != cfg.resolution:
        x = F.interpolate(x, size=(cfg.resolution, cfg.resolution), mode="area" if x.shape[-1] > cfg.resolution
                          else "bicubic")
    return x, class_label(torch.from_numpy(digits).long(), torch.from_numpy(colours).long())


def _check_architecture(out: Path, cfg) -> None:
    """A run_dir holding a different architecture cannot be resumed; say so before loading anything."""
    saved = out / "config.yaml"
    if not saved.is_file() or not (out / "checkpoints").is_dir():
        return
    old = OmegaConf.to_container(OmegaConf.load(saved))
    differs = {k: (old.get(k), cfg[k]) for k in ARCHITECTURE_KEYS if str(old.get(k)) != str(cfg[k])}
    if differs:
        raise ValueError(f"{out}: trained with " + ", ".join(f"{k}={a}" for k, (a, _) in differs.items())
                         + " but the config asks for " + ", ".join(f"{k}={b}" for k, (_, b) in differs.items())
                         + "; use another out_dir or matching settings")


def export_model(model: DigitsDenoiser, cfg, model_dir: Path, step: int, image_size: int) -> None:
    """Write the diffusers folder atomically: a reader never sees a half-exported model."""
    with atomic_dir(model_dir) as tmp:
        DDPMPipeline(unet=to_diffusers_unet(model, cfg), scheduler=build_scheduler(cfg)).save_pretrained(tmp)
        write_json(tmp / "labels.json", {"encoding": "digit * num_colours + colour", "num_digits": len(DIGIT_WORDS),
                                         "colours": COLOUR_NAMES, "null_label": NULL_LABEL, "train_step": step,
                                         "image_size": image_size})


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    cfg.run_dir = str(out)
    _check_architecture(out, cfg)
    x_all, labels_all = load_training_data(cfg)
    image_size = int(load_arrays(Path(cfg.data_dir) / "test")[0].shape[1])

    trainer = Trainer(cfg)
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    model, _ = trainer.add("model", model, opt)
    raw = trainer.unit("model").raw
    scheduler = build_scheduler(cfg)
    loader = trainer.loader((x_all, labels_all), cfg.batch_size)
    gen = trainer.generator("noise", cfg.seed * 1_000_003 + 1)

    t0 = time.time()
    losses = []
    for x0, labels in trainer.batches(loader):
        drop = torch.rand(len(labels), generator=gen, device=labels.device) < cfg.p_uncond
        labels = torch.where(drop, torch.full_like(labels, NULL_LABEL), labels)
        loss = diffusion_loss(model, scheduler, x0, labels, gen, cfg.snr_gamma)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss)
        losses.append(loss.detach())
    start = trainer.resumed_from.step if trainer.resumed_from is not None else 0
    elapsed = time.time() - t0
    trained = cfg.max_steps - start
    tail = torch.stack(losses[-50:]).mean().item() if losses else None
    metrics = {"steps": cfg.max_steps, "resumed_from": start, "trained_steps": trained, "final_loss": tail,
               "seconds": round(elapsed, 2), "steps_per_second": round(trained / elapsed, 3) if trained else None,
               "threads": torch.get_num_threads()}
    if trainer.is_main:
        ema = trainer.ema("model")
        if ema is not None:
            ema.copy_to(raw)  # the exported model carries the EMA weights
        export_model(raw, cfg, out / "model", cfg.max_steps, image_size)
    trainer.finish(metrics, curves_title=f"Digits diffusion training ({cfg.scale} scale, batch {cfg.batch_size})")
    print(f"trained steps {start}..{cfg.max_steps} in {elapsed:.1f}s, loss {tail} -> {out / 'model'}")
    return metrics


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
