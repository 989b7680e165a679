"""Sample a distilled generator (or the teacher, for baselines) into an image folder, sharded with per-sample seeds.

Sample i uses seed `seed + i` for all its noise, so any shard can be re-run alone and gives the same images.
Shards: `num_shards`/`shard_index` (default: SLURM array task, or torchrun's RANK/WORLD_SIZE); sample i belongs
to shard i % num_shards. Existing images are kept (a re-run fills the gaps). Writes <i:06d>.png + <i:06d>.txt
(the prompt) and, once all shards are complete, samples.json, which also records what the leaderboard shows:
`parameters` (of the network sampled), `seconds_per_image` (sampling time over the shards' `timing.shard<k>.json`)
and `nfe` (network rows evaluated per image, counted by a forward hook: classifier-free guidance counts twice).

    python projects/dmd2/sample.py checkpoint=results/toy/dmd2/digits_1step_gan prompts=data/toy/dmd2/digits/eval_prompts.txt out_dir=...
    python -m projects.dmd2.sample mode=teacher teacher=results/toy/dmd2/teacher backbone=edm sampler=edm_euler steps=4 ...
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from shared.config import cli, resolve, save_resolved
from shared.io import atomic_path, read_json, write_json
from shared.launch import sample_shard, step_device
from projects.dmd2.prompts import read_prompts


@dataclass
class Config:
    scale: str = "toy"
    mode: str = "generator"  # generator | teacher
    checkpoint: str = ""  # generator: training run folder, or a released weights file (with teacher=)
    teacher: str = ""  # teacher mode, or the pipeline a released generator file plugs into
    backbone: str = "edm"  # teacher mode: edm | sd
    teacher_config: str = ""  # teacher mode, edm weights file: EDM_CONFIGS name
    prompts: str = "data/toy/dmd2/digits/eval_prompts.txt"
    num_images: int = 0  # 0 = one per prompt; more cycles through the prompts
    out_dir: str = "results/toy/dmd2/samples/digits_1step_gan"
    num_step: int = 0  # generator: 0 = the trained step list; 1 = conditioning_timestep; n = n even steps
    conditioning_timestep: int = -1  # generator, num_step=1: -1 = the trained one
    sampler: str = "edm_euler"  # teacher mode: a shared.samplers preset
    steps: int = 32  # teacher mode
    guidance_scale: float = 1.0  # teacher mode: classifier-free guidance
    seed: int = 0
    batch_size: int = 64
    num_shards: int = 0  # 0 = from SLURM_ARRAY_TASK_COUNT / WORLD_SIZE, else 1
    shard_index: int = -1  # -1 = from SLURM_ARRAY_TASK_ID / RANK, else 0
    device: str = "auto"  # auto = cuda:<LOCAL_RANK> when available
    threads: int = 0


# tiny: enough images for FD in the tiny digits CNN's 16-d feature space (it refuses fewer samples than dims)
PRESETS = {"tiny": {"batch_size": 8, "num_images": 32}, "toy": {}, "paper": {"batch_size": 16}}


def step_list(num_step: int, conditioning_timestep: int, trained: list[int], num_train_timesteps: int = 1000) -> list[int]:
    """Timesteps of an n-step generator: DMD2's evenly spaced list (999, 749, 499, 249 for 4), or for one step
    the conditioning timestep."""
    if num_step <= 0:
        ts = list(trained)
        if len(ts) == 1 and conditioning_timestep >= 0:
            ts = [conditioning_timestep]
        return ts
    if num_step == 1:
        return [conditioning_timestep if conditioning_timestep >= 0 else trained[0]]
    return list(range(num_train_timesteps - 1, 0, -(num_train_timesteps // num_step)))[:num_step]


@contextmanager
def counting_rows(module: torch.nn.Module):
    """Counts the batch rows (first tensor input) of the outermost calls into `module` or one of its direct
    children: the EDM samplers call the teacher's inner `.model`, the SD ones the UNet itself. Rows / images =
    NFE per image. Deeper modules are not hooked, so the hooks cost nothing measurable in the timing."""
    count, depth = [0], [0]

    def enter(_module, args, kwargs):
        if depth[0] == 0:
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            count[0] += int(first.shape[0]) if first is not None and first.ndim else 0
        depth[0] += 1

    def leave(_module, _args, _output):
        depth[0] -= 1

    handles = []
    for m in (module, *module.children()):
        handles += [m.register_forward_pre_hook(enter, with_kwargs=True), m.register_forward_hook(leave)]
    try:
        yield count
    finally:
        for h in handles:
            h.remove()


def timing_summary(out: Path) -> dict:
    """seconds_per_image and nfe over every shard's timing file (shards that made no new image are left out)."""
    shards = [read_json(p) for p in sorted(out.glob("timing.shard*.json"))]
    timed = [t for t in shards if t.get("images")]
    if not timed:
        return {}
    images, rows = sum(t["images"] for t in timed), sum(t.get("rows", 0) for t in timed)
    return {"seconds_per_image": sum(t["seconds"] for t in timed) / images,
            **({"nfe": round(rows / images, 3)} if rows else {})}


def main(cfg=None):
    from projects.dmd2.backbones import load_backbone
    from projects.dmd2.generation import few_step_generate, load_generator, teacher_generate, to_pil

    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = step_device(cfg.device)
    prompts = read_prompts(cfg.prompts)
    n = cfg.num_images or len(prompts)
    k, shards = sample_shard(cfg.num_shards, cfg.shard_index)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mine = [i for i in range(k, n, shards) if not (out / f"{i:06d}.png").is_file()]
    if cfg.mode == "generator":
        net, info, backbone = load_generator(cfg.checkpoint, cfg.teacher, device=str(device))
        timesteps = step_list(cfg.num_step, cfg.conditioning_timestep, info.get("denoising_step_list", [999]),
                              backbone.num_train_timesteps)
        what = {"mode": "generator", "checkpoint": cfg.checkpoint, "timesteps": timesteps}
        network = net
    elif cfg.mode == "teacher":
        kw = {"config": cfg.teacher_config} if cfg.backbone == "edm" else {}
        backbone = load_backbone(cfg.backbone, cfg.teacher, **kw).to(device)
        what = {"mode": "teacher", "teacher": cfg.teacher, "sampler": cfg.sampler, "steps": cfg.steps,
                "guidance_scale": cfg.guidance_scale}
        network = backbone.teacher
    else:
        raise ValueError(f"mode={cfg.mode!r}; expected generator or teacher")
    if k == 0:
        save_resolved(cfg, out, name="sample_config.yaml")
    seconds = 0.0
    with counting_rows(network) as rows:
        for b in tqdm(range(0, len(mine), cfg.batch_size), desc=f"sample shard {k}/{shards}", leave=False):
            idx = mine[b:b + cfg.batch_size]
            p = [prompts[i % len(prompts)] for i in idx]
            seeds = [cfg.seed + i for i in idx]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            if cfg.mode == "generator":
                images = few_step_generate(backbone, net, p, timesteps, seeds, batch_size=len(idx))
            else:
                images = teacher_generate(backbone, p, cfg.sampler, cfg.steps, seeds, cfg.guidance_scale, len(idx))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - t0
            _save(out, idx, p, to_pil(images))
    if mine:  # a re-run that made nothing keeps the shard's earlier timing
        write_json(out / f"timing.shard{k}.json", {"images": len(mine), "seconds": seconds, "rows": rows[0],
                                                   "device": str(device)})
    done = sum((out / f"{i:06d}.png").is_file() for i in range(n))
    if done == n:
        write_json(out / "samples.json", {**what, "num_images": n, "seed": cfg.seed, "prompts": cfg.prompts,
                                          "parameters": sum(t.numel() for t in network.parameters()),
                                          **timing_summary(out)})
    print(f"shard {k}/{shards}: {len(mine)} new images; {done}/{n} present in {out}")
    return out


def _save(out: Path, idx: list[int], prompts: list[str], images) -> None:
    for i, text, im in zip(idx, prompts, images):
        (out / f"{i:06d}.txt").write_text(text + "\n")
        with atomic_path(out / f"{i:06d}.png") as tmp:
            im.save(tmp, format="PNG")


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
