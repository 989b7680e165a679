"""Python API in glide-finetune's shape: `load_model` and `sample`.

    from projects.glide_finetune.glide_util import load_model, sample
    model, diffusion, options = load_model(model_type="base")              # downloads/glide/base/base.pt
    model, diffusion, options = load_model(path="results/toy/glide/base")        # a run of train.py
    x = sample(model, options, 64, 64, prompt="a painting of a cat", sampler="euler", sampler_eta=0.0, dpm_order=2)
    up, _, up_opts = load_model(model_type="upsample")
    x256 = sample(up, up_opts, 256, 256, prompt="a painting of a cat", image_to_upsample=x)   # fast27, temp 0.997

`load_model` reads .pt (torch.load weights_only=True) or .safetensors, a run folder (its model.safetensors), or a
Trainer checkpoint file; it recognises the variant (base, upsample, base-inpaint, upsample-inpaint) from the first
conv's input channels, the options from glide.json beside a file of ours or, for a bare released file, from the
released options checked against every key's shape; and whether it is a released file, a fine-tuned export or
EMA weights. It prints what it found (`found.message`). Returns (model, diffusion, options); the model carries
`.tokenizer` (GPT-2's from downloads/glide/gpt2_tokenizer, or the run's own) and `.found`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from projects.glide_finetune.diffusion import GaussianDiffusion, create_diffusion
from projects.glide_finetune.unet import (VARIANTS, GlideUNet, create_model, model_and_diffusion_defaults,
                                          model_and_diffusion_defaults_upsampler)

DOWNLOADS = Path("downloads/glide")
# model_type -> (download item = folder under downloads/glide, file), as download.py fetches them
RELEASED_FILES = {"base": ("base", "base.pt"), "upsample": ("upsample", "upsample.pt"),
                  "base-inpaint": ("base_inpaint", "base_inpaint.pt"),
                  "upsample-inpaint": ("upsample_inpaint", "upsample_inpaint.pt")}
GPT2_TOKENIZER = DOWNLOADS / "gpt2_tokenizer"
INFO_FILE = "glide.json"  # beside our exports: options, tokenizer folder, variant, EMA flag, step
WEIGHTS_FILE = "model.safetensors"
_PREFIXES = ("module.", "_orig_mod.", "model.")


def released_options(variant: str) -> dict[str, Any]:
    base = model_and_diffusion_defaults_upsampler() if VARIANTS[variant].super_res else model_and_diffusion_defaults()
    return {**base, "inpaint": VARIANTS[variant].inpaint}


def variant_from_in_channels(n: int, key: str = "input_blocks.0.0.weight") -> str:
    for name, v in VARIANTS.items():
        if v.in_channels() == n:
            return name
    raise ValueError(f"{key} has {n} input channels; GLIDE variants have "
                     + ", ".join(f"{v.in_channels()} ({k})" for k, v in VARIANTS.items()))


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict with wrapper prefixes removed, safetensors metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    meta: dict[str, str] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: not a weights-only torch checkpoint ({type(e).__name__}: {e})") from None
        for key in ("state_dict", "model", "ema"):  # wrapped state dicts
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
        if not isinstance(sd, dict):
            raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    if "input_blocks.0.0.weight" not in sd:
        raise ValueError(f"{path}: not a GLIDE UNet state dict (no input_blocks.0.0.weight; first keys: "
                         f"{', '.join(list(sd)[:5])})")
    return sd, meta


def _find_info(path: Path) -> dict | None:
    for folder in [path if path.is_dir() else path.parent, *list(path.parents)[:3]]:
        if (folder / INFO_FILE).is_file():
            return json.loads((folder / INFO_FILE).read_text())
    return None


@dataclass
class Found:
    path: str
    variant: str
    kind: str  # released | fine-tuned | ema | checkpoint
    options: dict
    tokenizer: str
    message: str


def identify(path: str | Path, sd: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> Found:
    """What a checkpoint is, from its keys, shapes, metadata and glide.json."""
    path = Path(path)
    variant = variant_from_in_channels(sd["input_blocks.0.0.weight"].shape[1])
    info = _find_info(path)
    if info is not None:
        options = dict(info["options"])
        # ema_<rate>_<epoch>x<index>.pt: glide-finetune's EMA file name (train.py export_original_names)
        if meta.get("ema") == "true" or path.name.startswith(("ema.", "ema_")):
            kind = "ema"
        elif path.name.startswith("model.") and path.name != WEIGHTS_FILE:
            kind = "checkpoint"  # a Trainer checkpoint's raw (non-EMA) weights
        else:
            kind = "fine-tuned"
        tokenizer = str(info.get("tokenizer") or GPT2_TOKENIZER)
        step = meta.get("step") or info.get("step")
        detail = f"{kind} weights of a train.py run" + (f" (step {step})" if step else "")
        if info.get("init"):
            detail += f", initialised from {info['init']}"
    else:
        options = released_options(variant)
        expected = create_model(options, "meta").state_dict()
        missing = sorted(set(expected) - set(sd))
        extra = sorted(set(sd) - set(expected))
        wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
        if missing or extra or wrong:
            raise ValueError(
                f"{path}: a GLIDE {variant} state dict whose keys/shapes differ from the released {variant} "
                f"({len(missing)} missing, {len(extra)} unexpected, {len(wrong)} with other shapes; first: "
                f"{(missing + extra + wrong)[0]}); put the options it was built with in {INFO_FILE} beside it")
        kind, tokenizer = ("ema" if "ema" in path.name.lower() else "released"), str(GPT2_TOKENIZER)
        detail = ("released GLIDE (filtered) weights" if kind == "released" else "EMA weights") + \
                 ", options = the released ones"
    message = f"{path}: GLIDE {variant} ({VARIANTS[variant].description}); {detail}; {len(sd)} tensors"
    return Found(str(path), variant, kind, options, tokenizer, message)


def resolve_path(model_type: str, path: str | Path | None) -> Path:
    if model_type not in RELEASED_FILES:
        raise ValueError(f"model_type={model_type!r}; expected one of {', '.join(RELEASED_FILES)}")
    if not path:
        item, name = RELEASED_FILES[model_type]
        p = DOWNLOADS / item / name
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not downloaded; run `snakemake --cores 1 {DOWNLOADS / item}/download.json`"
                                    f" or `python projects/glide_finetune/download.py item={item}`")
        return p
    p = Path(path)
    if p.is_dir():
        if not (p / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{p}: a folder without {WEIGHTS_FILE} (a finished train.py run has one)")
        return p / WEIGHTS_FILE
    return p


def load_model(glide_path: str | Path = "", use_fp16: bool = False, freeze_transformer: bool = False,
               freeze_diffusion: bool = False, activation_checkpointing: bool = False, model_type: str = "base",
               *, path: str | Path | None = None, device: str | torch.device = "cpu", tokenizer: Any = None,
               verbose: bool = True) -> tuple[GlideUNet, GaussianDiffusion, dict]:
    """(model, diffusion, options) with glide-finetune's arguments; `path` is the same as `glide_path`.

    A `model_type` that disagrees with what the file is raises (the message says what was found)."""
    from projects.glide_finetune.tokenizer import load_tokenizer

    file = resolve_path(model_type, path or glide_path)
    sd, meta = read_state_dict(file)
    found = identify(file, sd, meta)
    if (path or glide_path) and model_type != "base" and found.variant != model_type:
        raise ValueError(f"model_type={model_type!r} but {found.message}")
    if verbose:
        print(found.message)
    options = dict(found.options)
    model = create_model(options, "meta")
    model.load_state_dict(sd, strict=True, assign=True)
    model.to(device)
    if use_fp16:
        model.convert_to_fp16()
    if activation_checkpointing:
        model.set_grad_checkpointing(True)
    for p in model.text_parameters():
        p.requires_grad_(not freeze_transformer)
    for p in model.unet_parameters():
        p.requires_grad_(not freeze_diffusion)
    model.eval()
    if tokenizer is None and Path(found.tokenizer).is_dir():
        tokenizer = load_tokenizer(found.tokenizer)
    model.tokenizer = tokenizer
    model.found = found
    return model, create_diffusion(options), options


def _as_image_tensor(image: Any, size: int | None, device) -> torch.Tensor:
    """A path / PIL image / tensor in [-1, 1] -> (B, 3, h, w) float on device."""
    if isinstance(image, torch.Tensor):
        x = image if image.dim() == 4 else image[None]
        return x.float().to(device)
    from PIL import Image

    from shared.data import decode_image, read_file
    from shared.data.decode import to_rgb

    # a named file goes through the shared decoder (16-bit, palette, alpha, EXIF): a bad one is a BadSample
    # naming the file and the reason
    img = decode_image(read_file(image), str(image)) if isinstance(image, (str, Path)) else to_rgb(image)
    if size:
        img = img.resize((size, size), Image.BICUBIC)
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.size[1], img.size[0], 3)
    return (x.permute(2, 0, 1).float() / 127.5 - 1)[None].to(device)


@torch.no_grad()
def sample(model: GlideUNet, options: Mapping[str, Any], side_x: int, side_y: int, prompt: str = "",
           batch_size: int = 1, guidance_scale: float = 4.0, device: str | torch.device | None = None,
           prediction_respacing: str = "100", upsample_enabled: bool = False, image_to_upsample: Any = None,
           upsample_temp: float = 0.997, sampler: str = "plms", sampler_eta: float = 0.0, dpm_order: int = 2,
           seed: int = 0, tokenizer: Any = None, inpaint_image: Any = None,
           inpaint_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch_size, 3, side_y, side_x) samples in [-1, 1]. A super-resolution model upsamples `image_to_upsample`
    (path, PIL image or tensor in [-1, 1]); its respacing defaults to fast27 and its sampler to GLIDE's DDIM,
    as GLIDE samples its upsampler. Inpainting models take `inpaint_image` (path, PIL or tensor) and
    `inpaint_mask` ((B|1, 1, H, W), 1 = keep) and sample with GLIDE's DDPM. Sample i uses seed `seed + i`."""
    from projects.glide_finetune.sampling import generate, upsample

    tok = tokenizer or getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError(f"no tokenizer: put GPT-2's vocab.json + merges.txt in {GPT2_TOKENIZER} (download step "
                         f"item=gpt2_tokenizer) or pass tokenizer=")
    device = device or next(model.parameters()).device
    seeds = [seed + i for i in range(batch_size)]
    prompts = [prompt] * batch_size
    if model.super_res or upsample_enabled:
        if not model.super_res:
            raise ValueError("upsample_enabled=True needs the upsampler (load_model(model_type='upsample'))")
        if image_to_upsample is None:
            raise ValueError("the upsampler needs image_to_upsample (the low-resolution image)")
        low = _as_image_tensor(image_to_upsample, int(options["image_size"]) // 4 if not isinstance(
            image_to_upsample, torch.Tensor) else None, device)
        if low.shape[0] == 1 and batch_size > 1:
            low = low.expand(batch_size, -1, -1, -1)
        return upsample(model, options, tok, prompts, low, seeds=seeds,
                        sampler="glide_ddim" if sampler == "plms" and prediction_respacing == "100" else sampler,
                        steps="fast27" if prediction_respacing == "100" else prediction_respacing,
                        upsample_temp=upsample_temp, sampler_eta=sampler_eta, dpm_order=dpm_order, device=device)
    inpaint = {}
    if model.inpaint and (inpaint_image is None) != (inpaint_mask is None):
        raise ValueError("inpainting needs both inpaint_image and inpaint_mask (or neither)")
    if model.inpaint and inpaint_image is not None:
        image = _as_image_tensor(inpaint_image, side_x if not isinstance(inpaint_image, torch.Tensor) else None, device)
        inpaint = {"inpaint_image": image.expand(batch_size, -1, -1, -1),
                   "inpaint_mask": inpaint_mask.to(device).float().expand(batch_size, -1, -1, -1)}
        if sampler == "plms":  # the known pixels are pasted into each step's x0 estimate: GLIDE's own sampler
            sampler = "glide"
    return generate(model, options, tok, prompts, seeds=seeds, sampler=sampler, steps=prediction_respacing,
                    guidance_scale=guidance_scale, sampler_eta=sampler_eta, dpm_order=dpm_order, side_x=side_x,
                    side_y=side_y, device=device, **inpaint)
