"""Fine-tune (or train from scratch) GLIDE's 64 px base model or its 64 -> 256 upsampler.

Base: eps-MSE on the eps channels (loss=hybrid adds the variational term that trains the variance channels);
`uncond_p` of the captions are replaced by the empty prompt (all end tokens, mask False) so classifier-free
guidance works. Upsampler (train_upsample=true): the target is a side*upscale_factor crop, the condition its
bicubic downsample to side x side quantised to 8 bit; uncond_p 0. Inpainting (inpaint=true: base-inpaint, or
upsample-inpaint with train_upsample=true): each sample gets a random mask (inpaint.py, `mask_kind`; default "mix"
= a random box 60%, a random half 30%, nothing known 10%) and the model sees image * mask and the mask as extra
input channels, as GLIDE's inpainting models take them; the loss is the same eps MSE over the whole image.

What is trained (`train`): all | unet (text side frozen; its outputs are cached per caption) | transformer (the
UNet frozen) | scratch (random init from the `arch` preset, everything trained). Fine-tuning starts from `init`:
"released" (downloads/glide/base/base.pt or downloads/glide/upsample/upsample.pt), a weights file, or a previous
run folder.

    python projects/glide_finetune/train.py init=released data_dir=pics tokenizer=downloads/glide/gpt2_tokenizer \
        run_dir=runs/glide_ft batch_size=4 learning_rate=1e-4 uncond_p=0.2
    python projects/glide_finetune/train.py --data_dir pics --train_upsample False --batch_size 4 \
        --learning_rate 1e-4 --side_x 64 --side_y 64 --uncond_p 0.2 --checkpoints_dir runs/ft   (glide-finetune's)
    python -m projects.glide_finetune.train scale=toy train=scratch data_dir=data/toy/digits/train \
        tokenizer=results/toy/glide/tokenizer run_dir=results/toy/glide/base
    python projects/glide_finetune/train.py init=released inpaint=true data_dir=pics run_dir=runs/inpaint

Outputs in run_dir: model.safetensors (EMA weights when ema_decay > 0) + glide.json (options, tokenizer,
variant; what load_model reads), samples/step_*.png (test prompts x seeds), checkpoints/ (resumed from by
itself; SIGTERM/SIGUSR2 save and exit 75), metrics.jsonl (loss, mse, vb, grad_norm, skipped_steps,
loss_scale under fp16, peak_mem_mb), config.yaml. With export_original_names=true also glide-finetune's file
names beside them: exports/glide-ft-<epoch>x<index>.pt (+ ema_<rate>_<epoch>x<index:06d>.pt), see export_original.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F

from shared.config import Alias, ConfigError, Refused, cli, option, resolve
from shared.io import write_json
from shared.train import TextEmbeddingCache, TrainConfig, Trainer
from projects.glide_finetune.clip_guidance import clip_finetune_loss
from projects.glide_finetune.data import DedupFilter, make_loader, make_source
from projects.glide_finetune.diffusion import LOSSES, create_diffusion, quantize_8bit
from projects.glide_finetune.glide_util import INFO_FILE, WEIGHTS_FILE, identify, read_state_dict, resolve_path
from projects.glide_finetune.inpaint import FIXED_MASKS, MASKS, fixed_mask, inpaint_sample, random_masks
from projects.glide_finetune.text_cache import LRUTextCache
from projects.glide_finetune.tokenizer import load_tokenizer
from projects.glide_finetune.unet import create_model, model_and_diffusion_defaults, \
    model_and_diffusion_defaults_upsampler, tiny_options, variant_of

TRAIN_MODES = ("all", "unet", "transformer", "scratch")


def _toy_options(upsampler: bool) -> dict:
    """GLIDE's architecture at digits scale: 8 px base, 8 -> 32 px upsampler (x4)."""
    if upsampler:
        return {**model_and_diffusion_defaults_upsampler(), "image_size": 32, "num_channels": 32,
                "num_res_blocks": 1, "channel_mult": "1,2,2", "num_head_channels": 32, "attention_resolutions": "8",
                "dropout": 0.0, "text_ctx": 16, "xf_width": 64, "xf_layers": 1, "xf_heads": 4, "use_fp16": False}
    return {**model_and_diffusion_defaults(), "image_size": 8, "num_channels": 64, "num_res_blocks": 2,
            "channel_mult": "1,2", "num_head_channels": 32, "attention_resolutions": "4", "dropout": 0.0,
            "text_ctx": 16, "xf_width": 64, "xf_layers": 2, "xf_heads": 4, "use_fp16": False}


ARCHS = {  # options of a network trained from scratch (train=scratch)
    "released": lambda up: model_and_diffusion_defaults_upsampler() if up else model_and_diffusion_defaults(),
    "toy": _toy_options,
    "tiny": lambda up: tiny_options(super_res=up, image_size=32 if up else 8, text_ctx=16),
}


@dataclass
class Config(TrainConfig):
    scale: str = "toy"
    run_dir: str = "results/toy/glide/base"
    data_dir: str = option("data/toy/digits/train", help="image folder with caption files, or WebDataset shards")
    use_webdataset: bool = False
    wds_dataset_name: str = option("laion", choices=("laion", "alamy", "synthetic"))
    wds_caption_key: str = option("", help="'' = the layout's (txt)")
    wds_image_key: str = option("", help="'' = the layout's (jpg; png for synthetic)")
    min_size: int = option(0, help="drop images whose shorter side is smaller (pixels)")
    min_aspect: float = 0.0
    max_aspect: float = 0.0
    min_similarity: float = option(0.0, help="LAION CLIP similarity bounds (0 = none)")
    max_similarity: float = 0.0
    max_punsafe: float = 0.0
    dedup_captions: bool = option(False, help="drop repeated captions (Bloom filter per loader stream)")
    dedup_urls: bool = option(False, help="drop repeated URLs (metadata 'url')")
    dedup_fp_rate: float = option(1e-4, help="Bloom filter false-positive rate at dedup_capacity items")
    dedup_capacity: int = 1_000_000
    trim_white: bool = option(False, help="crop white margins before cropping")
    train_upsample: bool = False
    inpaint: bool = option(False, help="train the inpainting variant (base-inpaint; upsample-inpaint with "
                                       "train_upsample=true)")
    mask_kind: str = option("mix", choices=tuple(MASKS), help="training masks (inpaint.py): mix | box | half | all")
    test_mask: str = option("center", choices=FIXED_MASKS, help="the test grid's mask for inpaint=true")
    export_original_names: bool = option(False, help="also export weights under glide-finetune's names "
                                                     "(exports/glide-ft-<epoch>x<index>.pt) at each checkpoint")
    upscale_factor: int = option(4, min=1)
    side_x: int = option(64, help="base resolution (the upsampler's input); must equal side_y")
    side_y: int = 64
    crop: str = option("random", choices=("random", "center"))
    resize_ratio: float = option(1.0, help="random crop keeps at least this share of the area")
    uncond_p: float = option(0.2, min=0.0, max=1.0, help="share of captions replaced by the empty prompt")
    train: str = option("all", choices=TRAIN_MODES)
    init: str = option("released", help="'released' | weights file | run folder (ignored for train=scratch)")
    arch: str = option("toy", choices=tuple(ARCHS), help="network options for train=scratch")
    tokenizer: str = option("downloads/glide/gpt2_tokenizer", help="folder with vocab.json + merges.txt")
    loss: str = option("mse", choices=LOSSES)
    clip_loss: str = option("", help="'<weight>@<noised CLIP run folder | released>': + weight * (1 - cos) of the "
                                     "noised CLIP on the x0 prediction (clip_guidance.ClipFinetuneLoss); '' = off")
    batch_size: int = 4
    learning_rate: float = 1e-4
    adam_weight_decay: float = 0.0
    epochs: int = option(0, help="> 0: this many epochs over a folder (sets max_steps)")
    activation_checkpointing: bool = False
    text_cache: bool = option(True, help="cache the frozen text side's outputs per caption (train=unet)")
    text_cache_size: int = option(1024, min=1, help="in-memory LRU entries, kept on the device (~260 KB each at the "
                                                    "released size)")
    text_cache_dir: str = option("", help="use shared.train's on-disk cache here instead (small caption sets)")
    test_prompts: List[str] = field(default_factory=lambda: ["a red handwritten seven", "a blue handwritten two"])
    test_seeds: List[int] = field(default_factory=lambda: [0, 1])
    test_guidance_scale: float = 3.0
    test_sampler: str = "glide"
    test_steps: str = "27"
    sample_every: int = option(0, help="test-prompt grid every this many steps (0 = at the end only)")
    project_name: str = "glide_finetune"
    num_workers: int = 0
    threads: int = 0


# paper: glide-finetune's README run (batch 4, lr 1e-4, uncond_p 0.2, 64 px) with what the issue asks for on
# top (EMA, warmup, bf16, activation checkpointing); toy: digits at 8 px (base) / 32 px (upsampler)
PRESETS = {
    "tiny": {"max_steps": 3, "batch_size": 4, "side_x": 8, "side_y": 8, "arch": "tiny", "train": "scratch",
             "ckpt_every": 2, "log_every": 1, "test_steps": "4", "test_seeds": [0], "threads": 1, "progress": False},
    "toy": {"max_steps": 2000, "batch_size": 32, "side_x": 8, "side_y": 8, "arch": "toy", "train": "scratch",
            "learning_rate": 1e-3, "lr_schedule": "cosine", "warmup_steps": 50, "min_lr_ratio": 0.1,
            "ema_decay": 0.999, "ckpt_every": 500, "log_every": 50, "crop": "center", "threads": 2},
    "paper": {"max_steps": 20000, "batch_size": 4, "learning_rate": 1e-4, "warmup_steps": 500,
              "lr_schedule": "warmup", "ema_decay": 0.9999, "mixed_precision": "bf16", "ckpt_every": 1000,
              "milestone_every": 5000, "activation_checkpointing": True, "resize_ratio": 0.8,
              "test_prompts": ["a group of skiers are preparing to ski down a mountain.",
                               "an oil painting of a corgi"], "test_steps": "100", "test_sampler": "plms",
              "test_guidance_scale": 4.0, "sample_every": 1000},
}


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError("expected True or False")
    return t in ("true", "1", "yes")


# glide-finetune's train_glide.py options that are named differently here (the same names otherwise)
ALIASES = {
    "checkpoints_dir": Alias("run_dir", help="run_dir (checkpoints, exports, samples)"),
    "resume_ckpt": Alias("init", help="init (a weights file or run folder to start from)"),
    "use_fp16": Alias(convert=lambda v: {"mixed_precision": "fp16"} if _bool(v) else {}, flag=True,
                      help="mixed_precision=fp16 (dynamic loss scaling)"),
    "freeze_transformer": Alias(convert=lambda v: {"train": "unet"} if _bool(v) else {}, flag=True,
                                help="train=unet"),
    "freeze_diffusion": Alias(convert=lambda v: {"train": "transformer"} if _bool(v) else {}, flag=True,
                              help="train=transformer"),
    "log_frequency": Alias("log_every"),
    "test_prompt": Alias(convert=lambda v: {"test_prompts": [v]}, help="test_prompts=[...]"),
    "test_batch_size": Alias(convert=lambda v: {"test_seeds": list(range(int(v)))}, help="test_seeds=[0..n-1]"),
    "use_captions": Alias(convert=lambda v: {} if _bool(v) else {"uncond_p": 1.0}, flag=True,
                          help="use_captions=False trains unconditionally (uncond_p=1)"),
    "device": Refused("the device comes from accelerate (CUDA when present); use CUDA_VISIBLE_DEVICES"),
    "cudnn_benchmark": Refused("not an option here; torch picks convolution algorithms itself"),
    "image_to_upsample": Refused("the upsampler's test grid upsamples held-out data crops; sample.py "
                                 "upsample_image=... upsamples a file"),
}


def _text_identity(model, tokenizer) -> dict:
    """Cache namespace: the tokenizer and a digest of the (frozen) text-side weights."""
    h = hashlib.sha256()
    for p in model.text_parameters():
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return {**tokenizer.identity, "text_weights": h.hexdigest()[:24], "text_ctx": model.text_ctx}


def build_model(cfg):
    """(model, options, what it started from) for the configured init / arch."""
    if cfg.train == "scratch":
        opts = {**ARCHS[cfg.arch](cfg.train_upsample), "inpaint": cfg.inpaint}
        return opts, None, f"scratch ({cfg.arch})"
    if not cfg.init:
        raise ConfigError(f"train={cfg.train} fine-tunes: give init=released, a weights file or a run folder "
                          f"(or train=scratch)")
    model_type = ("upsample" if cfg.train_upsample else "base") + ("-inpaint" if cfg.inpaint else "")
    path = resolve_path(model_type, None if cfg.init == "released" else cfg.init)
    sd, meta = read_state_dict(path)
    found = identify(path, sd, meta)
    print(found.message)
    if found.variant != model_type:
        raise ConfigError(f"train_upsample={cfg.train_upsample}{' inpaint=True' if cfg.inpaint else ''} but init "
                          f"{path} is a GLIDE {found.variant} (these options train a GLIDE {model_type})")
    return dict(found.options), sd, str(path)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def save_grid(images: torch.Tensor, nrow: int, path: Path) -> None:
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().cpu() + 1) / 2, str(path), nrow=nrow, padding=1)


def original_name(step: int, steps_per_epoch: int | None) -> tuple[int, int]:
    """(epoch, index) that glide-finetune names the checkpoint after `step` optimizer steps with: it saves
    `glide-ft-{epoch}x{train_idx}.pt` where epoch counts from 0 and train_idx is the 0-based index of the batch
    just trained within that epoch (the enumerate() index of its loop). Shards (no epoch length): epoch 0."""
    if step < 1:
        raise ValueError(f"step={step}: a checkpoint exists after at least one step")
    if not steps_per_epoch:
        return 0, step - 1
    return (step - 1) // steps_per_epoch, (step - 1) % steps_per_epoch


def export_original(trainer, cfg, step: int, steps_per_epoch: int | None) -> list[Path]:
    """Weights under glide-finetune's names in <run_dir>/exports/: glide-ft-<epoch>x<index>.pt (the raw weights, a
    plain state dict as its train_util.save_model writes, loadable with torch.load(weights_only=True) and by
    load_model) and, with EMA, ema_<rate>_<epoch>x<index:06d>.pt (its save_ema_model). Ours stay in checkpoints/
    (what a run resumes from); these are copies for tools that expect the original names."""
    from shared.io import atomic_path
    from shared.train.checkpoint import cpu_tensors

    epoch, idx = original_name(step, steps_per_epoch)
    folder = Path(cfg.run_dir) / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    unit = trainer.unit("glide")
    raw_sd = cpu_tensors(unit.raw.state_dict())
    files = [(folder / f"glide-ft-{epoch}x{idx}.pt", raw_sd)]
    ema = trainer.ema("glide")
    if ema is not None:
        files.append((folder / f"ema_{cfg.ema_decay}_{epoch}x{idx:06d}.pt", {**raw_sd, **cpu_tensors(ema.tensors())}))
    for path, sd in files:
        with atomic_path(path) as tmp:
            torch.save(sd, tmp)
    return [p for p, _ in files]


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.side_x != cfg.side_y:
        raise ConfigError(f"side_x={cfg.side_x}, side_y={cfg.side_y}: GLIDE trains square crops; give equal sides")
    side = cfg.side_x * (cfg.upscale_factor if cfg.train_upsample else 1)
    tokenizer = load_tokenizer(cfg.tokenizer)
    opts, state, started_from = build_model(cfg)
    if cfg.train == "scratch":
        opts["n_vocab"] = tokenizer.n_vocab
    if int(opts["image_size"]) != side:
        raise ConfigError(f"the network's image_size is {opts['image_size']} but side_x"
                          f"{' x upscale_factor' if cfg.train_upsample else ''} = {side}")
    filt = DedupFilter(min_size=cfg.min_size, min_aspect=cfg.min_aspect, max_aspect=cfg.max_aspect,
                       max_punsafe=cfg.max_punsafe, min_similarity=cfg.min_similarity,
                       max_similarity=cfg.max_similarity, dedup_captions=cfg.dedup_captions,
                       dedup_urls=cfg.dedup_urls, dedup_fp_rate=cfg.dedup_fp_rate,
                       dedup_capacity=cfg.dedup_capacity)
    source = make_source(cfg.data_dir, side, use_webdataset=cfg.use_webdataset,
                         wds_dataset_name=cfg.wds_dataset_name, wds_caption_key=cfg.wds_caption_key,
                         wds_image_key=cfg.wds_image_key, crop=cfg.crop, resize_ratio=cfg.resize_ratio,
                         data_filter=filt, trim_white=cfg.trim_white)
    # optimizer steps per epoch of a folder (None for shards, whose length is unknown)
    steps_per_epoch = None if cfg.use_webdataset else max(1, len(source.units()) // cfg.batch_size)
    if cfg.epochs > 0:
        if cfg.use_webdataset:
            raise ConfigError("epochs= needs a folder (shards have no known length); give max_steps")
        cfg.max_steps = cfg.epochs * steps_per_epoch

    trainer = Trainer(cfg, project_name=cfg.project_name)
    torch.manual_seed(cfg.seed)
    model = create_model(opts)
    if state is not None:
        model.load_state_dict(state, strict=True)
    model.train()
    if cfg.activation_checkpointing:
        model.set_grad_checkpointing(True)
    text_frozen = cfg.train == "unet"
    for p in model.text_parameters():
        p.requires_grad_(cfg.train != "unet")
    for p in model.unet_parameters():
        p.requires_grad_(cfg.train != "transformer")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.adam_weight_decay)
    model, _ = trainer.add("glide", model, opt)
    raw = trainer.unit("glide").raw
    variant = variant_of(opts)
    info = {"options": opts, "tokenizer": str(Path(cfg.tokenizer)), "variant": variant, "init": started_from,
            "train": cfg.train, "uncond_p": cfg.uncond_p, "loss": cfg.loss}
    if cfg.inpaint:
        info["mask_kind"] = cfg.mask_kind
    if trainer.is_main:  # now, so load_model can read the checkpoints of a run still in progress
        write_json(Path(cfg.run_dir) / INFO_FILE, {**info, "ema": False, "step": None})
    dev = trainer.device

    loader = make_loader(source, cfg.batch_size, uncond_p=cfg.uncond_p, seed=cfg.seed, rank=trainer.rank,
                         world_size=trainer.world_size,
                         num_workers=cfg.num_workers)
    diffusion = create_diffusion(opts, "")
    clip_loss = clip_finetune_loss(cfg.clip_loss, diffusion, dev)  # None unless clip_loss= is given
    gen = trainer.generator("noise", cfg.seed * 1000 + trainer.rank, device=dev)
    def encode(texts):
        tokens, mask = tokenizer.batch(list(texts), raw.text_ctx)
        return raw.encode_text(tokens.to(dev), mask.to(dev))

    cache = lookup = None
    if text_frozen and cfg.text_cache:
        if cfg.text_cache_dir:
            cache = TextEmbeddingCache(cfg.text_cache_dir, _text_identity(raw, tokenizer))

            def lookup(texts):
                return cache(texts, encode)
        else:
            cache = lookup = LRUTextCache(encode, cfg.text_cache_size)

    fixed_low: list[torch.Tensor] = []
    fixed_x0: list[torch.Tensor] = []  # inpainting: the first batch's images, the test grid's inputs

    def test_grid(step: int) -> None:
        from projects.glide_finetune.sampling import generate, upsample  # diffusers: imported only when sampling

        ema = trainer.ema("glide")
        prompts = [p for p in cfg.test_prompts for _ in cfg.test_seeds]
        seeds = [s for _ in cfg.test_prompts for s in cfg.test_seeds]
        was_training = raw.training
        raw.eval()
        with (ema.swap(raw) if ema else contextlib.nullcontext()):
            if cfg.inpaint:
                image = fixed_x0[0][:len(prompts)].to(dev)
                n = len(image)
                mask = fixed_mask(cfg.test_mask, image.shape[-1], n).to(dev)
                low = fixed_low[0][:n].to(dev) if cfg.train_upsample else None
                imgs = inpaint_sample(raw, opts, tokenizer, prompts[:n], image, mask, seeds=seeds[:n], low_res=low,
                                      sampler=cfg.test_sampler, steps=cfg.test_steps,
                                      guidance_scale=cfg.test_guidance_scale, device=dev)
                imgs = torch.cat([image * mask, imgs])  # the masked inputs above their inpaintings
            elif cfg.train_upsample:
                low = fixed_low[0][:len(prompts)].to(dev)
                imgs = upsample(raw, opts, tokenizer, prompts[:len(low)], low, seeds=seeds[:len(low)],
                                sampler=cfg.test_sampler, steps=cfg.test_steps, device=dev)
                imgs = torch.cat([F.interpolate(low, imgs.shape[-2:], mode="nearest"), imgs])
            else:
                imgs = generate(raw, opts, tokenizer, prompts, seeds=seeds, sampler=cfg.test_sampler,
                                steps=cfg.test_steps, guidance_scale=cfg.test_guidance_scale, device=dev)
        raw.train(was_training)
        save_grid(imgs, len(imgs) // 2 if (cfg.train_upsample or cfg.inpaint) else len(cfg.test_seeds),
                  Path(cfg.run_dir) / "samples" / f"step_{step:07d}.png")

    for batch in trainer.batches(loader):
        x0 = batch["image"].float()
        kw = {}
        if cfg.train_upsample:
            low = F.interpolate(x0, size=(cfg.side_y, cfg.side_x), mode="bicubic", antialias=True, align_corners=False)
            kw["low_res"] = quantize_8bit(low)
            if not fixed_low:
                fixed_low.append(kw["low_res"].detach().cpu())
        if cfg.inpaint:
            if not fixed_x0:
                fixed_x0.append(x0.detach().cpu())
            # the model multiplies image by mask itself (unet.model_input); masks come from the checkpointed `gen`
            kw.update(inpaint_image=x0, inpaint_mask=random_masks(cfg.mask_kind, x0.shape[0], x0.shape[-1], gen, dev))
        if lookup is not None:
            enc = lookup(list(batch["caption"]))
            kw.update(xf_proj=enc["xf_proj"].to(dev), xf_out=enc["xf_out"].to(dev))
        else:
            tokens, mask = tokenizer.batch(batch["caption"], raw.text_ctx)
            kw.update(tokens=tokens.to(dev), mask=mask.to(dev))
        t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), generator=gen, device=dev)
        noise = torch.randn(x0.shape, generator=gen, device=dev)
        loss_fn = clip_loss.bind(batch["caption"]) if clip_loss else diffusion.training_losses
        terms = loss_fn(model, x0, t, kw, noise, loss=cfg.loss)
        loss = terms["loss"].mean()
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss, mse=terms["mse"].mean(), **{k: terms[k].mean() for k in ("vb", "clip") if k in terms},
                    peak_mem_mb=peak_memory_mb(dev))
        step = trainer.global_step + 1
        if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.max_steps and trainer.is_main:
            test_grid(step)
        if cfg.export_original_names and cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.max_steps \
                and trainer.is_main:
            export_original(trainer, cfg, step, steps_per_epoch)

    out = Path(cfg.run_dir)
    ema = trainer.ema("glide") is not None
    if trainer.is_main:
        test_grid(trainer.global_step)
        meta = {"format": "glide_finetune", "variant": variant,
                "ema": "true" if ema else "false", "step": str(trainer.global_step)}
        trainer.save_weights(out / WEIGHTS_FILE, "glide")
        # save_weights writes no metadata: rewrite with it (same tensors) so load_model can say what it found
        from safetensors.torch import load_file, save_file

        from shared.io import atomic_path

        tensors = load_file(str(out / WEIGHTS_FILE))
        with atomic_path(out / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        write_json(out / INFO_FILE, {**info, "ema": ema, "step": trainer.global_step})
        if cfg.export_original_names:
            export_original(trainer, cfg, trainer.global_step, steps_per_epoch)
    summary = {"steps": trainer.global_step, "skipped_samples": sum(loader.skips.counts.values()),
               "filtered_samples": sum(loader.skips.filtered.values())}
    if cache is not None:
        summary.update(text_cache_hits=cache.hits, text_cache_misses=cache.misses)
    trainer.finish(summary)
    if trainer.is_main:
        print(f"GLIDE {'upsampler' if cfg.train_upsample else 'base'}: {trainer.global_step} steps "
              f"({cfg.train}, from {started_from}) -> {out / WEIGHTS_FILE}")
    return summary


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__, aliases=ALIASES)
