"""Training-loop overhead: shared.train.Trainer vs a bare PyTorch loop on the same model, batches and optimizer.

    python bench/bench_train.py                  # ~30 s on 2 cores
    python bench/bench_train.py sizes=[64] steps=1000

Both loops run the digits MLP with AdamW, gradient clipping at 1.0 and a cosine LR schedule, drawing shuffled
batches of `batch_size` from the same in-memory tensors. The Trainer loop adds what a real run has: accelerate's
accumulate context and backward, the non-finite-update check, per-step metric accumulation with a metrics.jsonl
row every `log_every` steps, the preemption check and step bookkeeping (periodic checkpoints are off).

The two loops run side by side in one process, alternating blocks of `log_every` steps (so each block holds one
metrics row), and the median block time of each is kept: both see the same machine load, and other processes'
bursts fall out of the median. Two clocks: wall time, and this thread's CPU time (with threads=1 every op of the
step runs in this thread), which other processes disturb less. Prints per-step times and trainer/bare ratios
(goal: <= 1.05).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F

from shared.config import cli, resolve
from shared.train import TrainConfig, Trainer, make_lr_schedule
from shared.train.example import MLP, load_digits_split


@dataclass
class Config:
    sizes: list[int] = field(default_factory=lambda: [64, 512], metadata={"help": "MLP hidden widths to time"})
    batch_size: int = 64
    steps: int = 600
    warmup_blocks: int = 3
    log_every: int = 10
    threads: int = 1
    seed: int = 0


def bare_steps(x: torch.Tensor, y: torch.Tensor, hidden: int, cfg) -> Iterator[None]:
    """The plain loop, yielding after every step."""
    torch.manual_seed(cfg.seed)
    model = MLP(hidden, dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = make_lr_schedule(opt, "cosine", total_steps=cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    perm, pos = torch.randperm(len(x), generator=gen), 0
    for _ in range(cfg.steps):
        if pos + cfg.batch_size > len(x):
            perm, pos = torch.randperm(len(x), generator=gen), 0
        idx = perm[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        yield


def trainer_steps(x: torch.Tensor, y: torch.Tensor, hidden: int, cfg, run_dir: str) -> Iterator[None]:
    """The same loop written with the Trainer, yielding after every step."""
    trainer = Trainer(TrainConfig(run_dir=run_dir, max_steps=cfg.steps, seed=cfg.seed, ckpt_every=0,
                                  log_every=cfg.log_every, lr_schedule="cosine", progress=False))
    model = MLP(hidden, dropout=0.0)
    model, _ = trainer.add("model", model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    for xb, yb in trainer.batches(trainer.loader((x, y), cfg.batch_size)):
        loss = F.cross_entropy(model(xb), yb)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss)
        yield
    trainer.finish()


def _block(steps: Iterator[None], n: int) -> tuple[float, float]:
    w, c = time.perf_counter(), time.thread_time()
    for _ in range(n):
        next(steps)
    return time.perf_counter() - w, time.thread_time() - c


def main(cfg=None):
    cfg = resolve(Config, cfg)
    torch.set_num_threads(cfg.threads)
    (x, y), _ = load_digits_split()
    results = {}
    for hidden in cfg.sizes:
        with tempfile.TemporaryDirectory() as run_dir:
            loops = {"bare": bare_steps(x, y, hidden, cfg), "trainer": trainer_steps(x, y, hidden, cfg, run_dir)}
            blocks: dict[str, list[tuple[float, float]]] = {"bare": [], "trainer": []}
            for b in range(cfg.steps // cfg.log_every):
                for name, steps in loops.items():
                    t = _block(steps, cfg.log_every)
                    if b >= cfg.warmup_blocks:
                        blocks[name].append(t)
            for steps in loops.values():
                for _ in steps:  # run out: the trainer writes its final checkpoint
                    pass
        row = {}
        for clock, i in (("wall", 0), ("cpu", 1)):
            b, t = (statistics.median(v[i] for v in blocks[k]) / cfg.log_every for k in ("bare", "trainer"))
            row[clock] = {"bare_ms": b * 1e3, "trainer_ms": t * 1e3, "ratio": t / b}
            print(f"MLP hidden={hidden:<4} batch={cfg.batch_size} {clock:>4}: bare {b * 1e3:.3f} ms/step, "
                  f"trainer {t * 1e3:.3f} ms/step, overhead {(t - b) * 1e6:+.0f} us/step, ratio {t / b:.3f}")
        results[hidden] = row
    return results


if __name__ == "__main__":
    cli(main, Config, None, __doc__)
