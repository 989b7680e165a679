"""The lab's original `web_sd.py` command line: the ControlNet (Canny) img2img web UI of web.py, with `--model` (an
SD1.5 pipeline, or a train_sd.py run folder holding one) and `--unet` (UNet weights from one original-format
.safetensors file, e.g. a community checkpoint, loaded over the model's UNet). Every web.py option works too
(`--port`, `--host 0.0.0.0` inside a container, `--controlnet`, ...).

    python projects/sd_flux_lab/web_sd.py                                   # downloads/sd15 on 127.0.0.1:7860
    python projects/sd_flux_lab/web_sd.py --model ./tuned/sd15/ --unet ./models/custom.safetensors
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from projects.sd_flux_lab import web
from projects.sd_flux_lab.original import WEB_SD_ALIASES
from shared.config import ConfigError, cli, option, resolve, save_resolved


@dataclass
class Config(web.Config):
    unet: str = option("", help="original-format UNet .safetensors loaded over the pipeline's UNet")


PRESETS = web.PRESETS


def load_unet(path: str, pipeline: str):
    """The UNet of an original-format checkpoint, with the config of `pipeline`'s UNet (offline)."""
    from diffusers import UNet2DConditionModel

    if not Path(path).is_file():
        raise FileNotFoundError(f"--unet {path}: no such file")
    return UNet2DConditionModel.from_single_file(path, config=str(pipeline), subfolder="unet", local_files_only=True)


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if not cfg.unet:
        return web.main(resolve(web.Config, {k: v for k, v in cfg.items() if k != "unet"}, PRESETS))
    if cfg.pipeline == "random":
        raise ConfigError("--unet needs --model <pipeline folder> (the UNet's config comes from it)")
    if not 0 <= cfg.port < 65536:
        raise ConfigError(f"port={cfg.port}: must be in 0..65535")
    # web.main with the UNet swapped in before the ControlNet pipeline serves
    pipe = web.build_pipeline(cfg)
    pipe.unet = load_unet(cfg.unet, cfg.pipeline).to(pipe.device, pipe.unet.dtype)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, cfg.out_dir, name="web.yaml")
    app = web.build_app(web.Generator(pipe, cfg), cfg)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=cfg.host, server_port=cfg.port or None, share=False, prevent_thread_lock=not cfg.block,
               quiet=True, inbrowser=False)
    print(f"web UI on {app.local_url} (UNet from {cfg.unet}; saving to {cfg.out_dir})")
    return app


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__, aliases=WEB_SD_ALIASES)
