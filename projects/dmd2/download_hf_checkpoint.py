"""DMD2's `bash scripts/download_hf_checkpoint.sh model/path/name OUTPUT_PATH`: one released *training* checkpoint
folder (generator and guidance model weights, their optimizers and schedulers, the RNG state) from the tianweiy/DMD2
hub repository, through shared.download (atomic files, SHA-256 of each in download.json; a re-run skips what is
there; `--mirror DIR` reads the same file names from a staging folder where the machine has no internet).

train.py reads the weights of such a folder with `init_from=OUTPUT_PATH` (pytorch_model.bin = generator,
pytorch_model_1.bin = guidance model); the optimizer/scheduler/RNG files are fetched as the original does, but a
run here resumes from its own checkpoints.

    python projects/dmd2/download_hf_checkpoint.py sdxl_cond999_8node_lr5e-7_denoising4step_diffusion1000_gan5e-3_guidance8_noinit_noode_backsim_scratch_checkpoint_model_019000 downloads/dmd2/sdxl_ckpt
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.config import ConfigError, cli, option, resolve

REPO_URL = "https://huggingface.co/tianweiy/DMD2/resolve/main/model"
# scripts/download_hf_checkpoint.sh: the files of one accelerate checkpoint folder
FILES = ("optimizer.bin", "optimizer_1.bin", "pytorch_model.bin", "pytorch_model_1.bin", "scheduler.bin",
         "scheduler_1.bin", "random_states_0.pkl")


@dataclass
class Config:
    scale: str = "paper"
    checkpoint_name: str = option("", help="the checkpoint's path under model/ in the tianweiy/DMD2 repository")
    output_path: str = option("", help="the folder to write")
    mirror: str = option("", help="folder or URL prefix serving the same file names (staged by hand)")


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def main(cfg=None):
    from shared.download import Download, fetch

    cfg = resolve(Config, cfg, PRESETS)
    if not cfg.checkpoint_name or not cfg.output_path:
        raise ConfigError("usage: download_hf_checkpoint.py CHECKPOINT_NAME OUTPUT_PATH")
    name = cfg.checkpoint_name.strip("/")
    item = Download(f"DMD2 training checkpoint {name}", urls=tuple(f"{REPO_URL}/{name}/{f}?download=true"
                                                                   for f in FILES))
    record = fetch(item, cfg.output_path, mirror=cfg.mirror)
    print(f"{len(FILES)} files -> {cfg.output_path}")
    return record


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__, positional=["checkpoint_name", "output_path"])
