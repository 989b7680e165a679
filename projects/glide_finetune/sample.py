"""Sample a GLIDE base model, optionally chained with the upsampler in the same call, into an image folder.

Sample i uses seed `seed + i` for the base and `seed + i + 10**6` for the upsampler, so any shard can be re-run
alone and gives the same images. Shards: `num_shards`/`shard_index` (default: SLURM array task, or torchrun's
RANK/WORLD_SIZE); sample i belongs to shard i % num_shards. Existing images are kept (a re-run fills the gaps).
Writes <i:06d>.png (the final resolution) + <i:06d>.txt (the prompt), <out_dir>_base/<i:06d>.png with
save_base=true when upsampling, and,
once all shards are complete, samples.json (what was sampled and how, read by evaluate.py).
With `low_res_images=<folder>` the upsampler (or `upsampler=bicubic:4`) upsamples those real images, downsampled
to its input size, instead of base samples; the outputs keep the images' names, so evaluate.py pairs them with
the originals for PSNR.
With `inpaint_images=<folder>` an inpainting base (base=... a base-inpaint model) fills the `inpaint_mask` region of
each image (resized to the base's size) and keeps the rest exactly (inpaint.py: the known pixels replace each
step's x0 estimate, with GLIDE's own samplers); an upsample-inpaint `upsampler=` then inpaints the image at its size
given the base's result as its low-res input, a plain upsampler just upsamples. Outputs keep the images' names.

    python projects/glide_finetune/sample.py base=results/toy/glide/base prompts=data/toy/glide/eval_prompts.txt \
        out_dir=results/toy/glide/samples/base sampler=plms steps=50 guidance_scale=3
    python -m projects.glide_finetune.sample base=released upsampler=released prompt="an oil painting of a corgi" \
        num_images=8 scale=paper                                       # 64 px base, fast27 upsampler -> 256 px
    python -m projects.glide_finetune.sample base=runs/inpaint inpaint_images=photos inpaint_mask=center \
        sampler=glide steps=100 out_dir=results/inpainted              # (or base=released: base_inpaint.pt)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.config import cli, option, resolve, save_resolved
from shared.io import atomic_path, read_json, write_json
from shared.launch import sample_shard, step_device
from projects.glide_finetune.glide_util import load_model
from projects.glide_finetune.sampling import SAMPLERS, generate, upsample

INPAINT_SAMPLERS = ("glide", "glide_ddim")  # the samplers whose x0 estimate inpaint.py can edit

UPSAMPLER_SEED_OFFSET = 10 ** 6


@dataclass
class Config:
    scale: str = "toy"
    base: str = option("results/toy/glide/base", help="run folder, weights file, or 'released'")
    upsampler: str = option("", help="'' = base only; run folder, weights file, 'released', or 'bicubic:<factor>' "
                                     "(plain bicubic upscaling, the baseline an upsampler must beat)")
    tokenizer: str = option("", help="'' = the one the checkpoint names (glide.json) or GPT-2's download")
    prompts: str = option("", help="text file, one prompt per line")
    prompt: str = option("", help="a single prompt (when prompts is empty)")
    num_images: int = option(0, help="0 = one per prompt; more cycles through the prompts")
    out_dir: str = "results/toy/glide/samples/base"
    sampler: str = option("plms", choices=tuple(SAMPLERS))
    steps: str = option("100", help="respacing: '100', 'fast27', 'ddim50', '27' (a count for diffusers samplers)")
    guidance_scale: float = 3.0
    sampler_eta: float = option(0.0, help="ddim's eta")
    dpm_order: int = option(2, choices=(1, 2))
    upsample_sampler: str = option("glide_ddim", choices=tuple(SAMPLERS))
    upsample_steps: str = "fast27"
    upsample_temp: float = option(0.997, help="the upsampler's starting noise is N(0, temp^2)")
    low_res_images: str = option("", help="folder of real images (+ .txt captions): upsample them instead of base "
                                          "samples (held-out PSNR); outputs keep the images' names")
    save_base: bool = option(False, help="also keep the upsampler's inputs, in <out_dir>_base/")
    inpaint_images: str = option("", help="folder of images (+ .txt captions) to inpaint with an inpainting base "
                                          "(base-inpaint); outputs keep the images' names")
    inpaint_mask: str = option("center", help="region to fill: center | left | right | top | bottom, or a mask image "
                                              "(white = keep); an image's own <stem>.mask.png wins")
    low_res_size: int = option(8, help="with low_res_images and upsampler=bicubic:<k>: the low-res size")
    seed: int = 0
    batch_size: int = 16
    num_shards: int = option(0, help="0 = from SLURM_ARRAY_TASK_COUNT / WORLD_SIZE, else 1")
    shard_index: int = option(-1, help="-1 = from SLURM_ARRAY_TASK_ID / RANK, else 0")
    device: str = option("auto", help="auto = cuda:<LOCAL_RANK> when available")
    use_fp16: bool = False
    threads: int = 0
    clip_model: str = option("", help="'' = no CLIP guidance; a train_clip.py run folder or 'released'")
    clip_guidance_scale: float = option(3.0, help="scale of the noised CLIP's gradient (GLIDE's notebook: 3)")
    clip_cutouts: int = option(1, min=1, help="views at t = 0 (1 at the noisiest step); 1 = whole image only")
    clip_cut_min: float = option(0.5, help="smallest cutout side at t = 0, as a fraction of the image")


PRESETS = {"tiny": {"batch_size": 8, "num_images": 32, "steps": "4", "upsample_steps": "4", "threads": 1},
           "toy": {"steps": "50"},
           "paper": {"batch_size": 16, "guidance_scale": 3.0, "steps": "100", "use_fp16": True}}


def read_prompts(cfg) -> list[str]:
    if cfg.prompts:
        path = Path(cfg.prompts)
        if not path.is_file():
            raise FileNotFoundError(f"prompts={path}: no such file (one prompt per line)")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"prompts={path}: no prompts in it")
        return prompts
    if cfg.prompt:
        return [cfg.prompt]
    raise ValueError("give prompts=<file> or prompt=<text>")



def _load(spec: str, model_type: str, cfg, device):
    from projects.glide_finetune.tokenizer import load_tokenizer

    tok = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
    return load_model(model_type=model_type, path=None if spec == "released" else spec, device=device,
                      use_fp16=cfg.use_fp16 and device.type == "cuda", tokenizer=tok)


def _save_png(x: torch.Tensor, path: Path) -> None:
    from PIL import Image

    arr = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def held_out(cfg, skips=None, key: str = "low_res_images") -> list[tuple[str, Path, str]]:
    """(name, image file, caption) of the real images to upsample (low_res_images=<folder> with <stem>.txt), or
    to inpaint (key="inpaint_images"; <stem>.mask.png files are masks, not images).
    Images the shared decoder cannot read (truncated, empty, not an image, dangling link) are left out and
    recorded in `skips` (a SkipCounter) under their reason."""
    from shared.data import BadSample, SkipCounter, decode_image, read_file

    skips = skips if skips is not None else SkipCounter(log_first=0)
    folder = Path(getattr(cfg, key))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
                   and not p.name.endswith(".mask.png")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{key}={folder}: no images there")
    out = []
    for p in files:
        if cfg.num_images and len(out) == cfg.num_images:
            break
        skips.add_seen()
        try:
            decode_image(read_file(p), str(p))  # a full decode: a cut file fails here, not mid-batch
        except BadSample as e:
            skips.record(e.reason, p.name, e.detail)
            continue
        cap = p.with_suffix(".txt")
        out.append((p.stem, p, cap.read_text().strip() if cap.is_file() else ""))
    if not out:
        raise ValueError(f"{key}={folder}: no readable images ({skips.summary()})")
    return out


def _low_res(path: Path, size: int) -> torch.Tensor:
    """A real image at the upsampler's input size (bicubic, as train.py conditions), in [-1, 1]."""
    from PIL import Image

    from shared.data import decode_image, read_file

    img = decode_image(read_file(path), str(path)).resize((size, size), Image.BICUBIC)
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)
    return x.float() / 127.5 - 1


def _inpaint_mask(cfg, image_file: Path, size: int) -> torch.Tensor:
    """(1, 1, size, size) mask of one image, 1 = keep: its <stem>.mask.png, else inpaint_mask (a name or a file)."""
    from projects.glide_finetune.inpaint import FIXED_MASKS, fixed_mask, read_mask

    own = image_file.with_name(image_file.stem + ".mask.png")
    if own.is_file():
        return read_mask(own, size)
    if cfg.inpaint_mask in FIXED_MASKS:
        return fixed_mask(cfg.inpaint_mask, size)
    if not Path(cfg.inpaint_mask).is_file():
        raise FileNotFoundError(f"inpaint_mask={cfg.inpaint_mask}: neither a named mask ({', '.join(FIXED_MASKS)}) "
                                f"nor a mask image file")
    return read_mask(cfg.inpaint_mask, size)


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    shard, num_shards = sample_shard(cfg.num_shards, cfg.shard_index)
    device = step_device(cfg.device)
    out = Path(cfg.out_dir)
    up = up_opts = base = base_opts = None
    bicubic = 0
    if cfg.upsampler.startswith("bicubic"):
        try:
            bicubic = int(cfg.upsampler.partition(":")[2])
        except ValueError:
            raise ValueError(f"upsampler={cfg.upsampler!r}: expected bicubic:<factor>, e.g. bicubic:4") from None
    elif cfg.upsampler:
        # inpainting: a released upsampler is upsample_inpaint.pt; a file may be either variant (load_model checks
        # nothing for model_type "base"; super_res is checked here)
        kind = "upsample" if not cfg.inpaint_images else ("upsample-inpaint" if cfg.upsampler == "released"
                                                          else "base")
        up, _, up_opts = _load(cfg.upsampler, kind, cfg, device)
        if not up.super_res:
            raise ValueError(f"upsampler={cfg.upsampler} is not a super-resolution model ({up.found.message})")
    inpaint_items = None
    if cfg.inpaint_images and cfg.low_res_images:
        raise ValueError("give inpaint_images= or low_res_images=, not both")
    if cfg.inpaint_images:  # fill a region of real images with an inpainting base (+ upsampler)
        from shared.data import SkipCounter

        skips = SkipCounter(log_first=0)
        items, inpaint_items = None, held_out(cfg, skips, key="inpaint_images")
        if skips.bad:
            print(f"inpaint_images: {skips.summary()}\n{skips.listing()}")
        names = [name for name, _, _ in inpaint_items]
        prompts = [cfg.prompt or c for _, _, c in inpaint_items]
        base, _, base_opts = _load(cfg.base, "base-inpaint", cfg, device)
        if not base.inpaint or base.super_res:
            raise ValueError(f"base={cfg.base} is not a base inpainting model ({base.found.message})")
        if cfg.sampler not in INPAINT_SAMPLERS:
            print(f"inpainting: sampler={cfg.sampler} cannot keep the known pixels; using GLIDE's own ('glide')")
            cfg.sampler = "glide"
    elif cfg.low_res_images:  # upsample real images (held-out PSNR), no base model
        if not (up or bicubic):
            raise ValueError("low_res_images= needs upsampler=<model> or upsampler=bicubic:<factor>")
        from shared.data import SkipCounter

        skips = SkipCounter(log_first=0)
        items = held_out(cfg, skips)
        if skips.bad:
            print(f"low_res_images: {skips.summary()}\n{skips.listing()}")
        low_size = int(up_opts["image_size"]) // 4 if up_opts else cfg.low_res_size
        names, prompts = [name for name, _, _ in items], [c for _, _, c in items]
    else:
        skips = None
        items, prompts = None, read_prompts(cfg)
        n = cfg.num_images or len(prompts)
        names = [f"{i:06d}" for i in range(n)]
        prompts = [prompts[i % len(prompts)] for i in range(n)]
        base, _, base_opts = _load(cfg.base, "base", cfg, device)
        if base.super_res:
            raise ValueError(f"base={cfg.base} is an upsampler ({base.found.message}); give it as upsampler=")
    n = len(names)
    todo = [i for i in range(shard, n, num_shards) if not (out / f"{names[i]}.png").is_file()]
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out, name=f"sample_config.shard{shard}.yaml")
    clip = None
    if cfg.clip_model and cfg.clip_guidance_scale != 0:
        if items is not None:
            raise ValueError("clip_model= guides the base model; low_res_images= samples no base")
        from projects.glide_finetune.noised_clip import load_clip

        clip = load_clip(cfg.clip_model, device=device)
    t0, nfe = time.perf_counter(), [0]
    for start in range(0, len(todo), cfg.batch_size):
        idx = todo[start:start + cfg.batch_size]
        ps = [prompts[i] for i in idx]
        if inpaint_items is not None:
            from projects.glide_finetune.inpaint import inpaint_sample

            size = int(base_opts["image_size"])
            image = torch.stack([_low_res(inpaint_items[i][1], size) for i in idx]).to(device)
            mask = torch.cat([_inpaint_mask(cfg, inpaint_items[i][1], size) for i in idx]).to(device)
            x = inpaint_sample(base, base_opts, base.tokenizer, ps, image, mask, seeds=[cfg.seed + i for i in idx],
                               sampler=cfg.sampler, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                               sampler_eta=cfg.sampler_eta, device=device,
                               count_nfe=lambda b: nfe.__setitem__(0, nfe[0] + 1))
        elif items is not None:
            x = torch.stack([_low_res(items[i][1], low_size) for i in idx]).to(device)
        else:
            guide = None
            if clip is not None:
                from projects.glide_finetune.clip_guidance import ClipGuidance

                guide = ClipGuidance(clip, ps, scale=cfg.clip_guidance_scale, max_cutouts=cfg.clip_cutouts,
                                     cut_min=cfg.clip_cut_min, seeds=[cfg.seed + i for i in idx])
            x = generate(base, base_opts, base.tokenizer, ps, seeds=[cfg.seed + i for i in idx], sampler=cfg.sampler,
                         steps=cfg.steps, guidance_scale=cfg.guidance_scale, sampler_eta=cfg.sampler_eta,
                         dpm_order=cfg.dpm_order, device=device, count_nfe=lambda b: nfe.__setitem__(0, nfe[0] + 1),
                         clip_guidance=guide)
        if bicubic:
            x = torch.nn.functional.interpolate(x, scale_factor=bicubic, mode="bicubic", align_corners=False)
            x = x.clamp(-1, 1)
        if up is not None:
            if cfg.save_base:  # beside out_dir, not inside: evaluation reads out_dir recursively
                for j, i in enumerate(idx):
                    _save_png(x[j], out.with_name(out.name + "_base") / f"{names[i]}.png")
            up_seeds = [cfg.seed + i + UPSAMPLER_SEED_OFFSET for i in idx]
            if inpaint_items is not None and up.inpaint:  # upsample-inpaint: the image at its size, x as low-res
                from projects.glide_finetune.inpaint import inpaint_sample

                size = int(up_opts["image_size"])
                hi = torch.stack([_low_res(inpaint_items[i][1], size) for i in idx]).to(device)
                mask = torch.cat([_inpaint_mask(cfg, inpaint_items[i][1], size) for i in idx]).to(device)
                x = inpaint_sample(up, up_opts, up.tokenizer, ps, hi, mask, seeds=up_seeds, low_res=x,
                                   sampler=cfg.upsample_sampler if cfg.upsample_sampler in INPAINT_SAMPLERS
                                   else "glide_ddim", steps=cfg.upsample_steps, sampler_eta=cfg.sampler_eta,
                                   upsample_temp=cfg.upsample_temp, device=device)
            else:
                x = upsample(up, up_opts, up.tokenizer, ps, x, seeds=up_seeds, sampler=cfg.upsample_sampler,
                             steps=cfg.upsample_steps, upsample_temp=cfg.upsample_temp, sampler_eta=cfg.sampler_eta,
                             dpm_order=cfg.dpm_order, device=device)
        for j, i in enumerate(idx):
            (out / f"{names[i]}.txt").write_text(ps[j] + "\n")
            _save_png(x[j], out / f"{names[i]}.png")
    seconds = time.perf_counter() - t0
    done = all((out / f"{name}.png").is_file() for name in names)
    resolution = int(up_opts["image_size"]) if up_opts else (
        (low_size if items is not None else int(base_opts["image_size"])) * max(1, bicubic))
    held = items is not None
    info = {"num_images": n, "sampler": cfg.upsample_sampler if held and up else ("bicubic" if held else cfg.sampler),
            "steps": cfg.upsample_steps if held and up else ("0" if held else cfg.steps),
            "guidance_scale": cfg.guidance_scale, "sampler_eta": cfg.sampler_eta, "dpm_order": cfg.dpm_order,
            "base": "" if held else cfg.base, "upsampler": cfg.upsampler, "low_res_images": cfg.low_res_images,
            "upsample_sampler": cfg.upsample_sampler if cfg.upsampler else "", "seed": cfg.seed,
            "resolution": resolution, "base_found": base.found.message if base is not None else "",
            "shards": num_shards}
    if clip is not None:
        info.update(clip_model=cfg.clip_model, clip_guidance_scale=cfg.clip_guidance_scale,
                    clip_cutouts=cfg.clip_cutouts, clip_cut_min=cfg.clip_cut_min)
    if inpaint_items is not None:
        info.update(inpaint_images=cfg.inpaint_images, inpaint_mask=cfg.inpaint_mask)
    if skips is not None:  # what was left out of the held-out folder, and why
        info.update(skipped=skips.bad, skip_reasons=dict(sorted(skips.counts.items())))
    write_json(out / f"timing.shard{shard}.json", {"images": len(todo), "seconds": seconds,
                                                    "seconds_per_image": seconds / max(1, len(todo)),
                                                    "base_forward_calls": nfe[0], "device": str(device)})
    if done:
        # the leaderboard's columns: the networks sampled (base and/or upsampler), time over every shard's timing
        info["parameters"] = sum(t.numel() for m in (base, up) if m is not None for t in m.parameters())
        timed = [t for t in (read_json(p) for p in sorted(out.glob("timing.shard*.json"))) if t.get("images")]
        if timed:
            info["seconds_per_image"] = sum(t["seconds"] for t in timed) / sum(t["images"] for t in timed)
        write_json(out / "samples.json", info)
    print(f"{len(todo)} images in {seconds:.1f} s (shard {shard}/{num_shards}) -> {out}"
          + ("" if done else " (other shards pending)"))
    return info


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
