"""DMD2's checkpoint evaluators (main/edm/test_folder_edm.py, main/sdxl/test_folder_sdxl.py, main/test_folder_sd.py;
named apart from them so pytest never takes this module for a test file):
evaluate every checkpoint of a training run as it appears, while the run trains.

For each complete checkpoint in `<folder>/checkpoints/` not yet evaluated (oldest first): the generator weights of
that step (its EMA when the run keeps one) are written to `<folder>/eval/step_<n>/` with generator.json, sampled
by sample.py (`total_eval_samples` images; prompts from `--anno_path`, or the class labels 0..label_dim-1 in turn
for an EDM generator) and scored by evaluate.py at `--eval_res` against `--ref_dir` (FID / FD, CLIP score with
`--clip_score`); one JSON line per checkpoint goes to `<folder>/eval/results.jsonl` (the original logged to wandb).
It keeps watching until the run has finished (generator.safetensors written) and every checkpoint is scored, as
the originals loop while training runs (`--no-wait`: score what is there and stop).

    python -m projects.dmd2.evaluate_checkpoints --folder results/paper/dmd2/runs/imagenet64 --resolution 64 \
        --label_dim 1000 --ref_path downloads/dmd2/imagenet64_edm/imagenet-64x64.npz
    python -m projects.dmd2.evaluate_checkpoints --folder RUN --conditioning_timestep 999 --num_step 4 --eval_res 512 \
        --ref_dir downloads/dmd2/coco10k/images --anno_path downloads/dmd2/coco10k/prompts.txt \
        --total_eval_samples 10000 --clip_score
    python -m projects.dmd2.evaluate_checkpoints --folder RUN --image_resolution 512 --latent_resolution 64 \
        --num_train_timesteps 1000 --eval_res 256 --ref_dir downloads/dmd2/coco30k/images \
        --total_eval_samples 30000 --model_id runwayml/stable-diffusion-v1-5 --pred_eps
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from projects.dmd2.original import check_same, model_folder
from shared.config import Alias, ConfigError, Refused, cli, option, resolve
from shared.io import write_json


@dataclass
class Config:
    scale: str = "paper"
    folder: str = option("", help="a train.py run folder (its checkpoints/ are evaluated)")
    total_eval_samples: int = option(0, min=0, help="images per checkpoint; 0 = sample.py's preset of the scale")
    eval_res: int = option(0, min=0, help="evaluate at this resolution (0 = as generated)")
    ref_dir: str = option("", help="reference images, or statistics .npz (--ref_path)")
    anno_path: str = option("", help="prompts, one per line ('' = class labels for EDM, else the run's data)")
    clip_score: bool = option(False, help="add the CLIP score (needs --clip, a local CLIP folder)")
    clip: str = ""
    extractor: str = option("", help="'' = evaluate.py's preset of the scale (paper: Inception)")
    num_step: int = option(0, min=0, help="0 = as trained")
    conditioning_timestep: int = option(-1, help="-1 = as trained")
    label_dim: int = option(0, min=0, help="checked against the generator's")
    image_resolution: int = option(0, min=0, help="checked against the generator's")
    latent_resolution: int = option(0, min=0, help="checked against the generator's")
    num_train_timesteps: int = option(0, min=0, help="checked against the scheduler's")
    model_id: str = option("", help="the teacher pipeline ('' = the run's); a hub id reads downloads/<name>")
    pred_eps: bool = option(False, help="checked: the teacher predicts noise")
    wait: bool = option(True, help="keep watching until the run has finished")
    poll_seconds: float = option(60.0, min=0)
    seed: int = 10
    batch_size: int = option(16, min=1)
    device: str = "auto"


PRESETS = {"tiny": {"poll_seconds": 1.0}, "toy": {}, "paper": {}}
ALIASES = {"resolution": Alias("eval_res", help="test_folder_edm.py: evaluation resolution"),
           "ref_path": Alias("ref_dir", help="test_folder_edm.py: reference statistics"),
           "detector_url": Refused("the Inception network is read from a local file: extractor=inception:<file> "
                                   "(projects/dmd2/download.py item=inception fetches it)"),
           "eval_batch_size": Alias("batch_size"),
           "wandb_entity": Refused("results go to <folder>/eval/results.jsonl (no wandb)"),
           "wandb_project": Refused("results go to <folder>/eval/results.jsonl (no wandb)")}


def generator_weights(checkpoint: Path) -> dict:
    """The generator of one training checkpoint: its weights, with the EMA averages over them when kept."""
    from safetensors.torch import load_file

    model = checkpoint / "model.generator.safetensors"
    if not model.is_file():
        raise FileNotFoundError(f"{checkpoint}: no generator weights (model.generator.safetensors)")
    weights = load_file(str(model))
    ema = checkpoint / "ema.generator.safetensors"
    if ema.is_file():
        weights.update(load_file(str(ema)))
    return weights


def evaluate_checkpoint(cfg, run_cfg, checkpoint: Path, out: Path) -> dict:
    from safetensors.torch import save_file

    from projects.dmd2 import evaluate, sample
    from projects.dmd2.train import generator_info

    if run_cfg.get("lora_rank", 0):
        raise ConfigError(f"{cfg.folder}: a LoRA run's checkpoints hold the adapter only; evaluate its final "
                          "generator.safetensors with sample.py + evaluate.py")
    info = generator_info(run_cfg)
    if cfg.model_id:
        info["teacher"] = model_folder(cfg.model_id)
    out.mkdir(parents=True, exist_ok=True)
    save_file(generator_weights(checkpoint), str(out / "generator.safetensors"))
    write_json(out / "generator.json", info)
    prompts = cfg.anno_path
    if not prompts:
        if info["backbone"] != "edm":
            raise ConfigError("--anno_path (the evaluation prompts, one per line) is needed for a text-to-image run")
        prompts = str(out / "labels.txt")
        Path(prompts).write_text("".join(f"{i}\n" for i in range(cfg.label_dim or _label_dim(out))))
    options = {"scale": cfg.scale, "checkpoint": str(out), "prompts": prompts, "out_dir": str(out / "samples"),
               "num_step": cfg.num_step, "conditioning_timestep": cfg.conditioning_timestep, "seed": cfg.seed,
               "batch_size": cfg.batch_size, "device": cfg.device}
    if cfg.total_eval_samples:
        options["num_images"] = cfg.total_eval_samples
    sample.main(options)
    # the originals report FID (here FD on the toy features below paper scale), and the CLIP score when asked
    metrics = ["fid" if cfg.scale == "paper" else "fd"] + (["clip_score"] if cfg.clip_score else [])
    ev = {"scale": cfg.scale, "images": str(out / "samples"), "reference": cfg.ref_dir, "resolution": cfg.eval_res,
          "metrics": metrics, "experiment": Path(cfg.folder).name, "checkpoint": checkpoint.name,
          "out": str(out / "eval.json"), "device": "cpu" if cfg.device == "auto" else cfg.device}
    ev.update({k: cfg[k] for k in ("extractor", "clip") if cfg[k]})
    return evaluate.main(ev)


def _label_dim(out: Path) -> int:
    from projects.dmd2.generation import load_generator

    return load_generator(out)[2].label_dim


def check_model(cfg, run_cfg) -> None:
    """The options that restate the model must agree with the run's teacher (refused, not ignored)."""
    if not any(cfg[k] for k in ("label_dim", "image_resolution", "latent_resolution", "num_train_timesteps",
                                "pred_eps")):
        return
    from projects.dmd2.backbones import load_backbone

    kind = run_cfg.backbone
    kw = {"config": run_cfg.teacher_config, "strip_prefix": run_cfg.teacher_strip_prefix} if kind == "edm" else \
        ({"resolution": run_cfg.resolution} if run_cfg.resolution else {})
    backbone = load_backbone(kind, model_folder(cfg.model_id) or run_cfg.teacher, **kw)
    if kind == "edm":
        check_same("label_dim", cfg.label_dim, backbone.label_dim, "generator's number of classes")
    else:
        check_same("image_resolution", cfg.image_resolution, backbone.resolution, "generator's image resolution")
        check_same("latent_resolution", cfg.latent_resolution, backbone.latent_size, "generator's latent resolution")
        if cfg.pred_eps and backbone.prediction_type != "epsilon":
            raise ConfigError(f"--pred_eps: the teacher predicts {backbone.prediction_type}, not the noise")
    check_same("num_train_timesteps", cfg.num_train_timesteps, backbone.num_train_timesteps,
               "scheduler's number of timesteps")


def checkpoints(directory: Path) -> list:
    """The complete checkpoints of a run, oldest first, read without touching the folder (a Checkpointer would
    clear the training process's half-written one)."""
    from shared.train.checkpoint import Checkpointer

    reader = object.__new__(Checkpointer)
    reader.dir = directory
    return reader.list()


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    folder = Path(cfg.folder)
    if not (folder / "config.yaml").is_file():
        raise ConfigError(f"--folder {folder}: not a train.py run folder (no config.yaml)")
    if not cfg.ref_dir:
        raise ConfigError("--ref_dir (reference images or statistics) is required")
    run_cfg = OmegaConf.load(folder / "config.yaml")
    check_model(cfg, run_cfg)
    eval_dir = folder / "eval"
    done = {json.loads(line)["checkpoint"] for line in (eval_dir / "results.jsonl").read_text().splitlines()} \
        if (eval_dir / "results.jsonl").is_file() else set()
    scored = []
    while True:
        finished = (folder / "generator.safetensors").is_file()  # read before listing: no checkpoint is missed
        todo = [c for c in checkpoints(folder / "checkpoints") if c.path.name not in done]
        for ckpt in todo:
            result = evaluate_checkpoint(cfg, run_cfg, ckpt.path, eval_dir / f"step_{ckpt.step:07d}")
            line = {"checkpoint": ckpt.path.name, "step": ckpt.step,
                    "metrics": {m["metric"]: m["value"] for m in result["metrics"]}}
            eval_dir.mkdir(parents=True, exist_ok=True)
            with open(eval_dir / "results.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
            print(f"step {ckpt.step}: {line['metrics']}", flush=True)
            done.add(ckpt.path.name)
            scored.append(line)
        if finished or not cfg.wait:
            return scored
        time.sleep(cfg.poll_seconds)


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__, aliases=ALIASES)
