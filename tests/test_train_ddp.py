"""DDP on CPU (gloo, 2 processes via torchrun): a signal reaching one rank stops both at the same step boundary,
both resume from that checkpoint, end with identical weights, and match one process with the same global batch.
The same processes also check EMA over FSDP2-sharded parameters.

This file is also the worker script: torchrun runs it with `<run_dir> <out_dir>`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
STEPS, GLOBAL_BATCH = 10, 32


def train(run_dir: str, per_process_batch: int, signal_rank: int | None = None):
    """The digits MLP without randomness in the step (no dropout, no noise), so process count cannot matter."""
    from shared.train import Trainer, TrainConfig
    from shared.train.example import MLP, load_digits_split

    trainer = Trainer(TrainConfig(run_dir=run_dir, max_steps=STEPS, ckpt_every=4, log_every=2, progress=False,
                                  ema_decay=0.8, lr_schedule="cosine", warmup_steps=2))
    (x, y), _ = load_digits_split()
    model = MLP(16, dropout=0.0)
    model, _ = trainer.add("model", model, torch.optim.AdamW(model.parameters(), lr=1e-2))
    for xb, yb in trainer.batches(trainer.loader((x, y), per_process_batch)):
        if trainer.rank == signal_rank and trainer.global_step == 4:
            os.kill(os.getpid(), signal.SIGUSR2)  # only this rank is told; the other must stop with it
        loss = F.cross_entropy(model(xb), yb)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss)
    trainer.finish()
    return trainer


def ema_on_sharded_params(world: int) -> dict:
    """EMA of FSDP2-sharded parameters (DTensors, sharded over the 2 gloo processes): average, gather, reload."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from shared.train import EMA

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 6)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    ema = EMA(model, decay=0.5, warmup="none")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    full = ema.tensors()  # collective
    reloaded = EMA(model, decay=0.5, warmup="none")
    reloaded.load_tensors(full)
    return {"local_rows": ema.shadow[0].to_local().shape[0],
            "averaged": all(torch.allclose(full[k], start[k] + 0.5) for k in full),
            "reloaded": all(torch.equal(a.full_tensor(), b.full_tensor()) for a, b in zip(reloaded.shadow, ema.shadow))}


def worker(run_dir: str, out_dir: str) -> None:
    from safetensors.torch import save_file

    from shared.train import Preempted

    world = int(os.environ["WORLD_SIZE"])
    try:
        train(run_dir, GLOBAL_BATCH // world, signal_rank=world - 1)
        preempted_at = None
    except Preempted as e:
        preempted_at = e.step
    trainer = train(run_dir, GLOBAL_BATCH // world)  # the restart, in the same processes
    unit = trainer.unit("model")
    tensors = {**{f"model.{k}": v for k, v in unit.raw.state_dict().items()},
               **{f"ema.{k}": v for k, v in unit.ema.tensors().items()}}
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out_dir}/rank{trainer.rank}.safetensors")
    with open(f"{out_dir}/rank{trainer.rank}.json", "w") as f:
        json.dump({"preempted_at": preempted_at, "resumed_from": trainer.resumed_from.step,
                   "world_size": trainer.world_size, "distributed": trainer.accelerator.distributed_type.value,
                   "sharded_ema": ema_on_sharded_params(world)}, f)


@pytest.mark.slow  # subprocess starts (torch import) dominate: ~30-60 s on 2 busy cores
def test_ddp_two_processes_agree_and_match_one_process(tmp_path):
    from accelerate.state import AcceleratorState
    from safetensors.torch import load_file

    from shared.train import Checkpointer

    run_dir, out = tmp_path / "ddp", tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    log = tmp_path / "torchrun.log"
    with open(log, "w") as f:  # a file, not a pipe: nobody reads while the in-process run below goes on
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 "2", __file__, str(run_dir), str(out)], cwd=REPO, env=env, stdout=f,
                                stderr=subprocess.STDOUT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the 1-process run with the same global batch, while the 2 processes start up
        single = train(str(tmp_path / "single"), GLOBAL_BATCH)
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
    assert proc.wait(timeout=300) == 0, log.read_text()[-6000:]

    info = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(i["world_size"] == 2 and i["distributed"] == "MULTI_CPU" for i in info)
    assert [i["preempted_at"] for i in info] == [5, 5] and [i["resumed_from"] for i in info] == [5, 5]
    assert all(i["sharded_ema"] == {"local_rows": 3, "averaged": True, "reloaded": True} for i in info)
    ranks = [load_file(str(out / f"rank{r}.safetensors")) for r in range(2)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # both ranks, bit for bit
    saved = Checkpointer(run_dir / "checkpoints").latest()
    assert saved.step == STEPS and {"rank00000.pt", "rank00001.pt"} <= set(saved.meta["files"])

    unit = single.unit("model")
    expected = {**{f"model.{k}": v for k, v in unit.raw.state_dict().items()},
                **{f"ema.{k}": v for k, v in unit.ema.tensors().items()}}
    for k, v in expected.items():  # same global batch: equal up to the order of float sums
        torch.testing.assert_close(ranks[0][k], v, atol=1e-5, rtol=0)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
