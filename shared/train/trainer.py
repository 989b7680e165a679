"""`Trainer`: accelerate plus the pieces of this package, wired so a project's train.py only wires options.

    trainer = Trainer(cfg)                                   # cfg has TrainConfig's fields (or is one)
    model, opt = trainer.add("model", model, torch.optim.AdamW(model.parameters(), lr=cfg.lr))
    for x, y in trainer.batches(trainer.loader((x_train, y_train), cfg.batch_size)):
        loss = F.cross_entropy(model(x), y)
        trainer.backward(loss)
        trainer.optimizer_step()                             # clip, step or skip, LR schedule, EMA, zero_grad
        trainer.log(loss=loss)
    trainer.finish()

`batches()` resumes from the newest complete checkpoint in `<run_dir>/checkpoints` before the first batch, runs the
loop body inside `accelerator.accumulate(...)` (so with grad_accum=k, `optimizer_step()` acts on every k-th call),
and at each step boundary logs, checkpoints, and honours preemption signals (save, then exit 75; see preempt.py).
`global_step` counts optimizer steps (= k micro-batches); it is what max_steps, ckpt_every and the LR schedules use.

Several models and optimizers (DMD2: generator + fake score, the generator stepped every few steps) go in one
checkpoint: `add()` each, then `optimizer_step("fake")` every step and `optimizer_step("generator")` when
`trainer.global_step % k == 0`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, GradScalerKwargs, broadcast_object_list, send_to_device
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch import nn

from shared.config import save_resolved
from shared.data.loader import ResumableLoader
from shared.io import atomic_path, write_json
from shared.train.checkpoint import CheckpointInfo, Checkpointer, cpu_tensors
from shared.train.ema import EMA
from shared.train.fsdp import FSDP_PRESETS, fsdp_plugin
from shared.train.log import StepLogger
from shared.train.preempt import PREEMPTED_EXIT_CODE, Preempted, PreemptionHandler
from shared.train.schedules import make_lr_schedule
from shared.train.seed import capture_rng, restore_rng, seed_everything


@dataclass
class TrainConfig:
    """Training-loop options. A project's Config can inherit from it (options stay top-level: `max_steps=100`)."""
    run_dir: str = field(default="runs/default", metadata={"help": "checkpoints, metrics, config; resumed from"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps (each = grad_accum micro-batches)",
                                                   "min": 0})
    seed: int = 0
    mixed_precision: str = field(default="no", metadata={"help": "fp16: dynamic loss scaling",
                                                        "choices": ("no", "bf16", "fp16")})
    grad_accum: int = field(default=1, metadata={"min": 1})
    max_grad_norm: float = field(default=1.0, metadata={"help": "0 = no clipping", "min": 0})
    skip_nonfinite: bool = field(default=True, metadata={"help": "skip inf/NaN updates (one device sync/step)"})
    fp16_init_scale: float = 65536.0
    fp16_growth_interval: int = 2000
    lr_schedule: str = field(default="constant", metadata={"help": "constant | warmup | cosine | linear"})
    warmup_steps: int = field(default=0, metadata={"min": 0})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final lr / peak lr (cosine, linear)", "min": 0,
                                                       "max": 1})
    ema_decay: float = field(default=0.0, metadata={"help": "0 = no EMA", "min": 0, "max": 1})
    ema_warmup: str = field(default="power", metadata={"choices": ("none", "linear", "power")})
    ema_every: int = field(default=1, metadata={"min": 1})
    ckpt_every: int = field(default=500, metadata={"help": "0 = only at the end and on preemption", "min": 0})
    keep_last: int = field(default=3, metadata={"min": 1})
    milestone_every: int = field(default=0, metadata={"help": "keep these multiples forever; 0 = none"})
    log_every: int = field(default=10, metadata={"min": 0})
    log_csv: bool = False
    curves: bool = field(default=True, metadata={"help": "finish() draws curves.png (+ .csv) from metrics.jsonl"})
    progress: bool = True
    report_to: str = field(default="", metadata={"help": "wandb,tensorboard: used when installed"})
    preempt_signals: str = "SIGUSR2,SIGTERM"
    preempt_check_every: int = field(default=1, metadata={"help": "steps between (collective) flag checks"})
    fsdp: str = field(default="", metadata={"help": "FSDP preset; '' = DDP / 1 process",
                                            "choices": ("", *FSDP_PRESETS)})

def train_config(cfg: Any = None) -> TrainConfig:
    """TrainConfig from any object or mapping that has (some of) its fields; other keys are ignored."""
    if isinstance(cfg, TrainConfig) and type(cfg) is TrainConfig:
        return cfg
    values = {}
    for f in dataclasses.fields(TrainConfig):
        if isinstance(cfg, Mapping) or hasattr(cfg, "keys"):
            if f.name in cfg:
                values[f.name] = cfg[f.name]
        elif cfg is not None and hasattr(cfg, f.name):
            values[f.name] = getattr(cfg, f.name)
    return TrainConfig(**values)


@dataclass
class _Unit:
    name: str
    model: nn.Module  # as prepared by accelerate (maybe DDP/FSDP-wrapped)
    raw: nn.Module  # unwrapped
    optimizer: Any = None  # AcceleratedOptimizer
    scheduler: Any = None
    ema: EMA | None = None
    params: list = field(default_factory=list)
    trainable_only: bool = False
    skipped: int = 0


def _available_trackers(report_to: str) -> list[str]:
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    wanted = [t.strip() for t in report_to.split(",") if t.strip()]
    ok = {"wandb": is_wandb_available, "tensorboard": is_tensorboard_available}
    out = []
    for t in wanted:
        if t not in ok:
            raise ValueError(f"report_to: unknown tracker {t!r}; known: {', '.join(ok)}")
        if ok[t]():
            out.append(t)
        else:
            warnings.warn(f"report_to={t} but the package is not installed; logging to metrics.jsonl only",
                          stacklevel=3)
    return out


class Trainer:
    def __init__(self, cfg: Any = None, *, project_name: str | None = None, **accelerator_kwargs: Any):
        """`cfg`: a TrainConfig or any config with its fields (a project Config, a DictConfig, a dict).
        `accelerator_kwargs` go to `Accelerator` (e.g. kwargs_handlers, dataloader_config)."""
        self.cfg = c = train_config(cfg)
        self._given_config = cfg
        self._previous_config: dict = {}
        if c.grad_accum < 1 or c.max_steps < 0:
            raise ValueError(f"need grad_accum >= 1 and max_steps >= 0 (got {c.grad_accum}, {c.max_steps})")
        self.run_dir = Path(c.run_dir)
        trackers = _available_trackers(c.report_to)
        if "LOCAL_RANK" in os.environ and not torch.cuda.is_available():
            # accelerate runs torchrun-launched processes on a CPU-only machine as independent single processes
            # unless told cpu=True (then it uses gloo DDP, as `accelerate launch --cpu` does).
            accelerator_kwargs.setdefault("cpu", True)
        handlers = list(accelerator_kwargs.pop("kwargs_handlers", []))
        if not any(isinstance(h, GradScalerKwargs) for h in handlers):
            handlers.append(GradScalerKwargs(init_scale=c.fp16_init_scale, growth_interval=c.fp16_growth_interval))
        self.accelerator = acc = Accelerator(
            mixed_precision=c.mixed_precision, gradient_accumulation_steps=c.grad_accum,
            log_with=trackers or None, project_dir=str(self.run_dir), kwargs_handlers=handlers,
            # a caller's own plugin (e.g. with a wrap policy) wins over the preset's; cfg.fsdp still names the preset
            fsdp_plugin=accelerator_kwargs.pop("fsdp_plugin", None) or (fsdp_plugin(c.fsdp) if c.fsdp else None),
            **accelerator_kwargs)
        if acc.mixed_precision == "fp16" and acc.device.type == "cpu" and acc.scaler is None:
            # accelerate 1.15 silently drops fp16 on CPU (no autocast, no scaler). torch has both on CPU, so turn
            # them on: then the fp16 path (loss scaling, overflow skipping) is the same one a GPU run takes.
            acc.native_amp = True
            acc.scaler = torch.amp.GradScaler("cpu", init_scale=c.fp16_init_scale,
                                              growth_interval=c.fp16_growth_interval)
        self.device = acc.device
        self._direct_step = acc.distributed_type not in (DistributedType.XLA, DistributedType.DEEPSPEED,
                                                         DistributedType.MEGATRON_LM)
        self._plain_backward = self._direct_step and acc.scaler is None and c.grad_accum == 1
        self.rank, self.world_size, self.is_main = acc.process_index, acc.num_processes, acc.is_main_process
        seed_everything(c.seed)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._previous_config = self._read_saved_config()
            self._save_config(cfg)
        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", keep_last=c.keep_last)
        self.logger = StepLogger(self.run_dir, every=c.log_every, total_steps=c.max_steps, csv=c.log_csv,
                                 progress=c.progress, is_main=self.is_main,
                                 reduce=self._mean_over_processes if self.world_size > 1 else None,
                                 sinks=[acc.log] if trackers else [])
        signals = [s.strip() for s in c.preempt_signals.split(",") if s.strip()]
        self.preemption = PreemptionHandler(signals).install()
        if trackers:
            acc.init_trackers(project_name or self.run_dir.name, config=self._flat_config(cfg))
        self._units: dict[str, _Unit] = {}
        self._loaders: dict[str, Any] = {}
        self._objects: dict[str, Any] = {}
        self._generators: dict[str, Any] = {}
        self.global_step = 0
        self.resumed_from: CheckpointInfo | None = None
        self._started = False
        self._last_saved: int | None = None
        self._closed = False

    # ---- setup -------------------------------------------------------------------------------------------
    # options that may change between a run and its resumption without changing what is trained
    RESUMABLE_CHANGES = frozenset({"max_steps", "epochs", "ckpt_every", "keep_last", "milestone_every", "log_every",
                                   "log_csv", "progress", "report_to", "preempt_signals", "preempt_check_every",
                                   "threads", "sample_every", "num_workers", "run_dir"})

    def _read_saved_config(self) -> dict:
        path = self.run_dir / "config.yaml"
        try:
            return dict(OmegaConf.to_container(OmegaConf.load(path))) if path.is_file() else {}
        except Exception:  # an unreadable old config only costs the warning below
            return {}

    def _warn_changed_config(self, cfg: Any) -> None:
        """A run_dir resumes whatever it holds: say which settings differ from the run it was started with."""
        old, new = self._previous_config, self._flat_config(cfg) if cfg is not None else {}
        changed = sorted(k for k in old.keys() & new.keys()
                         if k not in self.RESUMABLE_CHANGES and str(old[k]) != str(new[k]))
        if changed:
            diff = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
            print(f"warning: resuming {self.run_dir} with settings that differ from its start ({diff}); the "
                  f"checkpoint's weights and optimizer state are kept. Use a new run_dir to start afresh.",
                  file=sys.stderr, flush=True)

    def _save_config(self, cfg: Any) -> None:
        if isinstance(cfg, DictConfig):  # a step script's resolved config: keep all of it, as YAML
            save_resolved(cfg, self.run_dir)
        else:
            write_json(self.run_dir / "train_config.json", dataclasses.asdict(self.cfg))

    def _flat_config(self, cfg: Any) -> dict:
        source = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        if not isinstance(source, Mapping):
            source = dataclasses.asdict(self.cfg)
        return {k: v for k, v in source.items() if isinstance(v, (int, float, str, bool))}

    def add(self, name: str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
            schedule: str | None = None, schedule_steps: int | None = None, ema: EMA | bool | None = None,
            trainable_only: bool = False) -> tuple[nn.Module, Any]:
        """Register a model (and its optimizer) for training and checkpointing; returns the prepared pair.

        An LR schedule (cfg.lr_schedule, or `schedule`, over cfg.max_steps or `schedule_steps` optimizer steps) is
        attached to the optimizer, and an EMA when cfg.ema_decay > 0 (or `ema=True`/an EMA). A model without
        optimizer is only moved to the device and checkpointed (e.g. a target network updated by hand).
        `trainable_only`: checkpoint only parameters that require grad (LoRA / adapters on a frozen base)."""
        if self._started:
            raise RuntimeError("add() every model before the first trainer.batches() (resume needs them all)")
        if name in self._units or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"model name {name!r} is taken or not made of letters, digits, _ and -")
        c = self.cfg
        if optimizer is not None:
            # The schedule wraps optimizer.step, so it must exist before accelerate keeps a reference to that method.
            scheduler = make_lr_schedule(optimizer, schedule or c.lr_schedule,
                                         total_steps=max(1, schedule_steps or c.max_steps),
                                         warmup_steps=c.warmup_steps, min_ratio=c.min_lr_ratio)
            model, optimizer = self.accelerator.prepare(model, optimizer)
            params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        else:
            model, params, scheduler = model.to(self.device), [], None
        raw = self.accelerator.unwrap_model(model)
        if isinstance(ema, EMA):
            ema_obj = ema
        elif ema or (ema is None and c.ema_decay > 0 and optimizer is not None):
            if c.ema_decay <= 0:
                raise ValueError(f"ema=True for {name!r} needs ema_decay > 0 in the config")
            ema_obj = EMA(raw, c.ema_decay, warmup=c.ema_warmup, update_every=c.ema_every)
        else:
            ema_obj = None
        self._units[name] = _Unit(name, model, raw, optimizer, scheduler, ema_obj, params, trainable_only)
        return model, optimizer

    def loader(self, dataset: Any, batch_size: int, *, name: str = "train", seed: int | None = None,
               drop_last: bool = True, **kwargs: Any) -> ResumableLoader:
        """A shared.data.ResumableLoader (per-process `batch_size`, sharded over processes, full batches unless
        drop_last=False), checkpointed under `name`; `kwargs` go to it (num_workers, batch_sampler, ...)."""
        loader = ResumableLoader(dataset, batch_size, seed=self.cfg.seed if seed is None else seed, rank=self.rank,
                                 world_size=self.world_size, drop_last=drop_last, **kwargs)
        self.register(name, loader)
        return loader

    def generator(self, name: str, seed: int, device: str | torch.device | None = None) -> torch.Generator:
        """A seeded torch.Generator whose state is checkpointed per process (for augmentation, noise, ...)."""
        gen = torch.Generator(device=device or self.device).manual_seed(seed)
        self.register(name, gen)
        return gen

    def register(self, name: str, obj: Any) -> Any:
        """Checkpoint `obj` too: a torch/numpy/python RNG (state kept per process), an iterable data loader with
        state_dict()/load_state_dict() (per process), or any other object with state_dict()/load_state_dict()
        (from rank 0). States must be tensors and plain values (they are read back weights-only)."""
        import random

        import numpy as np
        if self._started:
            raise RuntimeError("register() before the first trainer.batches()")
        if isinstance(obj, (torch.Generator, np.random.Generator, np.random.RandomState, random.Random)):
            self._generators[name] = obj
        elif hasattr(obj, "__iter__") and hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
            self._loaders[name] = obj  # a data loader (shared.data.ResumableLoader): per process
        elif hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
            self._objects[name] = obj
        else:
            raise TypeError(f"cannot checkpoint {name!r}: {type(obj).__name__} has no state_dict/load_state_dict")
        return obj

    def unit(self, name: str) -> _Unit:
        return self._units[name]

    def ema(self, name: str) -> EMA | None:
        return self._units[name].ema

    # ---- the step --------------------------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """`loss.backward()` with loss scaling (fp16) and division by grad_accum."""
        if self._plain_backward:
            loss.backward(**kwargs)  # what accelerate would do, minus a division by 1 in the autograd graph
        else:
            self.accelerator.backward(loss, **kwargs)

    def log(self, **values: float | torch.Tensor) -> None:
        """Values to average into the next metrics row (tensors are read back only when a row is written)."""
        self.logger.add(values)

    def zero_grad(self, *names: str) -> None:
        for u in self._select(names):
            if u.optimizer is not None:
                u.optimizer.zero_grad(set_to_none=True)

    def _select(self, names: Iterable[str]) -> list[_Unit]:
        names = list(names)
        missing = [n for n in names if n not in self._units]
        if missing:
            raise KeyError(f"no model named {missing}; added: {', '.join(self._units)}")
        return [self._units[n] for n in names] if names else [u for u in self._units.values() if u.optimizer]

    def _key(self, base: str, u: _Unit) -> str:
        multi = sum(1 for x in self._units.values() if x.optimizer) > 1
        return f"{base}/{u.name}" if multi else base

    def optimizer_step(self, *names: str) -> bool:
        """On the last micro-batch of a step: unscale (fp16), clip, step (or skip a non-finite update), advance the
        LR schedule and EMA, zero the grads, for the named models (default: all with an optimizer). Returns True
        if every update was applied; False while accumulating or when one was skipped."""
        if not self.accelerator.sync_gradients:
            return False
        return all([self._apply(u) for u in self._select(names)])

    def _apply(self, u: _Unit) -> bool:
        acc, c = self.accelerator, self.cfg
        if acc.scaler is not None:
            acc.unscale_gradients(u.optimizer)
        norm = None
        if c.max_grad_norm > 0:
            if acc.distributed_type == DistributedType.FSDP and not acc.is_fsdp2:
                norm = u.model.clip_grad_norm_(c.max_grad_norm)  # FSDP1 shards gradients inside the wrapper
            else:
                norm = torch.nn.utils.clip_grad_norm_(u.params, c.max_grad_norm)
        elif c.skip_nonfinite:
            norm = torch.nn.utils.get_total_norm([p.grad for p in u.params if p.grad is not None])
        if norm is not None:
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2 DTensor
            self.logger.add({self._key("grad_norm", u): norm})
        # The torch optimizer is stepped directly: accelerate's wrapper adds only package look-ups and signature
        # inspection per call here (~0.1 ms, measured in bench/bench_train.py); it matters only on XLA/DeepSpeed.
        opt = u.optimizer.optimizer if self._direct_step else u.optimizer
        if acc.scaler is None and c.skip_nonfinite and norm is not None and not math.isfinite(norm.item()):
            skipped = True  # bf16/fp32: an inf/NaN gradient would poison the weights and the optimizer moments
        elif acc.scaler is not None and self._direct_step:
            scale = acc.scaler.get_scale()
            acc.scaler.step(opt)  # does nothing if the unscaled gradients hold inf/NaN ...
            acc.scaler.update()
            skipped = acc.scaler.get_scale() < scale  # ... and then update() lowers the scale
        else:
            opt.step()
            skipped = acc.scaler is not None and u.optimizer.step_was_skipped
        if skipped:
            u.skipped += 1
        else:
            u.scheduler.step()
            if u.ema is not None:
                u.ema.update(u.raw)
        opt.zero_grad(set_to_none=True)
        return not skipped

    @property
    def skipped_steps(self) -> int:
        """Updates skipped so far because of inf/NaN gradients (fp16 overflows included), all models together."""
        return sum(u.skipped for u in self._units.values())

    def _extra_metrics(self) -> dict:
        out: dict[str, Any] = {}
        for u in self._units.values():
            if u.optimizer is not None:
                out[self._key("lr", u)] = u.scheduler.get_last_lr()[0]
                out[self._key("skipped_steps", u)] = u.skipped
        if self.accelerator.scaler is not None:
            out["loss_scale"] = float(self.accelerator.scaler.get_scale())
        return out

    def _mean_over_processes(self, t: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(t.to(self.device), reduction="mean")

    # ---- the loop ------------------------------------------------------------------------------------------
    def batches(self, loader: Iterable) -> Iterator[Any]:
        """Micro-batches (on the device) until max_steps optimizer steps are done; see the module docstring."""
        if not self._started:
            if hasattr(loader, "state_dict") and not any(ld is loader for ld in self._loaders.values()):
                self.register(f"train{len(self._loaders) or ''}", loader)
            elif not hasattr(loader, "state_dict"):
                warnings.warn("batches(): the loader has no state_dict(); a resumed run will not continue its data "
                              "order", stacklevel=2)
            self.resume()
        trained = [u.model for u in self._units.values() if u.optimizer is not None]
        self.accelerator.step = 0  # accumulation phase: checkpoints are taken only at step boundaries
        it = iter(loader)
        while self.global_step < self.cfg.max_steps:
            for _ in range(self.cfg.grad_accum):
                try:
                    batch = next(it)
                except StopIteration:  # end of epoch; the loader moved on to the next one
                    it = iter(loader)
                    batch = next(it, None)
                    if batch is None:
                        raise RuntimeError(f"{loader!r} gave an empty epoch; check the dataset and batch size")
                with self.accelerator.accumulate(*trained):
                    yield send_to_device(batch, self.device)
            self._end_step()
        self._end_training()

    def _end_step(self) -> None:
        c = self.cfg
        self.global_step += 1
        step = self.global_step
        self.logger.end_step(step, self._extra_metrics)
        stop = (self.world_size == 1 and self.preemption.flag) or (
            c.preempt_check_every > 0 and step % c.preempt_check_every == 0 and self.preemption.requested(self.device))
        milestone = f"step{step}" if c.milestone_every > 0 and step % c.milestone_every == 0 else None
        if (stop and step < c.max_steps) or milestone or (c.ckpt_every > 0 and step % c.ckpt_every == 0):
            self.save(milestone=milestone)
        if stop and step < c.max_steps:  # at the last step the run simply ends (and saves) as usual
            if self.is_main:
                write_json(self.run_dir / "preempted.json",
                           {"step": step, "signal": self.preemption.signal_name, "exit_code": PREEMPTED_EXIT_CODE,
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
            name = self.preemption.signal_name
            self.close()
            raise Preempted(step, name)

    def _end_training(self) -> None:
        if self.global_step % max(1, self.cfg.log_every) and self.logger.pending:
            self.logger.flush(self.global_step, self._extra_metrics())
        if self._last_saved != self.global_step:
            self.save()

    # ---- checkpoints -----------------------------------------------------------------------------------------
    def _fsdp(self) -> bool:
        return self.accelerator.distributed_type == DistributedType.FSDP

    def _optimizer_state(self, u: _Unit) -> dict | None:
        if self._fsdp():  # collective: gathers the full optimizer state onto rank 0
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
            return get_optimizer_state_dict(u.model, u.optimizer.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return u.optimizer.state_dict() if self.is_main else None

    def save(self, milestone: str | None = None) -> Path:
        """Checkpoint everything at the current step (collective: call on every process)."""
        tensors, optim = {}, {}
        for u in self._units.values():
            sd = self.accelerator.get_state_dict(u.model) if (self._fsdp() or self.is_main) else {}
            if u.trainable_only:
                keep = {n for n, p in u.raw.named_parameters() if p.requires_grad}
                sd = {k: v for k, v in sd.items() if k in keep}
            tensors[f"model.{u.name}"] = sd
            if u.ema is not None:
                tensors[f"ema.{u.name}"] = u.ema.tensors()
            if u.optimizer is not None:
                optim[u.name] = self._optimizer_state(u)
        state = {}
        if self.is_main:
            state = {
                "step": self.global_step,
                "optimizers": optim,
                "schedulers": {n: u.scheduler.state_dict() for n, u in self._units.items() if u.scheduler},
                "emas": {n: u.ema.state_dict() for n, u in self._units.items() if u.ema is not None},
                "skipped": {n: u.skipped for n, u in self._units.items()},
                "scaler": self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None,
                "objects": {n: o.state_dict() for n, o in self._objects.items()},
            }
        rank_state = {"rng": capture_rng(self._generators),
                      "data": {n: ld.state_dict() for n, ld in self._loaders.items()}}
        path = self.checkpointer.save(self.global_step, tensors=tensors if self.is_main else {}, state=state,
                                      rank_state=rank_state, milestone=milestone)
        self._last_saved = self.global_step
        return path

    def _latest(self) -> CheckpointInfo | None:
        found = [str(info.path) if self.is_main and (info := self.checkpointer.latest()) else None]
        if self.world_size > 1:  # rank 0 decides, so every process resumes from the same checkpoint
            broadcast_object_list(found, from_process=0)
        return self.checkpointer.info(Path(found[0])) if found[0] else None

    def resume(self) -> int | None:
        """Load the newest complete checkpoint of the run directory (called by the first `batches()`); returns its
        step, or None on a fresh start."""
        self._started = True
        info = self._latest()
        if info is None:
            # Per-process streams for dropout, noise, ...; independent of how much RNG model construction used.
            seed_everything(self.cfg.seed + self.rank)
            return None
        state = self.checkpointer.load_state(info)
        for n, u in self._units.items():
            if f"model.{n}.safetensors" not in info.meta["files"]:
                raise KeyError(f"{info.path} has no weights for model {n!r} (it has {sorted(info.meta['files'])})")
            sd = self.checkpointer.load_tensors(info, f"model.{n}", self.device)
            if self._fsdp():
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
                set_model_state_dict(u.model, sd, options=StateDictOptions(full_state_dict=True,
                                                                           strict=not u.trainable_only))
            else:
                u.raw.load_state_dict(sd, strict=not u.trainable_only)
            if u.ema is not None:
                u.ema.load_tensors(self.checkpointer.load_tensors(info, f"ema.{n}", self.device))
                u.ema.load_state_dict(state["emas"][n])
            if u.optimizer is not None:
                if self._fsdp():
                    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
                    set_optimizer_state_dict(u.model, u.optimizer.optimizer, state["optimizers"][n],
                                             options=StateDictOptions(full_state_dict=True))
                else:
                    u.optimizer.load_state_dict(state["optimizers"][n])
                u.scheduler.load_state_dict(state["schedulers"][n])
            u.skipped = int(state["skipped"].get(n, 0))
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])
        for n, obj in self._objects.items():
            obj.load_state_dict(state["objects"][n])
        rank_state = self.checkpointer.load_rank_state(info, self.rank)
        for n, ld in self._loaders.items():
            ld.load_state_dict(rank_state["data"][n])
        restore_rng(rank_state["rng"], self._generators)
        self.global_step = self._last_saved = int(state["step"])
        self.resumed_from = info
        self.logger.truncate_after(self.global_step)
        if self.is_main:
            (self.run_dir / "preempted.json").unlink(missing_ok=True)
            print(f"resuming from {info.path} (step {self.global_step})", flush=True)
            self._warn_changed_config(self._given_config)
        self.accelerator.wait_for_everyone()
        return self.global_step

    # ---- outputs & teardown ------------------------------------------------------------------------------
    def save_weights(self, path: str | Path, name: str, *, use_ema: bool = True) -> Path | None:
        """Export one model's weights (its EMA when it has one and `use_ema`) as a safetensors file, atomically,
        from the main process."""
        u = self._units[name]
        sd = self.accelerator.get_state_dict(u.model)
        if use_ema and u.ema is not None:
            sd = {**sd, **u.ema.tensors()}
        if not self.is_main:
            return None
        with atomic_path(path) as tmp:
            save_file(cpu_tensors(sd), str(tmp), metadata={"step": str(self.global_step),
                                                              "ema": str(bool(use_ema and u.ema))})
        return Path(path)

    def close(self) -> None:
        """Restore signal handlers, close the progress bar and trackers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.preemption.uninstall()
        self.logger.close()
        if self.accelerator.trackers:
            self.accelerator.end_training()

    def finish(self, metrics: Mapping[str, Any] | None = None, *, curves_title: str | None = None) -> None:
        """End of a finished run: write final `metrics` (a row in metrics.jsonl and metrics.json), draw the
        training curves (`<run_dir>/curves.png` + `curves.csv`: loss terms, lr, grad norm, skipped steps, ...
        against the step; see shared.plots.training_curves), close, sync."""
        if metrics and self.is_main:
            self.logger.write(self.global_step, dict(metrics))
            write_json(self.run_dir / "metrics.json", {"step": self.global_step, **dict(metrics)})
        if self.is_main and self.cfg.curves:
            self._plot_curves(curves_title)
        self.close()
        self.accelerator.wait_for_everyone()

    def _plot_curves(self, title: str | None) -> None:
        # Every run draws its curves, however few rows it logged (a tiny run's 2-3 points are drawn as markers),
        # so that the workflow can declare <run_dir>/curves.png as an output of every training rule.
        log = self.run_dir / "metrics.jsonl"
        if not log.is_file():
            return
        from shared import plots

        where = "/".join(self.run_dir.parts[-3:])  # "dmd2/runs/sd15_1step", not just the last folder's name
        try:
            plots.training_curves({self.run_dir.name: log}, self.run_dir / "curves.png",
                                  title=title if title is not None else f"Training: {where}")
        except ValueError as e:  # no numeric metric logged: no plot, the run itself is fine
            warnings.warn(f"no training curves: {e}")

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
