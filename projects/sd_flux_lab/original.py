"""The lab's original command lines, translated to this folder's steps (table in README.md, "Original commands").

The original tools were argparse scripts: `train_sd.py` (train, or generate when given prompts and no images),
`flux2.py` (FLUX.2 fine-tune with `--finetune`, else folder editing), `web_sd.py` (the ControlNet web UI) and
diffusers' `convert_diffusers_to_original_stable_diffusion.py`. Their option names are declared here as
`shared.config` aliases (a rename, or an `Alias` that translates the value), so the same command line runs our
step; where the original's defaults differ from ours and decide what the command does (where the model is saved,
the batch size, the timestep range), a command that uses the original's own options gets the original's
defaults, below anything it says itself.

    python projects/sd_flux_lab/train_sd.py --image_size 512 --images images/ --epoch 20       # -> train_sd main
    python projects/sd_flux_lab/train_sd.py --load_model ./tuned/sd15/ --prompt "a girl"        # -> generate main
    python projects/sd_flux_lab/flux2.py --finetune --train_dir images/ --output_model ./tuned/flux2 --epochs 10
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from shared.config import Alias, Refused, cli


def uses(argv: Sequence[str], names) -> bool:
    """Whether `argv` gives any of these options (`--name`, `--name=v`, dashes or underscores)."""
    wanted = {n.replace("-", "_") for n in names}
    return any(a.startswith("--") and a[2:].partition("=")[0].replace("-", "_") in wanted for a in argv)


def pipeline_of(path: str) -> str:
    """A pipeline folder, or the run folder holding one as pipeline/ (what the original's --save_model wrote)."""
    from projects.sd_flux_lab.models import pipeline_folder

    return str(pipeline_folder(path))


def _size(text: str) -> dict[str, int]:
    size = int(text)
    return {"height": size, "width": size}


# ---- train_sd.py ------------------------------------------------------------------------------------------------
# training: original option -> our train_sd.py option. The original fine-tunes runwayml/stable-diffusion-v1-5 (our
# download rule's downloads/sd15) unless --load_model names a saved model, and saves the whole pipeline to
# --save_model (here the run folder; its pipeline/ is what --load_model and generate.py read back).
TRAIN_SD_ALIASES: dict[str, Any] = {
    "image_size": Alias("resolution", help="square training size"),
    "images": Alias("data_dir", help="the image folder; folder names are the prompts"),
    "epoch": Alias("epochs", help="passes over the images (sets max_steps)"),
    "batch": Alias("batch_size"),
    "load_model": Alias("base", help="the pipeline to start from (a saved model or run folder)"),
    "unet": Alias("unet_single_file", help="UNet weights from one .safetensors file (original SD key names)"),
    "save_model": Alias("run_dir", help="where the pipeline is saved (run_dir/pipeline) and resumed from"),
    "output": Refused("images are written by generation only: drop --images to generate, or see samples/ in the "
                      "run folder for the validation grids"),
}
# The original's behaviour where our defaults differ: its argparse defaults, learning rate 1e-4, timesteps drawn
# from [0, 700), no EMA, caption dropout, noise offset or latent cache. (Its per-epoch 0.99 learning-rate decay
# has no counterpart: the rate stays constant.)
TRAIN_SD_DEFAULTS = ["base=downloads/sd15", "run_dir=tuned/sd15", "resolution=1024", "epochs=5", "batch_size=4",
                     "lr=1e-4", "t_max=700", "lr_schedule=constant", "warmup_steps=0", "ema_decay=0",
                     "caption_dropout=0", "noise_offset=0", "cache_latents=false",
                     # the original drew no samples; keep the end-of-run validation grid to one image per prompt
                     "validation_seeds=[0]"]

# generation (train_sd.py with --prompt / --prompt_file / --init_image and no --images): our generate.py
TRAIN_SD_GENERATE_ALIASES: dict[str, Any] = {
    "load_model": Alias("pipeline", convert=pipeline_of, help="the saved model (a pipeline or run folder)"),
    "image_size": Alias("height", convert=_size, help="height = width"),
    "batch": Alias("num_images", help="images per prompt"),
    "output": Alias("out_dir", help="the folder the images go to"),
    "unet": Refused("the original ignores --unet when generating; convert the UNet into a pipeline by training "
                    "with --unet, or use web_sd.py --unet"),
    "epoch": Refused("--epoch trains: give --images to train"),
    "save_model": Refused("--save_model trains: give --images to train"),
}
# the original's generation: its quality prefix and negative prompt (generate.py quality=true: the same strings),
# 4 images per prompt (--batch), txt2img guidance 7 / img2img 5 with strength 0.8 and 50 steps (generate.py's
# mode defaults), images into ./output
TRAIN_SD_GENERATE_DEFAULTS = ["quality=true", "num_images=4", "out_dir=output"]
_GENERATES = ("prompt", "prompt_file", "init_image")
_TRAINS = ("images", "data_dir")


def train_sd_cli(argv: Sequence[str]) -> Any:
    """train_sd.py's command line: our options, or the original's (which train, or generate without --images)."""
    from projects.sd_flux_lab import generate, train_sd

    argv = list(argv)
    if uses(argv, _GENERATES) and not uses(argv, _TRAINS) and not any(a.startswith("data_dir=") for a in argv):
        defaults = [] if "--help" in argv or "-h" in argv else TRAIN_SD_GENERATE_DEFAULTS
        return cli(generate.main, generate.Config, generate.PRESETS, generate.__doc__, [*defaults, *argv],
                   aliases=TRAIN_SD_GENERATE_ALIASES)
    if not uses(argv, TRAIN_SD_ALIASES):
        return cli(train_sd.main, train_sd.Config, train_sd.PRESETS, train_sd.__doc__, argv, aliases=TRAIN_SD_ALIASES)

    def main(cfg):
        replace_previous_run(cfg)
        return train_sd.main(cfg)

    return cli(main, train_sd.Config, train_sd.PRESETS, train_sd.__doc__, [*TRAIN_SD_DEFAULTS, *argv],
               aliases=TRAIN_SD_ALIASES)


# what makes a run a different one (the rest may change on resumption: shared.train.Trainer.RESUMABLE_CHANGES)
_RUN_IDENTITY = ("base", "data_dir", "unet_single_file", "resolution", "epochs", "batch_size", "lr")


def replace_previous_run(cfg) -> Path | None:
    """The original overwrote --save_model with every run; here a run folder resumes. So when the folder holds a
    *different* run (another model, images, size, ...), that run is moved to `<run_dir>.previous` (replacing an
    older one) and this one starts afresh; the same command again resumes. A --load_model inside the moved folder
    is read from its new place. Returns where the previous run went, if anywhere."""
    import shutil

    from omegaconf import OmegaConf

    run_dir = Path(cfg.run_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return None
    old = OmegaConf.load(saved)
    changed = [k for k in _RUN_IDENTITY if str(old.get(k)) != str(cfg.get(k))]
    if not changed:
        return None
    root = run_dir.resolve()
    moved = run_dir.with_name(run_dir.name + ".previous")
    shutil.rmtree(moved, ignore_errors=True)
    run_dir.rename(moved)
    for key in ("base", "unet_single_file", "data_dir"):
        value = Path(str(cfg[key])).resolve() if cfg[key] else None
        if value is not None and (value == root or root in value.parents):
            cfg[key] = str(moved.resolve() / value.relative_to(root))
    print(f"{run_dir} held another run ({', '.join(f'{k}: {old.get(k)} -> {cfg.get(k)}' for k in changed)}): "
          f"moved to {moved}; training afresh (the original overwrote --save_model)")
    return moved


# ---- web_sd.py --------------------------------------------------------------------------------------------------
WEB_SD_ALIASES: dict[str, Any] = {
    "model": Alias("pipeline", convert=pipeline_of, help="the SD1.5 pipeline (or a run folder holding one)"),
}


# ---- flux2.py ---------------------------------------------------------------------------------------------------
def flux2_steps(train_dir: str, epochs: int, batch_size: int) -> int:
    """Optimizer steps of `epochs` passes over the images of `train_dir` (train_flux.py drops the last partial
    batch)."""
    from shared.data import list_images

    n = len(list_images(train_dir).items)
    if n < batch_size:
        raise ValueError(f"--train_dir {train_dir}: {n} images, fewer than --batch_size {batch_size}")
    return epochs * (n // batch_size)
