"""DMD2's `python -m demo.text_to_image_sdxl --checkpoint_path CKPT --precision float16 [--num_step 1
--conditioning_timestep 399]`: a Gradio page (prompt, seed, number of images -> a gallery) serving a 4-step or
1-step SDXL generator.

`--checkpoint_path`: DMD2's released UNet (.bin / .safetensors, loaded strictly into the `--model_id` pipeline's
UNet config) or a train.py run folder. `--model_id`: a local SDXL pipeline folder, or the hub id, read from the
folder our download rules use (stabilityai/stable-diffusion-xl-base-1.0 -> downloads/sdxl_base). `--num_step 4`:
timesteps 999, 749, 499, 249; `--num_step 1`: `--conditioning_timestep` alone. `--precision`: autocast dtype of the
generator (the VAE and text encoders stay float32). Listens on 127.0.0.1:7860 (`--host`, `--port`); never makes a
public share link (the original's share=True).

    python -m projects.dmd2.text_to_image_sdxl --checkpoint_path downloads/dmd2/dmd2_sdxl_4step/unet.bin \
        --precision float16
"""
from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

from projects.dmd2.original import PRECISIONS, autocast, check_same, model_folder  # noqa: E402
from shared.config import ConfigError, Refused, cli, option, resolve  # noqa: E402


@dataclass
class Config:
    scale: str = "paper"
    checkpoint_path: str = option("", help="DMD2 SDXL UNet file, or a train.py run folder")
    model_id: str = option("stabilityai/stable-diffusion-xl-base-1.0", help="SDXL pipeline folder (or its hub id)")
    precision: str = option("float32", choices=tuple(PRECISIONS))
    num_step: int = option(4, choices=(1, 4))
    conditioning_timestep: int = option(999, min=0)
    image_resolution: int = option(0, min=0, help="checked against the model's (0 = the model's)")
    latent_resolution: int = option(0, min=0, help="checked against the model's (0 = the model's)")
    num_train_timesteps: int = option(1000, min=1, help="checked against the scheduler's")
    host: str = "127.0.0.1"
    port: int = option(7860, min=0, max=65535)
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    block: bool = option(True, help="serve until interrupted (false: return the running app)")


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}
ALIASES = {"revision": Refused("models are read from local folders; put the revision you want in --model_id's folder")}


class Model:
    """The original's ModelWrapper: the generator and its timesteps; `inference` is the button."""

    def __init__(self, cfg):
        from projects.dmd2.generation import load_generator

        teacher = model_folder(cfg.model_id)
        self.net, _, self.backbone = load_generator(cfg.checkpoint_path, teacher, device=cfg.device)
        if self.backbone.name != "sd":
            raise ConfigError(f"--checkpoint_path {cfg.checkpoint_path}: not an SD/SDXL generator")
        check_same("image_resolution", cfg.image_resolution, self.backbone.resolution, "model's image resolution")
        check_same("latent_resolution", cfg.latent_resolution, self.backbone.latent_size, "model's latent resolution")
        check_same("num_train_timesteps", cfg.num_train_timesteps, self.backbone.num_train_timesteps,
                   "scheduler's number of timesteps")
        # demo/text_to_image_sdxl.py: 1 step at conditioning_timestep, 4 steps at 999, 749, 499, 249
        self.timesteps = [cfg.conditioning_timestep] if cfg.num_step == 1 else [999, 749, 499, 249]
        self.cfg = cfg

    def inference(self, prompt: str, seed: int, num_images: int):
        from projects.dmd2.generation import few_step_generate, to_pil

        seed = int(seed) if int(seed) >= 0 else int(torch.randint(0, 1_000_000, ()).item())
        with torch.no_grad(), autocast(self.cfg.precision, self.cfg.device):
            images = few_step_generate(self.backbone, self.net, [prompt] * int(num_images), self.timesteps,
                                       seeds=[seed + i for i in range(int(num_images))])
        return to_pil(images), f"{int(num_images)} images, timesteps {self.timesteps}, seed {seed}"


def build_app(model: Model):
    import gradio as gr

    with gr.Blocks(title="DMD2 text-to-image", analytics_enabled=False) as app:
        gr.Markdown("# DMD2 text-to-image")
        with gr.Row():
            with gr.Column():
                prompt = gr.Text(label="Prompt", value="a photo of a cat")
                run = gr.Button("Run")
                seed = gr.Slider(-1, 1_000_000, value=0, step=1, label="Seed (-1: a new one each time)")
                num_images = gr.Slider(1, 16, value=4, step=1, label="Number of generated images")
            with gr.Column():
                gallery = gr.Gallery(label="Generated images", show_label=False)
                status = gr.Text(label="Job status")
        run.click(model.inference, [prompt, seed, num_images], [gallery, status], concurrency_limit=1)
    return app


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if not cfg.checkpoint_path:
        raise ConfigError("--checkpoint_path is required")
    app = build_app(Model(cfg))
    app.queue(api_open=False)
    app.launch(server_name=cfg.host, server_port=cfg.port or None, share=False, prevent_thread_lock=not cfg.block,
               quiet=True, inbrowser=False)
    print(f"DMD2 demo on {app.local_url}")
    return app


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__, aliases=ALIASES)
