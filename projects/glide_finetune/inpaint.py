"""Inpainting with GLIDE's inpainting variants (base-inpaint 64 px, upsample-inpaint 256 px): the masks they are
trained with here, and sampling that keeps the known region.

    mask = random_masks("mix", 8, 64, generator=g)                 # (8, 1, 64, 64), 1 = known (kept), 0 = to fill
    kw = {"inpaint_image": x0, "inpaint_mask": mask}               # what train.py passes the model with inpaint=true
    x = inpaint_sample(model, opts, tok, prompts, image, fixed_mask("center", 64, n=len(prompts)), seeds=[0, 1])

The model sees two extra inputs as GLIDE's inpainting models take them (unet.py model_input): the image times the
mask (3 channels) and the mask (1 channel), so the base inpaint network has 3 + 4 = 7 input channels and the
upsample-inpaint one 3 + 4 + 3 = 10 (../shared/reference/glide_checkpoints.json: in_channels 7 and 10).

Training mask distribution (MASKS, `mask_kind` in train.py; GLIDE's paper says only that "random regions" are
erased, so this is our choice): "mix", per sample independently, is
  - "box" with probability 0.6: one axis-aligned rectangle to fill, each side uniform in [1/4, 3/4] of the image
    side (rounded to pixels), its position uniform over the places it fits;
  - "half" with probability 0.3: the left, right, top or bottom half to fill (uniform over the four);
  - "all" with probability 0.1: nothing known (mask all 0), so the model still generates from text alone, as
    GLIDE's inpainting models do when given no image.
The loss is the usual eps MSE over the whole image (the known region too: there the model learns to reproduce
what it is shown). Masks are drawn from the trainer's checkpointed noise generator, so a resumed run draws the
same masks.

Sampling (as glide-text2im's inpaint notebook does): each step's x0 estimate has the known pixels replaced by the
image's (`denoised_fn` of GLIDE's own samplers), so the final step, whose mean is its x0, returns the known
region exactly; only sampler="glide" / "glide_ddim" can do that (the diffusers samplers do not expose x0).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from projects.glide_finetune.diffusion import quantize_8bit


def _box(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    m = torch.ones(n, 1, size, size)
    lo, hi = max(1, round(size / 4)), max(1, round(3 * size / 4))
    for i in range(n):
        h, w = (int(v) for v in torch.randint(lo, hi + 1, (2,), generator=g))
        y, x = int(torch.randint(0, size - h + 1, (1,), generator=g)), int(torch.randint(0, size - w + 1, (1,),
                                                                                         generator=g))
        m[i, :, y:y + h, x:x + w] = 0
    return m


def _half(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    sides = torch.randint(0, 4, (n,), generator=g).tolist()
    return torch.stack([fixed_mask(("left", "right", "top", "bottom")[s], size)[0] for s in sides])


def _all(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    return torch.zeros(n, 1, size, size)


def _mix(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    kinds = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), n, replacement=True, generator=g).tolist()
    parts = {0: _box, 1: _half, 2: _all}
    return torch.cat([parts[k](1, size, g) for k in kinds])


# name -> (n, size, generator) -> (n, 1, size, size) float mask, 1 = known
MASKS: dict[str, Callable[[int, int, torch.Generator], torch.Tensor]] = {
    "mix": _mix, "box": _box, "half": _half, "all": _all}

FIXED_MASKS = ("center", "left", "right", "top", "bottom")


def random_masks(kind: str, n: int, size: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """`n` training masks of `kind` (MASKS), drawn on the CPU from `generator` (so the draw does not depend on the
    device), then moved to `device`."""
    if kind not in MASKS:
        raise ValueError(f"mask_kind={kind!r}; known: {', '.join(MASKS)}")
    g = generator if generator is not None and generator.device.type == "cpu" else None
    if g is None:  # a CUDA generator cannot drive CPU draws: derive a CPU one from it (still seeded, resumable)
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device)) \
            if generator is not None else int(torch.randint(0, 2 ** 62, (1,)))
        g = torch.Generator().manual_seed(seed)
    return MASKS[kind](n, size, g).to(device or "cpu")


def fixed_mask(name: str, size: int, n: int = 1) -> torch.Tensor:
    """A named mask for sampling: "center" fills the middle half-size square; "left"/"right"/"top"/"bottom" fill
    that half. (n, 1, size, size), 1 = known."""
    m = torch.ones(1, 1, size, size)
    a, b = size // 4, size - size // 4
    half = size // 2
    region = {"center": (slice(a, b), slice(a, b)), "left": (slice(None), slice(0, half)),
              "right": (slice(None), slice(half, None)), "top": (slice(0, half), slice(None)),
              "bottom": (slice(half, None), slice(None))}
    if name not in region:
        raise ValueError(f"inpaint_mask={name!r}; named masks: {', '.join(FIXED_MASKS)} (or a mask image file)")
    ys, xs = region[name]
    m[:, :, ys, xs] = 0
    return m.expand(n, -1, -1, -1).clone()


def read_mask(path, size: int) -> torch.Tensor:
    """A mask image (white = known, black = to fill; any mode, thresholded at half grey) as (1, 1, size, size)."""
    from PIL import Image

    from shared.data import decode_image, read_file

    img = decode_image(read_file(path), str(path)).convert("L").resize((size, size), Image.NEAREST)
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(1, 1, size, size)
    return (x >= 128).float()


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    return mask if mask.shape[-1] == size else (F.interpolate(mask, size=(size, size), mode="nearest") > 0.5).float()


@torch.no_grad()
def inpaint_sample(model, options: Mapping[str, Any], tokenizer, prompts: Sequence[str], image: torch.Tensor,
                   mask: torch.Tensor, *, seeds: Sequence[int], low_res: torch.Tensor | None = None,
                   sampler: str = "glide", steps: str | int = "100", guidance_scale: float = 3.0,
                   sampler_eta: float = 0.0, upsample_temp: float = 0.997, device: torch.device | str = "cpu",
                   progress: bool = False, count_nfe=None) -> torch.Tensor:
    """Inpaint `image` (B, 3, H, W) in [-1, 1] where `mask` (B, 1, H, W) is 0, keeping it where it is 1.

    base-inpaint: classifier-free guidance with the empty prompt (both halves of the doubled batch see the image and
    mask: doubled_cond uses a key only in cond for both), as GLIDE's notebook. upsample-inpaint: also `low_res`
    (B, 3, H/4, W/4), quantised to 8 bit, no guidance, x_T scaled by `upsample_temp`, as the upsampler is
    sampled."""
    from projects.glide_finetune.sampling import run_sampler, text_condition

    if not getattr(model, "inpaint", False):
        raise ValueError("inpaint_sample() needs an inpainting model (options inpaint=True: base-inpaint or "
                         "upsample-inpaint)")
    if sampler not in ("glide", "glide_ddim"):
        raise ValueError(f"sampler={sampler!r}: inpainting pastes the known pixels into each step's x0 estimate, "
                         f"which only GLIDE's own samplers ('glide', 'glide_ddim') expose")
    b, _, h, w = image.shape
    if mask.shape != (b, 1, h, w):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected {(b, 1, h, w)} for an image batch "
                         f"{tuple(image.shape)}")
    image, mask = image.to(device).float(), mask.to(device).float()
    cond, uncond = text_condition(model, tokenizer, prompts, device)
    cond.update(inpaint_image=image, inpaint_mask=mask)

    def keep_known(x0: torch.Tensor) -> torch.Tensor:
        return x0 * (1 - mask) + image * mask

    if model.super_res:
        if low_res is None:
            raise ValueError("upsample-inpaint needs low_res (the low-resolution image to upsample)")
        cond["low_res"] = quantize_8bit(low_res.to(device).float())
        out = run_sampler(model, options, (b, 3, h, w), cond, None, seeds=seeds, sampler=sampler, steps=steps,
                          sampler_eta=sampler_eta, noise_scale=upsample_temp, device=device, progress=progress,
                          count_nfe=count_nfe, denoised_fn=keep_known)
    else:
        out = run_sampler(model, options, (b, 3, h, w), cond, uncond, seeds=seeds, sampler=sampler, steps=steps,
                          guidance_scale=guidance_scale, sampler_eta=sampler_eta, device=device, progress=progress,
                          count_nfe=count_nfe, denoised_fn=keep_known)
    return out.clamp(-1, 1)
