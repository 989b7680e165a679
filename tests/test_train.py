"""shared.train in one process: the pieces, and the Trainer loop (resume, precision, accumulation, two models)."""
from __future__ import annotations

import json
import os
import pickle
import random
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState

from shared.data import ResumableLoader
from shared.train import (EMA, Checkpointer, Preempted, StepLogger, TextEmbeddingCache, TrainConfig, Trainer,
                          capture_rng, fsdp_plugin, make_lr_schedule, restore_rng)
from shared.train.example import MLP, load_digits_split

DATA = load_digits_split()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one global state per process; each test builds its own Accelerator (other precisions)."""
    threads = torch.get_num_threads()
    yield
    AcceleratorState._reset_state(True)
    torch.set_num_threads(threads)


def _weights(trainer: Trainer, name: str = "model") -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.unit(name).raw.state_dict().items()}


def _assert_same(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0), k


def _losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def train(run_dir, hook=None, batch_size: int = 16, noise: float = 0.1, dropout: float = 0.1, **overrides):
    """The digits MLP trained for a few steps; `hook(trainer, loss)` may return a replacement loss."""
    cfg = dict(run_dir=str(run_dir), max_steps=12, ckpt_every=4, log_every=1, progress=False, keep_last=2)
    trainer = Trainer(TrainConfig(**{**cfg, **overrides}))
    (x, y), _ = DATA
    model = MLP(16, dropout)
    model, _ = trainer.add("model", model, torch.optim.AdamW(model.parameters(), lr=1e-2))
    gen = trainer.generator("noise", seed=1)
    for xb, yb in trainer.batches(trainer.loader((x, y), batch_size)):
        xb = xb + noise * torch.randn(xb.shape, generator=gen)
        loss = F.cross_entropy(model(xb), yb)
        if hook is not None:
            loss = hook(trainer, loss)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss)
    trainer.finish()
    return trainer


# ---- Trainer ---------------------------------------------------------------------------------------------------

def test_preempted_run_resumes_bit_for_bit(tmp_path):
    opts = dict(grad_accum=2, ema_decay=0.9, lr_schedule="cosine", warmup_steps=3)
    ref = train(tmp_path / "ref", **opts)

    def preempt(trainer, loss):
        if trainer.global_step == 5:
            os.kill(os.getpid(), signal.SIGUSR2)  # handler only sets a flag; the save waits for the boundary
        return loss

    with pytest.raises(Preempted) as exc:
        train(tmp_path / "run", hook=preempt, **opts)
    assert exc.value.code == 75 and exc.value.step == 6
    marker = json.loads((tmp_path / "run" / "preempted.json").read_text())
    assert marker["step"] == 6 and marker["signal"] == "SIGUSR2"
    assert Checkpointer(tmp_path / "run" / "checkpoints").latest().step == 6
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # handlers restored on the way out

    resumed = train(tmp_path / "run", **opts)
    assert resumed.resumed_from.step == 6 and resumed.global_step == 12
    assert not (tmp_path / "run" / "preempted.json").exists()
    _assert_same(_weights(resumed), _weights(ref))
    _assert_same(resumed.ema("model").tensors(), ref.ema("model").tensors())
    assert _losses(tmp_path / "run") == _losses(tmp_path / "ref")  # same data, noise and dropout at every step
    ref_state = Checkpointer.load_state(Checkpointer(tmp_path / "ref" / "checkpoints").latest())
    run_state = Checkpointer.load_state(Checkpointer(tmp_path / "run" / "checkpoints").latest())
    for a, b in zip(ref_state["optimizers"]["model"]["state"].values(),
                    run_state["optimizers"]["model"]["state"].values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert ref_state["schedulers"] == run_state["schedulers"]


def test_grad_accumulation_equals_the_big_batch(tmp_path):
    big = train(tmp_path / "big", batch_size=32, noise=0, dropout=0, max_steps=6)
    accum = train(tmp_path / "accum", batch_size=16, grad_accum=2, noise=0, dropout=0, max_steps=6)
    _assert_same(_weights(accum), _weights(big), atol=1e-6)


def test_fp16_scales_the_loss_and_skips_overflow_steps(tmp_path):
    seen, snapshots = [], {}

    def overflow(trainer, loss):
        snapshots[trainer.global_step] = _weights(trainer)
        return loss * 1e30 if trainer.global_step == 3 else loss  # step 4 overflows in fp16

    t = train(tmp_path / "fp16", hook=overflow, mixed_precision="fp16", fp16_init_scale=1024.0, lr_schedule="cosine",
              fp16_growth_interval=1000, max_steps=6)
    t.unit("model").raw.net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with t.accelerator.autocast():
        t.unit("model").model(DATA[0][0][:2])
    assert seen == [torch.float16]  # the forward really runs in half precision on CPU
    _assert_same(snapshots[4], snapshots[3])  # the overflowed update was not applied ...
    assert not torch.equal(snapshots[3]["net.0.weight"], snapshots[2]["net.0.weight"])  # ... the others were
    assert t.skipped_steps == 1
    rows = {r["step"]: r for r in map(json.loads, (tmp_path / "fp16" / "metrics.jsonl").read_text().splitlines())}
    assert rows[3]["loss_scale"] == 1024.0 and rows[4]["loss_scale"] == 512.0 and rows[4]["skipped_steps"] == 1
    assert rows[4]["lr"] == rows[3]["lr"]
    state = Checkpointer.load_state(Checkpointer(tmp_path / "fp16" / "checkpoints").latest())
    assert state["scaler"]["scale"] == 512.0 and state["skipped"] == {"model": 1}


def test_bf16_nonfinite_update_is_skipped_and_counted(tmp_path):
    snapshots = {}

    def poison(trainer, loss):
        snapshots[trainer.global_step] = _weights(trainer)
        return loss * float("nan") if trainer.global_step == 2 else loss

    t = train(tmp_path / "bf16", hook=poison, mixed_precision="bf16", max_steps=5)
    _assert_same(snapshots[3], snapshots[2])
    assert t.skipped_steps == 1
    assert all(torch.isfinite(v).all() for v in _weights(t).values())
    rows = [json.loads(x) for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert rows[2]["step"] == 3 and rows[2]["grad_norm"] == "nan" and rows[2]["skipped_steps"] == 1


def train_two(run_dir, hook=None, **overrides):
    """DMD2-shaped: a critic stepped every step and a generator every 2nd, one checkpoint holding both."""
    cfg = dict(run_dir=str(run_dir), max_steps=8, ckpt_every=3, log_every=2, progress=False)
    trainer = Trainer(TrainConfig(**{**cfg, **overrides}))
    gen, critic = MLP(16, 0.0, classes=64), MLP(16, 0.1, classes=1)
    gen, _ = trainer.add("generator", gen, torch.optim.Adam(gen.parameters(), lr=1e-3), schedule_steps=4)
    critic, _ = trainer.add("critic", critic, torch.optim.Adam(critic.parameters(), lr=1e-3))
    for (x,) in trainer.batches(trainer.loader((DATA[0][0],), 8)):
        if hook:
            hook(trainer)
        if trainer.global_step % 2 == 0:
            g_loss = -critic(gen(torch.randn(8, 64))).mean()
            trainer.backward(g_loss)
            trainer.optimizer_step("generator")
            trainer.zero_grad("critic")  # the generator loss also reached the critic
            trainer.log(g_loss=g_loss)
        fake = gen(torch.randn(8, 64)).detach()
        c_loss = F.softplus(critic(fake)).mean() + F.softplus(-critic(x)).mean()
        trainer.backward(c_loss)
        trainer.optimizer_step("critic")
        trainer.log(c_loss=c_loss)
    trainer.finish()
    return trainer


def test_two_models_two_optimizers_one_checkpoint(tmp_path):
    ref = train_two(tmp_path / "ref")
    assert ref.unit("generator").scheduler.last_epoch == 4 and ref.unit("critic").scheduler.last_epoch == 8
    info = Checkpointer(tmp_path / "ref" / "checkpoints").latest()
    assert {"model.generator.safetensors", "model.critic.safetensors"} <= set(info.meta["files"])
    assert set(Checkpointer.load_state(info)["optimizers"]) == {"generator", "critic"}
    row = json.loads((tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"lr/generator", "lr/critic", "grad_norm/critic", "g_loss", "c_loss"} <= set(row)

    def stop(trainer):
        if trainer.global_step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted):
        train_two(tmp_path / "run", hook=stop)
    resumed = train_two(tmp_path / "run")
    assert resumed.resumed_from.step == 5
    for name in ("generator", "critic"):
        _assert_same(_weights(resumed, name), _weights(ref, name))


def test_trainable_only_checkpoints_and_weights_export(tmp_path):
    trainer = Trainer(TrainConfig(run_dir=str(tmp_path), max_steps=2, progress=False, ema_decay=0.5))
    model = MLP(16, 0.0)
    model.net[0].requires_grad_(False)  # a frozen base with trainable layers on top
    model, _ = trainer.add("model", model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                                             lr=0.1), trainable_only=True)
    for (x,) in trainer.batches(trainer.loader((DATA[0][0],), 8)):
        trainer.backward(model(x).pow(2).mean())
        trainer.optimizer_step()
    info = trainer.checkpointer.latest()
    saved = Checkpointer.load_tensors(info, "model.model")
    assert "net.0.weight" not in saved and "net.3.weight" in saved
    assert set(Checkpointer.load_tensors(info, "ema.model")) == set(saved)
    out = trainer.save_weights(tmp_path / "export.safetensors", "model")
    from safetensors.torch import load_file
    exported = load_file(str(out))
    torch.testing.assert_close(exported["net.3.weight"], trainer.ema("model").tensors()["net.3.weight"])
    trainer.finish()


def test_fsdp_checkpoint_path_roundtrips_full_state_dicts(tmp_path):
    """Under FSDP the Trainer saves/loads through torch's distributed-checkpoint state-dict API (full, gathered
    state). accelerate runs FSDP only on GPUs; here the same calls run on a plain module, end to end."""
    def run(run_dir, stop_at=None):
        trainer = Trainer(TrainConfig(run_dir=str(run_dir), max_steps=6, ckpt_every=3, progress=False))
        trainer._fsdp = lambda: True
        model = MLP(16, 0.0)
        model, _ = trainer.add("model", model, torch.optim.AdamW(model.parameters(), lr=1e-2))
        for xb, yb in trainer.batches(trainer.loader(DATA[0], 16)):
            trainer.backward(F.cross_entropy(model(xb), yb))
            trainer.optimizer_step()
            if trainer.global_step == stop_at:
                break
        trainer.close()
        return trainer

    ref = train(tmp_path / "ref", noise=0, dropout=0, max_steps=6, ckpt_every=3, batch_size=16, log_every=0)
    run(tmp_path / "run", stop_at=4)  # dies after the step-3 checkpoint
    resumed = run(tmp_path / "run")
    assert resumed.resumed_from.step == 3
    _assert_same(_weights(resumed), _weights(ref))
    optim = Checkpointer.load_state(resumed.resumed_from)["optimizers"]["model"]
    assert "net.0.weight" in optim["state"]  # keyed by parameter name, as FSDP full optimizer states are


def test_checkpoint_fault_hook_pauses_mid_write(tmp_path, monkeypatch):
    import threading
    monkeypatch.setenv("SHARED_TRAIN_CKPT_FAULT", "pause@2:1.0")
    ck = Checkpointer(tmp_path)
    ck.save(1, tensors={"model.m": {"w": torch.ones(2)}})
    writer = threading.Thread(target=ck.save, args=(2,), kwargs={"tensors": {"model.m": {"w": torch.zeros(2)}}})
    writer.start()
    tmp = tmp_path / ".ckpt-00000002.tmp"
    for _ in range(200):
        if (tmp / "model.m.safetensors").exists():
            break
        writer.join(0.01)
    assert (tmp / "model.m.safetensors").exists() and not (tmp / "meta.json").exists()
    assert ck.latest().step == 1  # what a resume would pick while the write hangs
    writer.join()
    assert ck.latest().step == 2 and not tmp.exists()


def test_project_config_inherits_train_options(tmp_path):
    from shared.config import resolve
    from shared.train.example import PRESETS, Config
    cfg = resolve(Config, {"scale": "tiny", "run_dir": str(tmp_path), "max_steps": 7, "progress": False,
                           "report_to": "tensorboard"}, PRESETS)
    with pytest.warns(UserWarning, match="not installed"), Trainer(cfg) as trainer:  # optional trackers
        assert trainer.cfg.max_steps == 7 and trainer.cfg.ckpt_every == 10 and not trainer.accelerator.trackers
    assert (tmp_path / "config.yaml").is_file()


# ---- pieces -----------------------------------------------------------------------------------------------------

def test_checkpointer_keeps_last_n_and_milestones_and_ignores_incomplete(tmp_path, recwarn):
    ck = Checkpointer(tmp_path, keep_last=2)
    for step in range(1, 11):
        ck.save(step, tensors={"model.m": {"w": torch.full((3,), float(step))}}, state={"step": step},
                rank_state={"r": step}, milestone="every4" if step % 4 == 0 else None)
    assert [c.step for c in ck.list()] == [4, 8, 9, 10]
    assert (tmp_path / "ckpt-00000010" / "model.m.safetensors").read_bytes()[8:9] == b"{"  # safetensors header
    # A write killed before its rename leaves only a hidden temporary directory: never a candidate, then swept.
    (tmp_path / ".ckpt-00000011.tmp").mkdir()
    (tmp_path / ".ckpt-00000011.tmp" / "state.pt").write_bytes(b"half")
    assert ck.latest().step == 10
    Checkpointer(tmp_path)
    assert not (tmp_path / ".ckpt-00000011.tmp").exists()
    # A checkpoint that lost bytes is skipped with a warning; the previous complete one is used.
    with open(tmp_path / "ckpt-00000010" / "model.m.safetensors", "r+b") as f:
        f.truncate(10)
    latest = ck.latest()
    assert latest.step == 9 and any("damaged" in str(w.message) for w in recwarn)
    assert torch.equal(Checkpointer.load_tensors(latest, "model.m")["w"], torch.full((3,), 9.0))
    assert Checkpointer.load_rank_state(latest, 0) == {"r": 9}


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_state_is_loaded_weights_only(tmp_path):
    ck = Checkpointer(tmp_path)
    info = ck.info(ck.save(1, state={"step": 1}))
    torch.save({"step": 1, "payload": _Evil()}, info.path / "state.pt")
    with pytest.raises(pickle.UnpicklingError):
        Checkpointer.load_state(info)


def test_rng_state_roundtrip_through_a_weights_only_file(tmp_path):
    gens = {"torch": torch.Generator().manual_seed(3), "pcg": np.random.default_rng(4),
            "mt": np.random.Generator(np.random.MT19937(5)), "py": random.Random(6)}

    def draw():
        return (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gens["torch"]).item(),
                gens["pcg"].random(), gens["mt"].random(), gens["py"].random())

    torch.save(capture_rng(gens), tmp_path / "rng.pt")
    first = draw()
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), gens)
    assert draw() == first


def test_resumable_loader_shards_and_resumes():
    data = torch.arange(50)
    single = ResumableLoader(data, 8, seed=1, drop_last=True)
    ranks = [ResumableLoader(data, 4, seed=1, rank=r, world_size=2, drop_last=True) for r in range(2)]
    for whole, *parts in zip(single, *ranks):  # 2 processes x 4 == 1 process x 8, item for item
        assert torch.equal(whole, torch.cat(parts))
    assert len(single) == 6 and single.epoch == 1

    loader = ResumableLoader(data, 8, seed=1, drop_last=True)
    epoch0 = list(loader)
    epoch1 = list(loader)
    assert not torch.equal(torch.cat(epoch0), torch.cat(epoch1))  # a new order each epoch
    it = iter(loader)
    head = [next(it), next(it)]
    state = loader.state_dict()
    rest = list(it)
    again = ResumableLoader(data, 8, seed=1, drop_last=True)
    again.load_state_dict(state)
    assert [torch.equal(a, b) for a, b in zip(list(again), rest)] == [True] * len(rest) and len(head) == 2

    class MapStyle(torch.utils.data.Dataset):
        def __len__(self):
            return 50

        def __getitem__(self, i):
            return data[i]
    via_dataloader = list(ResumableLoader(MapStyle(), 8, seed=1, drop_last=True))
    assert all(torch.equal(a, b) for a, b in zip(via_dataloader, epoch0))
    padded = [list(ResumableLoader(data, 4, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert len(padded[0]) == len(padded[1]) == 7 and all(len(b) == 4 for b in padded[1])


def test_lr_schedules():
    def lrs(name, **kw):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = make_lr_schedule(opt, name, total_steps=10, **kw)
        out = []
        for _ in range(10):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    assert lrs("constant") == [1.0] * 10
    assert lrs("warmup", warmup_steps=4) == [0.25, 0.5, 0.75] + [1.0] * 7
    cos = lrs("cosine", warmup_steps=2, min_ratio=0.1)
    assert cos[:3] == [0.5, 1.0, 1.0] and cos[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(cos[1:], cos[2:]))
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lrs("triangle")


def test_ema_warmup_update_swap_and_state():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.99, warmup="linear")
    assert ema.current_decay() == pytest.approx(0.1)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.tensors()["weight"], start + 0.9)  # 0.1 * old + 0.9 * new
    assert ema.current_decay() == pytest.approx(2 / 11)
    live = model.weight.detach().clone()
    with ema.swap(model):
        torch.testing.assert_close(model.weight, start + 0.9)
    assert torch.equal(model.weight, live)
    power = EMA(model, decay=0.9999)
    power.num_updates = 100
    assert power.current_decay() == pytest.approx(1 - 101 ** (-2 / 3))
    other = EMA(torch.nn.Linear(3, 2), decay=0.99, warmup="linear")
    other.load_tensors(ema.tensors())
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1 and torch.equal(other.tensors()["weight"], ema.tensors()["weight"])


def test_step_logger_averages_and_truncates(tmp_path):
    log = StepLogger(tmp_path, every=2, csv=True, progress=False)
    for step in range(1, 7):
        log.add({"loss": torch.tensor(float(step)), "acc": 0.5})
        log.end_step(step, lambda: {"lr": 0.1})
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"], r["lr"]) for r in rows] == [(2, 1.5, 0.1), (4, 3.5, 0.1), (6, 5.5, 0.1)]
    log.truncate_after(4)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("step,acc,loss,lr")
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3
    log.close()


def test_text_embedding_cache(tmp_path):
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return {"prompt_embeds": torch.stack([torch.full((4, 3), float(len(t))) for t in texts]),
                "pooled": torch.tensor([[float(ord(t[0]))] for t in texts])}

    ident = {"tokenizer": "tiny-clip", "model": "tiny-clip", "max_length": 4}
    cache = TextEmbeddingCache(tmp_path, ident)
    out = cache(["a red one", "a blue two", "a red one"], encode)
    assert calls == [["a red one", "a blue two"]] and out["prompt_embeds"].shape == (3, 4, 3)
    assert out["prompt_embeds"][1, 0, 0] == len("a blue two") and out["pooled"][2, 0] == ord("a")

    fresh = TextEmbeddingCache(tmp_path, dict(ident), memory=False)  # a new process: served from disk
    again = fresh(["a blue two", "a green six"], encode)
    assert calls[-1] == ["a green six"] and fresh.hits == 1 and fresh.misses == 1
    assert torch.equal(again["prompt_embeds"][0], out["prompt_embeds"][1])
    assert fresh.path("a blue two").suffix == ".safetensors"

    other = TextEmbeddingCache(tmp_path, {**ident, "model": "other"})
    other(["a blue two"], lambda ts: torch.zeros(len(ts), 2))
    assert calls[-1] == ["a green six"] and other.dir != cache.dir
    assert other(["a blue two"], encode).shape == (1, 2)  # a tensor encoder gives a tensor back
    assert cache.precompute(["a red one", "x"], encode) == 1


def test_fsdp_presets_build_accelerate_plugins():
    plugin = fsdp_plugin("full_shard", wrap="sdxl", mixed_precision="bf16")
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.transformer_cls_names_to_wrap == ["BasicTransformerBlock", "ResnetBlock2D"]
    assert plugin.mixed_precision_policy.param_dtype == torch.bfloat16
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    grad_op = fsdp_plugin("shard_grad_op", min_num_params=10_000)
    assert grad_op.reshard_after_forward is False and grad_op.min_num_params == 10_000
    assert fsdp_plugin("offload").cpu_offload.__class__.__name__ == "CPUOffloadPolicy"
    with pytest.raises(ValueError, match="unknown FSDP preset"):
        fsdp_plugin("zero9")


def test_trainer_resumes_a_shared_data_loader(tmp_path, digits_tiny):
    """Projects read shards/LMDB/folders with shared.data.ResumableLoader; batches() checkpoints it per process."""
    from shared.data import FolderSource, ResumableLoader

    def run(run_dir, stop_at=None):
        trainer = Trainer(TrainConfig(run_dir=str(run_dir), max_steps=8, ckpt_every=2, progress=False))
        model = torch.nn.Linear(32 * 32 * 3, 10)
        model, _ = trainer.add("model", model, torch.optim.SGD(model.parameters(), lr=0.1))
        loader = ResumableLoader(FolderSource(digits_tiny / "train", extra_keys=("digit",)), batch_size=32, seed=3,
                                 rank=trainer.rank, world_size=trainer.world_size)  # 160 images: 5 batches/epoch
        seen = []
        try:
            for batch in trainer.batches(loader):
                if trainer.global_step == stop_at:
                    os.kill(os.getpid(), signal.SIGUSR2)
                seen.append(batch["digit"].tolist())
                loss = F.cross_entropy(model(batch["image"].float().flatten(1) / 255), batch["digit"])
                trainer.backward(loss)
                trainer.optimizer_step()
        except Preempted:
            return None, seen
        trainer.finish()
        return trainer, seen

    ref, ref_seen = run(tmp_path / "ref")
    _, before = run(tmp_path / "run", stop_at=3)
    resumed, after = run(tmp_path / "run")
    assert resumed.resumed_from.step == 4 and before + after == ref_seen and len(ref_seen) == 8
    assert "train" in Checkpointer.load_rank_state(resumed.resumed_from, 0)["data"]
    _assert_same(_weights(resumed), _weights(ref))


def test_resuming_with_changed_settings_warns(tmp_path, capsys):
    """A run_dir resumes whatever it holds; a changed lr (not max_steps) is named in a warning."""
    import dataclasses

    from omegaconf import OmegaConf

    def run(lr, max_steps):
        cfg = OmegaConf.create({**dataclasses.asdict(TrainConfig(run_dir=str(tmp_path / "r"), max_steps=max_steps,
                                                                 ckpt_every=1, progress=False)), "lr": lr})
        trainer = Trainer(cfg)
        model = torch.nn.Linear(2, 1)
        model, _ = trainer.add("model", model, torch.optim.SGD(model.parameters(), lr=lr))
        for (xb,) in trainer.batches(trainer.loader((torch.randn(8, 2),), 4)):
            trainer.backward(model(xb).pow(2).mean())
            trainer.optimizer_step()
        trainer.finish()

    run(1e-3, 2)
    run(1e-3, 3)  # more steps only: no warning
    assert "warning: resuming" not in capsys.readouterr().err
    run(5e-4, 4)
    err = capsys.readouterr().err
    assert "warning: resuming" in err and "lr: 0.001 -> 0.0005" in err and "max_steps" not in err


def test_finish_draws_training_curves_for_every_run(tmp_path):
    """Every training run gets curves.png (+ the CSV behind it) from its metrics.jsonl, a tiny run's 3 rows too
    (the workflow declares <run_dir>/curves.png an output of every training rule)."""
    import csv as _csv

    from shared.train.trainer import TrainConfig, Trainer

    def run(name, steps, **finish_kw):
        cfg = TrainConfig(run_dir=str(tmp_path / name), max_steps=steps, log_every=1, ckpt_every=0, progress=False)
        trainer = Trainer(cfg)
        model = torch.nn.Linear(2, 1)
        model, _ = trainer.add("model", model, torch.optim.SGD(model.parameters(), lr=0.1))
        x = torch.randn(64, 2)
        y = x @ torch.tensor([[1.0], [-2.0]])
        for (xb, yb) in trainer.batches(trainer.loader((x, y), 8)):
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            trainer.backward(loss)
            trainer.optimizer_step()
            trainer.log(loss=loss)
        trainer.finish({"final": 1.0}, **finish_kw)
        return tmp_path / name

    long_run = run("long", 25)
    assert (long_run / "curves.png").stat().st_size > 1000
    rows = list(_csv.DictReader((long_run / "curves.csv").open()))
    losses = [float(r["value"]) for r in rows if r["key"] == "loss"]
    assert len(losses) == 25 and losses[-1] < losses[0]  # the plotted loss is the logged one
    short = run("short", 3)
    assert (short / "curves.png").stat().st_size > 1000
    assert [int(r["step"]) for r in _csv.DictReader((short / "curves.csv").open()) if r["key"] == "loss"] == [1, 2, 3]
    assert (run("asked", 3, curves_title="tiny but wanted") / "curves.png").is_file()
