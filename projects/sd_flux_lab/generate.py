"""Generate images with an SD1.5, SDXL or FLUX.2 pipeline folder: txt2img, img2img, FLUX.2 folder editing.

Modes (`mode=auto` picks: `input_dir` -> edit, `init_image` -> img2img, else txt2img):
    txt2img  prompts from `prompt=` or `prompt_file=` (one per line, `#` comments), `num_images` each
    img2img  the same prompts applied to `init_image=` with `strength` (0 keeps the image, 1 ignores it)
    edit     FLUX.2 only: every image in `input_dir` (sorted, from `start`, at most `limit`) is given to the
             pipeline as its reference image (`image=`) with the instruction `prompt`

Defaults that depend on the mode (0 / -1 = use them): guidance 7.0 (txt2img), 5.0 (img2img), 4.0 (edit);
steps 50 (txt2img, img2img), 15 (edit). `quality=true` prepends QUALITY_PREFIX to every prompt and, for SD/SDXL,
uses NEGATIVE_DEFAULT as negative prompt; `quality_prefix=` / `negative_prompt=` set them explicitly. FLUX.2
uses embedded (distilled) guidance and has no negative prompt. `sampler=` takes any name of
`shared.samplers.SAMPLERS` that fits the model (flow samplers for FLUX.2); "" keeps the pipeline's scheduler.

Outputs: `<out_dir>/<YYYYmmdd-HHMMSS>_<index>.png`, the prompt and every setting in the PNG's tEXt chunks
(`prompt`, `negative_prompt`, `parameters` = JSON), plus `generate.yaml` (resolved config).

    python projects/sd_flux_lab/base.py scale=tiny arch=sd15 out_dir=results/tiny/sd_flux_lab/base_sd15
    python projects/sd_flux_lab/generate.py scale=tiny prompt="a red seven"   # the tiny preset reads that base
    python -m projects.sd_flux_lab.generate pipeline=downloads/sdxl init_image=in.png strength=0.6 sampler=dpm++
    python -m projects.sd_flux_lab.generate pipeline=downloads/flux2 input_dir=photos prompt="make it winter"
"""
from __future__ import annotations

import copy
import datetime
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tqdm.auto import tqdm

from shared.config import ConfigError, cli, resolve, save_resolved

QUALITY_PREFIX = "masterpiece, best quality, highly detailed"
NEGATIVE_DEFAULT = "worst quality, low quality, blurry, jpeg artifacts, deformed"
MODES = ("auto", "txt2img", "img2img", "edit")
KINDS = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl", "Flux2Pipeline": "flux2"}
MODE_DEFAULTS = {"txt2img": (7.0, 50), "img2img": (5.0, 50), "edit": (4.0, 15)}  # guidance, steps
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Config:
    scale: str = "paper"
    pipeline: str = "downloads/sd15"  # a diffusers pipeline folder (SD1.5, SDXL or FLUX.2), loaded offline
    mode: str = field(default="auto", metadata={"choices": ("auto", "txt2img", "img2img", "edit")})
    prompt: str = ""
    prompt_file: str = ""  # one prompt per line; used when `prompt` is empty
    negative_prompt: str = ""
    quality: bool = False  # prepend QUALITY_PREFIX; NEGATIVE_DEFAULT as negative prompt unless one is given
    quality_prefix: str = ""  # explicit prefix (overrides QUALITY_PREFIX)
    init_image: str = ""  # img2img source image
    strength: float = 0.8
    input_dir: str = ""  # edit: folder of images to edit (FLUX.2)
    start: int = 0  # edit: index of the first image (sorted names) to edit
    limit: int = 0  # edit: at most this many images; 0 = all
    guidance: float = -1.0  # -1 = the mode's default (7.0 / 5.0 / 4.0)
    steps: int = 0  # 0 = the mode's default (50 / 50 / 15)
    sampler: str = ""  # a shared.samplers name; "" = the pipeline's own scheduler
    seed: int = 0  # image i of a prompt uses seed + i
    num_images: int = field(default=1, metadata={"min": 1})  # per prompt
    height: int = 0  # 0 = the pipeline's default (txt2img) or the input image's size
    width: int = 0
    lora: str = ""  # a LoRA adapter folder (train_flux.py lora=true writes one) to load into the pipeline
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = field(default="fp32", metadata={"choices": ("fp32", "bf16", "fp16")})
    out_dir: str = "results/paper/sd_flux_lab/generate"


PRESETS = {
    # the base pipelines base.py / the workflow put there (nothing makes a models/<scale>/sd15)
    "tiny": {"pipeline": "results/tiny/sd_flux_lab/base_sd15/pipeline", "steps": 2,
             "out_dir": "results/tiny/sd_flux_lab/generate"},
    "toy": {"pipeline": "results/toy/sd_flux_lab/base_sd15/pipeline", "steps": 20,
            "out_dir": "results/toy/sd_flux_lab/generate"},
    "paper": {},
}


# ---- inputs -------------------------------------------------------------------------------------------------
def pipeline_kind(path: str | Path) -> str:
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"pipeline={path}: no model_index.json (expected a diffusers pipeline folder)")
    name = json.loads(index.read_text()).get("_class_name", "")
    if name in KINDS:
        return KINDS[name]
    raise ValueError(f"{index}: _class_name {name!r} is not one of {', '.join(KINDS)}")


def read_prompts(cfg) -> list[str]:
    if cfg.prompt:
        return [cfg.prompt]
    if not cfg.prompt_file:
        return []
    path = Path(cfg.prompt_file)
    if not path.is_file():
        raise FileNotFoundError(f"prompt_file={path}: no such file")
    prompts = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"prompt_file={path}: no prompts in it (one per line; '#' starts a comment)")
    return prompts


def with_prefix(prompt: str, prefix: str) -> str:
    return f"{prefix}, {prompt}" if prefix and prompt else (prefix or prompt)


def load_image(path: str | Path, key: str) -> Image.Image:
    """RGB through the shared decoder (16-bit scaled, palette/alpha composited on white, EXIF orientation)."""
    from shared.data import BadSample, decode_image, read_file

    path = Path(path)
    if not path.is_file() and not path.is_symlink():
        raise FileNotFoundError(f"{key}={path}: no such image file")
    try:
        return decode_image(read_file(path), str(path))
    except BadSample as e:
        raise ValueError(f"{key}={path}: not a readable image ({e.reason}"
                         + (f": {e.detail})" if e.detail else ")")) from None


def edit_inputs(folder: str | Path, start: int, limit: int) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input_dir={folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    if start < 0 or limit < 0:
        raise ValueError(f"start={start}, limit={limit}: must be >= 0")
    files = files[start:start + limit] if limit else files[start:]
    if not files:
        raise ValueError(f"input_dir={folder}: no images (png/jpg/webp/bmp) from start={start}")
    return files


# ---- pipelines and samplers ---------------------------------------------------------------------------------
def pick_device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def load_pipeline(path: str, dtype: str = "fp32", device: str = "auto"):
    """(pipeline, kind, info): info has the FLUX.2 text-encoder layers (see flux.py)."""
    from projects.sd_flux_lab.flux import load_flux2

    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}; expected one of {', '.join(DTYPES)}")
    kind = pipeline_kind(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if kind == "flux2":
        pipe, info = load_flux2(path, dtype=DTYPES[dtype])
    else:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        cls = StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline
        kw = {"safety_checker": None, "requires_safety_checker": False} if kind == "sd" else {}
        pipe = cls.from_pretrained(path, local_files_only=True, dtype=DTYPES[dtype], **kw)
        info = {}
    pipe.to(pick_device(device))
    pipe.set_progress_bar_config(disable=True)  # one bar over all images instead
    return pipe, kind, info


def scheduler_for(pipe, kind: str, sampler: str, mode: str):
    """The pipeline's scheduler replaced by the `sampler` preset, configured from the pipeline's own schedule."""
    from shared.samplers import get_preset, make_scheduler

    if not sampler:
        return pipe.scheduler
    schedule = dict(pipe.scheduler.config)  # whole: make_scheduler drops its `_use_default_values` as from_config does
    if kind == "flux2":
        params = inspect.signature(get_preset(sampler).scheduler.set_timesteps).parameters
        if "mu" not in params:  # Flux2Pipeline shifts its sigmas by a resolution-dependent mu
            raise ConfigError(f"sampler={sampler!r} cannot run FLUX.2 (its scheduler takes no resolution shift mu); "
                              f"use one of {', '.join(flux_samplers())}")
        sched = make_scheduler(sampler, prediction_type="flow", schedule=schedule)
        if mode == "img2img" and ("sigmas" not in params or sched.config.get("use_flow_sigmas")):
            raise ConfigError(f"sampler={sampler!r}: FLUX.2 img2img needs a scheduler that takes explicit sigmas "
                              f"(flow_euler)")
        return sched
    prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
    try:
        return make_scheduler(sampler, prediction_type=prediction, schedule=schedule)
    except ValueError as e:
        raise ConfigError(f"sampler={sampler!r}: {e}") from None


def flux_samplers() -> list[str]:
    from shared.samplers import SAMPLERS

    return [n for n, p in SAMPLERS.items() if "flow" in p.predictions
            and "mu" in inspect.signature(p.scheduler.set_timesteps).parameters]


# ---- one image ----------------------------------------------------------------------------------------------
def _flux_kwargs(info: dict) -> dict:
    return {"text_encoder_out_layers": tuple(info["text_encoder_out_layers"]),
            "max_sequence_length": int(info["max_sequence_length"])}


def _flux_size(pipe, image: Image.Image, height: int, width: int) -> tuple[int, int]:
    m = pipe.vae_scale_factor * 2
    h, w = height or image.height, width or image.width
    return max(m, h // m * m), max(m, w // m * m)


def flux_img2img(pipe, info, prompt, image, *, strength, steps, guidance, generator, height, width):
    """FLUX.2 img2img: the init image's latents noised to the sigma where the last `strength` of the schedule
    starts, then that part of the schedule (the same sigmas and shift txt2img uses at `steps`)."""
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    h, w = _flux_size(pipe, image, height, width)
    x = pipe.image_processor.preprocess(image, height=h, width=w).to(pipe.vae.device, pipe.vae.dtype)
    with torch.no_grad():
        x0 = pipe._encode_vae_image(x, generator=generator)  # patchified, batch-norm normalised
    keep = max(1, min(steps, int(round(steps * strength))))
    sigmas = np.linspace(1.0, 1 / steps, steps)[steps - keep:]
    mu = compute_empirical_mu(image_seq_len=x0.shape[2] * x0.shape[3], num_steps=steps)
    probe = copy.deepcopy(pipe.scheduler)
    probe.set_timesteps(sigmas=sigmas, mu=mu)
    s0 = float(probe.sigmas[0])
    noise = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device, x0.dtype)
    latents = (1 - s0) * x0 + s0 * noise
    return pipe(prompt=prompt, latents=latents, sigmas=list(sigmas), num_inference_steps=steps,
                guidance_scale=guidance, height=h, width=w, generator=generator, **_flux_kwargs(info)).images[0]


def run_one(pipe, kind, info, mode, prompt, negative, image, cfg, guidance, steps, seed):
    generator = torch.Generator("cpu").manual_seed(seed)
    size = {k: v for k, v in (("height", cfg.height), ("width", cfg.width)) if v}
    if kind == "flux2":
        if mode == "img2img":
            return flux_img2img(pipe, info, prompt, image, strength=cfg.strength, steps=steps, guidance=guidance,
                                generator=generator, height=cfg.height, width=cfg.width)
        if mode == "edit":
            h, w = _flux_size(pipe, image, cfg.height, cfg.width)
            size = {"height": h, "width": w}
        elif not size and info.get("sample_size"):  # a random pipeline's own resolution, not FLUX.2's 1024
            size = {"height": info["sample_size"], "width": info["sample_size"]}
        return pipe(prompt=prompt, image=image if mode == "edit" else None, num_inference_steps=steps,
                    guidance_scale=guidance, generator=generator, **size, **_flux_kwargs(info)).images[0]
    neg = negative or None
    if mode == "img2img":
        from diffusers import AutoPipelineForImage2Image

        i2i = AutoPipelineForImage2Image.from_pipe(pipe)
        i2i.set_progress_bar_config(disable=True)
        if size:
            image = image.resize((cfg.width or image.width, cfg.height or image.height), Image.LANCZOS)
        return i2i(prompt=prompt, negative_prompt=neg, image=image, strength=cfg.strength,
                   num_inference_steps=steps, guidance_scale=guidance, generator=generator).images[0]
    return pipe(prompt=prompt, negative_prompt=neg, num_inference_steps=steps, guidance_scale=guidance,
                generator=generator, **size).images[0]


def save_png(image: Image.Image, path: Path, prompt: str, negative: str, params: dict) -> Path:
    meta = PngInfo()
    meta.add_text("prompt", prompt)
    meta.add_text("negative_prompt", negative)
    meta.add_text("parameters", json.dumps(params, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG", pnginfo=meta)
    os.replace(tmp, path)
    return path


def read_png_settings(path: str | Path) -> dict:
    """The prompt, negative prompt and parameters (a dict) written by save_png."""
    with Image.open(path) as im:
        text = dict(im.text)
    return {"prompt": text.get("prompt", ""), "negative_prompt": text.get("negative_prompt", ""),
            "parameters": json.loads(text.get("parameters", "{}"))}


def resolve_mode(cfg) -> str:
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r}; expected one of {', '.join(MODES)}")
    if cfg.mode != "auto":
        return cfg.mode
    return "edit" if cfg.input_dir else "img2img" if cfg.init_image else "txt2img"


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    mode = resolve_mode(cfg)
    if not 0.0 < cfg.strength <= 1.0:
        raise ConfigError(f"strength={cfg.strength}: must be in (0, 1]")
    if cfg.num_images < 1:
        raise ConfigError(f"num_images={cfg.num_images}: must be >= 1")
    prompts = read_prompts(cfg)
    if not prompts:
        raise ConfigError("no prompt: give prompt=... or prompt_file=...")
    if mode == "img2img" and not cfg.init_image:
        raise ConfigError("mode=img2img needs init_image=...")
    if mode == "edit" and not cfg.input_dir:
        raise ConfigError("mode=edit needs input_dir=... (a folder of images)")
    kind = pipeline_kind(cfg.pipeline)
    if mode == "edit" and kind != "flux2":
        raise ConfigError(f"mode=edit needs a FLUX.2 pipeline; {cfg.pipeline} is {kind}")
    if kind == "flux2" and cfg.negative_prompt:
        raise ConfigError("negative_prompt: FLUX.2 uses embedded guidance and takes no negative prompt")
    guidance = cfg.guidance if cfg.guidance >= 0 else MODE_DEFAULTS[mode][0]
    steps = cfg.steps or MODE_DEFAULTS[mode][1]
    prefix = cfg.quality_prefix or (QUALITY_PREFIX if cfg.quality else "")
    negative = "" if kind == "flux2" else cfg.negative_prompt or (NEGATIVE_DEFAULT if cfg.quality else "")

    init = load_image(cfg.init_image, "init_image") if mode == "img2img" else None
    sources = edit_inputs(cfg.input_dir, cfg.start, cfg.limit) if mode == "edit" else []
    pipe, kind, info = load_pipeline(cfg.pipeline, cfg.dtype, cfg.device)
    if cfg.lora:
        if not Path(cfg.lora).is_dir():
            raise FileNotFoundError(f"lora={cfg.lora}: not a folder with a LoRA adapter")
        pipe.load_lora_weights(cfg.lora)
    pipe.scheduler = scheduler_for(pipe, kind, cfg.sampler, mode)

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out, name="generate.yaml")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    # (index, prompt, seed, source image) for every image to make
    jobs = ([(cfg.start + i, prompts[0], cfg.seed, src) for i, src in enumerate(sources)] if mode == "edit" else
            [(p * cfg.num_images + i, prompt, cfg.seed + i, None) for p, prompt in enumerate(prompts)
             for i in range(cfg.num_images)])
    written = []
    from shared.data import BadSample, SkipCounter, decode_image, read_file

    skips = SkipCounter(log_first=0)  # edit mode: unreadable images in input_dir are skipped and counted
    for index, prompt, seed, src in tqdm(jobs, desc=f"generate ({mode}, {kind})"):
        full = with_prefix(prompt, prefix)
        image = init
        if src is not None:
            skips.add_seen()
            try:
                image = decode_image(read_file(src), str(src))
            except BadSample as e:
                skips.record(e.reason, str(src), e.detail)
                continue
        result = run_one(pipe, kind, info, mode, full, negative, image, cfg, guidance, steps, seed)
        params = {"mode": mode, "model": kind, "pipeline": str(cfg.pipeline), "prompt": full,
                  "negative_prompt": negative, "sampler": cfg.sampler or type(pipe.scheduler).__name__,
                  "steps": steps, "guidance": guidance, "seed": seed, "width": result.width,
                  "height": result.height, "index": index, "lora": cfg.lora}
        if mode == "img2img":
            params.update(strength=cfg.strength, init_image=str(cfg.init_image))
        if src is not None:
            params["source"] = str(src)
        written.append(save_png(result, out / f"{stamp}_{index:04d}.png", full, negative, params))
    if skips.bad:
        print(f"input_dir: {skips.summary()}\n{skips.listing()}")
    print(f"{len(written)} image(s) ({mode}, {kind}) -> {out}")
    return written


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
