"""Gradio web UI: img2img guided by a ControlNet on the Canny edges of the uploaded image (SD1.5).

Upload an image, write a prompt, set the ControlNet scale, the Canny low/high thresholds and the img2img
strength, press Generate. Every result is saved as `<out_dir>/<YYYYmmdd-HHMMSS>_<index>.png` with the prompt and
all settings in its PNG tEXt chunks (as generate.py writes them; read them back with
`generate.read_png_settings`). The app listens on 127.0.0.1 only unless `host=` says otherwise; it never
creates a public share link and sends no analytics.

    python projects/sd_flux_lab/web.py scale=tiny port=7860                   # random tiny models (UI check)
    python -m projects.sd_flux_lab.web pipeline=downloads/sd15 controlnet=downloads/controlnet_canny
"""
from __future__ import annotations

import datetime
import itertools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from shared.config import ConfigError, cli, resolve, save_resolved  # noqa: E402


@dataclass
class Config:
    scale: str = "paper"
    pipeline: str = "downloads/sd15"  # SD1.5 pipeline folder; "random" = the tiny random one (scale=tiny)
    controlnet: str = "downloads/controlnet_canny"  # ControlNet folder; "random" = built from the UNet
    host: str = "127.0.0.1"
    port: int = 7860  # 0 = a free port
    out_dir: str = "results/paper/sd_flux_lab/web"
    size: int = 512  # the uploaded image is resized to size x size
    steps: int = 30
    guidance: float = 7.0
    strength: float = 0.8
    controlnet_scale: float = 1.0
    low_threshold: int = 100
    high_threshold: int = 200
    seed: int = 0
    device: str = "auto"
    block: bool = True  # keep serving until interrupted (false: return the running app, for tests)


PRESETS = {
    "tiny": {"pipeline": "random", "controlnet": "random", "size": 32, "steps": 2,
             "out_dir": "results/tiny/sd_flux_lab/web"},
    "toy": {"pipeline": "models/toy/sd15", "controlnet": "random", "size": 32, "steps": 20,
            "out_dir": "results/toy/sd_flux_lab/web"},
    "paper": {},
}


def canny(image: Image.Image, low: int, high: int) -> Image.Image:
    """Canny edges of `image` as the 3-channel white-on-black control image ControlNet-canny expects."""
    import cv2

    if not 0 <= low <= high <= 255 * 4:
        raise ValueError(f"canny thresholds: need 0 <= low ({low}) <= high ({high})")
    edges = cv2.Canny(np.asarray(image.convert("L")), int(low), int(high))
    return Image.fromarray(np.repeat(edges[:, :, None], 3, axis=2))


def build_pipeline(cfg):
    """StableDiffusionControlNetImg2ImgPipeline from folders, or random tiny models."""
    from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline

    from projects.sd_flux_lab import models

    if cfg.pipeline == "random":
        base = models.build_pipeline("sd15", "tiny", seed=cfg.seed)
    else:
        if not (Path(cfg.pipeline) / "model_index.json").is_file():
            raise FileNotFoundError(f"pipeline={cfg.pipeline}: no model_index.json (expected an SD1.5 folder)")
        base = models.load_pipeline(cfg.pipeline)
    if cfg.controlnet == "random":
        torch.manual_seed(cfg.seed)
        controlnet = models.build_controlnet(base.unet, base.vae)
    else:
        if not (Path(cfg.controlnet) / "config.json").is_file():
            raise FileNotFoundError(f"controlnet={cfg.controlnet}: no config.json (expected a ControlNet folder)")
        controlnet = ControlNetModel.from_pretrained(cfg.controlnet, local_files_only=True)
    pipe = StableDiffusionControlNetImg2ImgPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        controlnet=controlnet, scheduler=base.scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Generator:
    """The button's callback: one image per click, saved with its settings (thread-safe numbering)."""

    def __init__(self, pipe, cfg):
        self.pipe, self.cfg = pipe, cfg
        self.out = Path(cfg.out_dir)
        self.stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.counter = itertools.count()
        self.lock = threading.Lock()

    def __call__(self, image, prompt, negative, controlnet_scale, low, high, strength, steps, guidance, seed):
        from projects.sd_flux_lab.generate import save_png

        if image is None:
            raise ValueError("upload an image first")
        size = self.cfg.size
        init = image.convert("RGB").resize((size, size), Image.LANCZOS)
        control = canny(init, int(low), int(high))
        with self.lock:  # one generation at a time on this pipeline
            result = self.pipe(prompt=prompt or "", negative_prompt=negative or None, image=init,
                               control_image=control, strength=float(strength), num_inference_steps=int(steps),
                               guidance_scale=float(guidance), controlnet_conditioning_scale=float(controlnet_scale),
                               generator=torch.Generator("cpu").manual_seed(int(seed))).images[0]
            index = next(self.counter)
        params = {"mode": "controlnet_img2img", "model": "sd", "pipeline": self.cfg.pipeline,
                  "controlnet": self.cfg.controlnet, "prompt": prompt or "", "negative_prompt": negative or "",
                  "controlnet_scale": float(controlnet_scale), "low_threshold": int(low),
                  "high_threshold": int(high), "strength": float(strength), "steps": int(steps),
                  "guidance": float(guidance), "seed": int(seed), "width": result.width, "height": result.height,
                  "index": index}
        path = save_png(result, self.out / f"{self.stamp}_{index:04d}.png", prompt or "", negative or "", params)
        return result, control, str(path)


def build_app(generate_fn, cfg):
    import gradio as gr

    with gr.Blocks(title="sd_flux_lab: ControlNet canny img2img", analytics_enabled=False) as app:
        gr.Markdown("### img2img with ControlNet (Canny edges)")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Input image", elem_id="input-image")
                prompt = gr.Textbox(label="Prompt", elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt", elem_id="negative")
                cn_scale = gr.Slider(0.0, 2.0, value=cfg.controlnet_scale, step=0.05, label="ControlNet scale",
                                     elem_id="controlnet-scale")
                low = gr.Slider(0, 255, value=cfg.low_threshold, step=1, label="Canny low threshold",
                                elem_id="low-threshold")
                high = gr.Slider(0, 255, value=cfg.high_threshold, step=1, label="Canny high threshold",
                                 elem_id="high-threshold")
                strength = gr.Slider(0.05, 1.0, value=cfg.strength, step=0.05, label="Strength", elem_id="strength")
                steps = gr.Slider(1, 100, value=cfg.steps, step=1, label="Steps", elem_id="steps")
                guidance = gr.Slider(0.0, 20.0, value=cfg.guidance, step=0.5, label="Guidance", elem_id="guidance")
                seed = gr.Number(value=cfg.seed, precision=0, label="Seed", elem_id="seed")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                output = gr.Image(type="pil", label="Result", elem_id="output-image")
                edges = gr.Image(type="pil", label="Canny edges", elem_id="edges-image")
                saved = gr.Textbox(label="Saved to", elem_id="saved", interactive=False)
        button.click(generate_fn, [image, prompt, negative, cn_scale, low, high, strength, steps, guidance, seed],
                     [output, edges, saved])
    return app


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: host={cfg.host} serves the UI beyond this machine")
    if not 0 <= cfg.port < 65536:
        raise ConfigError(f"port={cfg.port}: must be in 0..65535")
    pipe = build_pipeline(cfg)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, cfg.out_dir, name="web.yaml")
    app = build_app(Generator(pipe, cfg), cfg)
    app.queue(default_concurrency_limit=1)
    # share=False: a share link would download frpc and expose the app publicly
    app.launch(server_name=cfg.host, server_port=cfg.port or None, share=False, prevent_thread_lock=not cfg.block,
               quiet=True, inbrowser=False)
    print(f"web UI on {app.local_url} (saving to {cfg.out_dir})")
    return app


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
