"""The lab's original `flux2.py` command line: FLUX.2 fine-tuning (`--finetune`) or folder editing, run by our steps.

    --finetune   train_flux.py: data_dir=--train_dir, run_dir=--output_model (the whole fine-tuned pipeline goes to
                 <output_model>/pipeline, which --model reads back), lr, batch_size, and --epochs passes over the
                 images (max_steps = epochs x (images // batch_size): train_flux.py drops the last partial batch)
    otherwise    generate.py mode=edit: every image of --input (sorted, from --start, at most --limit; 0 = all) is
                 edited by the instruction --prompt into --output

`--model`: the pipeline to start from or generate with (a pipeline folder or an --output_model folder).

    python projects/sd_flux_lab/flux2.py --finetune --train_dir ./images/_v2/girl/ --output_model ./tuned/flux2 \
        --epochs 10 --lr 1e-5 --batch_size 2
    python projects/sd_flux_lab/flux2.py --input ./images/__tmp/ --output ./output --prompt "make it winter" \
        --limit 10 --start 0 --model ./tuned/flux2
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.config import cli, option, resolve


@dataclass
class Config:
    scale: str = option("paper", help="our scale presets of the steps below (tiny: random tiny models)")
    finetune: bool = option(False, help="fine-tune (train_flux.py) instead of editing")
    model: str = option("downloads/flux2", help="FLUX.2 pipeline folder, or an --output_model folder")
    train_dir: str = option("", help="--finetune: the image folder (captions from .txt/.cap files or folders)")
    output_model: str = option("tuned/flux2", help="--finetune: the run folder (resumed from; pipeline/ inside)")
    epochs: int = option(1, min=1)
    lr: float = option(1e-5, min=0)
    batch_size: int = option(1, min=1)
    resolution: int = option(0, min=0, help="--finetune: 0 = train_flux.py's preset of the scale")
    input: str = option("", help="edit: the folder of images to edit")
    output: str = option("output", help="edit: where the edited images go")
    prompt: str = option("", help="edit: the instruction")
    start: int = option(0, min=0)
    limit: int = option(0, min=0, help="0 = all")
    seed: int = 0


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def main(cfg=None):
    from projects.sd_flux_lab import generate, train_flux
    from projects.sd_flux_lab.original import flux2_steps, pipeline_of

    cfg = resolve(Config, cfg, PRESETS)
    if cfg.finetune:
        if not cfg.train_dir:
            raise ValueError("--finetune needs --train_dir <image folder>")
        options = {"scale": cfg.scale, "pipeline": pipeline_of(cfg.model), "data_dir": cfg.train_dir,
                   "run_dir": cfg.output_model, "lr": cfg.lr, "batch_size": cfg.batch_size, "seed": cfg.seed,
                   "max_steps": flux2_steps(cfg.train_dir, cfg.epochs, cfg.batch_size), "export_pipeline": True}
        if cfg.resolution:
            options["resolution"] = cfg.resolution
        return train_flux.main(options)
    if not cfg.input or not cfg.prompt:
        raise ValueError("editing needs --input <folder> and --prompt <instruction> (or --finetune to train)")
    return generate.main({"scale": cfg.scale, "pipeline": pipeline_of(cfg.model), "mode": "edit",
                          "input_dir": cfg.input, "out_dir": cfg.output, "prompt": cfg.prompt, "start": cfg.start,
                          "limit": cfg.limit, "seed": cfg.seed})


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
