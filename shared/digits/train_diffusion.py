"""Train a small class-conditional pixel-space diffusion UNet (diffusers UNet2DModel) on the toy digits.

One class per (digit, colour) pair, label = digit * 8 + colour (80 classes), plus a null label (80) used for
`p_uncond` of the batches so the model also supports classifier-free guidance. While training, a class's
embedding is tied to digit part + colour part, so each image also teaches the other colours of its digit and
the other digits of its colour (a few minutes of CPU training show each of the 80 pairs only ~300 images); the
export is a plain UNet2DModel with an 81-row class embedding. Epsilon prediction on a DDPM schedule; the EMA
weights are exported.

Outputs in out_dir:
    checkpoints/step_NNNNNNN.pt   full training state every `checkpoint_every` steps (the last `keep` kept);
                                  starting again with the same out_dir resumes from the newest one
    model/                        diffusers DDPMPipeline folder (unet/ + scheduler/) of the EMA weights, plus
                                  labels.json (the label encoding); rewritten at every checkpoint
    metrics.json, config.yaml

    python shared/digits/train_diffusion.py scale=toy data_dir=data/toy/digits out_dir=results/toy/digits_diffusion
    python -m shared.digits.train_diffusion scale=tiny data_dir=/tmp/digits out_dir=/tmp/dd steps=6
"""
from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from torch import nn
from tqdm.auto import tqdm

from shared.config import cli, resolve, save_resolved
from shared.digits.dataset import COLOUR_NAMES, DIGIT_WORDS, load_arrays
from shared.io import atomic_dir, atomic_path, write_json

NUM_CLASSES = len(DIGIT_WORDS) * len(COLOUR_NAMES)
NULL_LABEL = NUM_CLASSES
CHECKPOINT_RE = re.compile(r"step_(\d+)\.pt$")


def class_label(digit, colour):
    """The class index of a (digit, colour index) pair; works on ints and tensors."""
    return digit * len(COLOUR_NAMES) + colour


@dataclass
class Config:
    data_dir: str = "data/toy/digits"
    out_dir: str = "results/toy/digits_diffusion"
    scale: str = "toy"
    steps: int = 1600
    batch_size: int = 16  # small batches, many updates: what helps most in a few CPU minutes
    lr: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    p_uncond: float = 0.1  # fraction of labels replaced by the null label (for classifier-free guidance)
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])
    layers_per_block: int = 1
    attention: bool = True  # self-attention in the lowest-resolution block
    norm_groups: int = 8
    beta_schedule: str = "squaredcos_cap_v2"  # or linear
    num_train_timesteps: int = 1000
    checkpoint_every: int = 400
    keep: int = 2
    seed: int = 0
    threads: int = 0  # 0 = torch default


PRESETS = {
    "tiny": {"steps": 4, "batch_size": 8, "channels": [8, 16], "attention": False, "norm_groups": 4,
             "checkpoint_every": 2, "warmup_steps": 1},
    "toy": {},
    "paper": {"steps": 20000, "batch_size": 128, "channels": [64, 128, 256], "layers_per_block": 2,
              "lr": 2e-4, "ema_decay": 0.9999, "checkpoint_every": 2000, "warmup_steps": 500},
}


def build_unet(cfg, label_table: bool = True) -> UNet2DModel:
    """The UNet; with label_table=False it takes class embeddings as vectors (training with LabelEmbedding)."""
    n = len(cfg.channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if cfg.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    labels = {"num_class_embeds": NUM_CLASSES + 1} if label_table else {"class_embed_type": "identity"}
    return UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=tuple(cfg.channels),
                       layers_per_block=cfg.layers_per_block, down_block_types=tuple(down),
                       up_block_types=tuple(up), norm_num_groups=cfg.norm_groups, **labels)


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


def build_model(cfg) -> nn.ModuleDict:
    unet = build_unet(cfg, label_table=False)
    return nn.ModuleDict({"unet": unet, "labels": LabelEmbedding(unet.config.block_out_channels[0] * 4)})


def to_diffusers_unet(model: nn.ModuleDict, cfg) -> UNet2DModel:
    """The trained model as a standard class-conditional UNet2DModel (label table materialised)."""
    unet = build_unet(cfg)
    state = {**model["unet"].state_dict(), "class_embedding.weight": model["labels"].table().detach()}
    unet.load_state_dict(state)
    return unet


def build_scheduler(cfg) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type="epsilon", clip_sample=True)


def _architecture(cfg) -> dict:
    return {"channels": list(cfg.channels), "layers_per_block": cfg.layers_per_block, "attention": cfg.attention,
            "norm_groups": cfg.norm_groups, "beta_schedule": cfg.beta_schedule,
            "num_train_timesteps": cfg.num_train_timesteps, "labels": "digit + colour embedding"}


def _lr_at(cfg, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _batch_indices(cfg, step: int, n: int) -> torch.Tensor:
    """Batch `step` of a seeded per-epoch shuffle: a pure function of the step, so resuming needs no loader state."""
    per_epoch = max(1, n // cfg.batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    if n < cfg.batch_size:
        return perm[torch.arange(cfg.batch_size) % n]
    return perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in (Path(out_dir) / "checkpoints").glob("step_*.pt")
             if (m := CHECKPOINT_RE.search(p.name))]
    return max(found)[1] if found else None


def _save_checkpoint(out: Path, step: int, model, ema, opt, cfg) -> Path:
    path = out / "checkpoints" / f"step_{step:07d}.pt"
    state = {"step": step, "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
             "architecture": _architecture(cfg)}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    old = sorted((p for p in path.parent.glob("step_*.pt") if CHECKPOINT_RE.search(p.name)),
                 key=lambda p: int(CHECKPOINT_RE.search(p.name).group(1)))
    for stale in old[:-cfg.keep]:
        stale.unlink()
    return path


def export_model(ema: nn.ModuleDict, cfg, model_dir: Path, step: int) -> None:
    """Write the diffusers folder atomically: a reader never sees a half-exported model."""
    with atomic_dir(model_dir) as tmp:
        DDPMPipeline(unet=to_diffusers_unet(ema, cfg), scheduler=build_scheduler(cfg)).save_pretrained(tmp)
        write_json(tmp / "labels.json", {"encoding": "digit * num_colours + colour", "num_digits": len(DIGIT_WORDS),
                                         "colours": COLOUR_NAMES, "null_label": NULL_LABEL, "train_step": step})


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    images, digits, colours = load_arrays(Path(cfg.data_dir) / "train")
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    labels_all = class_label(torch.from_numpy(digits).long(), torch.from_numpy(colours).long())

    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    scheduler = build_scheduler(cfg)

    start = 0
    resume_from = latest_checkpoint(out)
    if resume_from is not None:
        state = torch.load(resume_from, map_location="cpu", weights_only=True)
        if state["architecture"] != _architecture(cfg):
            raise ValueError(f"{resume_from}: trained with {state['architecture']}, but the config asks for "
                             f"{_architecture(cfg)}; use another out_dir or matching settings")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"resuming from {resume_from} (step {start})")

    save_resolved(cfg, out)
    model.train()
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="digits diffusion")
    for step in bar:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * step + 1)
        idx = _batch_indices(cfg, step, len(x_all))
        x0, labels = x_all[idx], labels_all[idx].clone()
        labels[torch.rand(len(idx), generator=gen) < cfg.p_uncond] = NULL_LABEL
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, cfg.num_train_timesteps, (len(idx),), generator=gen)
        pred = model["unet"](scheduler.add_noise(x0, noise, t), t, class_labels=model["labels"](labels)).sample
        loss = F.mse_loss(pred, noise)
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))  # warm-up: early EMA follows the weights closely
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            _save_checkpoint(out, done, model, ema, opt, cfg)
            export_model(ema, cfg, out / "model", done)
    bar.close()

    if start >= cfg.steps and not (out / "model").is_dir():
        export_model(ema, cfg, out / "model", start)
    elapsed = time.time() - t0
    metrics = {"steps": cfg.steps, "resumed_from": start, "trained_steps": cfg.steps - start,
               "final_loss": sum(losses[-50:]) / len(losses[-50:]) if losses else None,
               "seconds": round(elapsed, 2),
               "steps_per_second": round((cfg.steps - start) / elapsed, 3) if losses else None}
    write_json(out / "metrics.json", metrics)
    print(f"trained steps {start}..{cfg.steps} in {elapsed:.1f}s, loss {metrics['final_loss']} -> {out / 'model'}")
    return metrics


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
