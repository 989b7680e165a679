"""Fine-tune the transformer of a FLUX.2 pipeline on an image folder (rectified-flow / flow-matching loss).

The VAE and the text encoder stay frozen (text embeddings are cached on disk per caption). Each step:
    x0 = VAE latents (patchified, batch-norm normalised, as Flux2Pipeline encodes reference images)
    t  ~ logit-normal(logit_mean, logit_std) (or uniform), then shifted towards noise as FLUX does:
         shift="auto": t' = e^mu / (e^mu + 1/t - 1) with mu from the image's token count (the pipeline's own
         compute_empirical_mu at `shift_steps` steps); shift="fixed": t' = s t / (1 + (s - 1) t); "none"
    x_t = (1 - t') x0 + t' noise,   loss = || v_theta(x_t, t', guidance, text) - (noise - x0) ||^2
`guidance` is the embedded guidance value fed to the guidance-distilled transformer during training.

Data: any shared.data folder (captions from .txt/.cap files or folder names), `caption_dropout` of them empty.
`lora=true` trains a peft LoRA on the attention projections instead of all weights; the adapter is saved on its
own (`<run_dir>/lora/`, diffusers LoRA format: `pipe.load_lora_weights(dir)` or generate.py `lora=`).
A full fine-tune writes `<run_dir>/transformer/` and, if `export_pipeline`, a complete pipeline folder
`<run_dir>/pipeline/`. Restarting with the same run_dir resumes from its newest checkpoint (shared.train).

    python projects/sd_flux_lab/train_flux.py scale=tiny pipeline=models/tiny/flux2 data_dir=data/tiny/digits/train
    python -m projects.sd_flux_lab.train_flux scale=paper data_dir=data/photos lora=true lora_rank=32
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from shared.config import ConfigError, cli, resolve
from shared.io import atomic_dir, write_json
from shared.train import TextEmbeddingCache, Trainer, TrainConfig
from shared.train.lora import add_lora

SHIFTS = ("auto", "fixed", "none")
SAMPLINGS = ("logit_normal", "uniform")


@dataclass
class Config(TrainConfig):
    scale: str = "paper"
    pipeline: str = "downloads/flux2"  # a FLUX.2 pipeline folder (flux.py builds random ones)
    data_dir: str = "data/paper/flux_finetune"  # an image folder (shared.data.FolderSource)
    resolution: int = 512
    crop: str = "center"  # center | random
    hflip: float = 0.0
    min_image_size: int = 16  # shorter side below this: left out, counted as filtered (0 = keep all)
    batch_size: int = 1
    num_workers: int = 2
    caption_dropout: float = 0.0
    lr: float = 1e-5
    weight_decay: float = 1e-2
    timestep_sampling: str = "logit_normal"  # logit_normal | uniform
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: str = "auto"  # auto (resolution-dependent mu, as the pipeline samples) | fixed | none
    shift_value: float = 3.0  # for shift=fixed
    shift_steps: int = 50  # the sampling step count whose mu shift=auto trains for
    guidance: float = 4.0  # embedded guidance value during training
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    gradient_checkpointing: bool = False
    export_pipeline: bool = True  # full fine-tune: also write <run_dir>/pipeline (a whole loadable pipeline)
    text_cache_dir: str = ""  # "" = <run_dir>/text_cache
    device_dtype: str = "fp32"  # dtype of the frozen VAE and text encoder: fp32 | bf16


PRESETS = {
    "tiny": {"pipeline": "models/tiny/flux2", "data_dir": "data/tiny/digits/train", "run_dir": "runs/tiny/flux_ft",
             "resolution": 32, "batch_size": 2, "num_workers": 0, "max_steps": 4, "ckpt_every": 2, "log_every": 1,
             "lr": 1e-4, "max_grad_norm": 1.0},
    "toy": {"pipeline": "models/toy/flux2", "data_dir": "data/toy/digits/train", "run_dir": "runs/toy/flux_ft",
            "resolution": 32, "batch_size": 16, "num_workers": 0, "max_steps": 300, "ckpt_every": 100,
            "lr": 3e-4, "caption_dropout": 0.1},
    "paper": {"run_dir": "runs/paper/flux_ft", "max_steps": 2000, "ckpt_every": 250, "mixed_precision": "bf16",
              "gradient_checkpointing": True, "export_pipeline": False, "device_dtype": "bf16"},
}


def sample_timesteps(n: int, cfg, image_seq_len: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise levels t' in (0, 1) for a batch (1 = pure noise), sampled and shifted as described above."""
    if cfg.timestep_sampling == "logit_normal":
        t = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(n, generator=generator))
    elif cfg.timestep_sampling == "uniform":
        t = torch.rand(n, generator=generator)
    else:
        raise ConfigError(f"timestep_sampling={cfg.timestep_sampling!r}; expected one of {', '.join(SAMPLINGS)}")
    t = t.clamp(1e-4, 1 - 1e-4)
    if cfg.shift == "auto":
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        mu = compute_empirical_mu(image_seq_len=image_seq_len, num_steps=cfg.shift_steps)
        t = math.exp(mu) / (math.exp(mu) + (1 / t - 1))
    elif cfg.shift == "fixed":
        t = cfg.shift_value * t / (1 + (cfg.shift_value - 1) * t)
    elif cfg.shift != "none":
        raise ConfigError(f"shift={cfg.shift!r}; expected one of {', '.join(SHIFTS)}")
    return t


def flow_matching_loss(transformer, x0: torch.Tensor, text: torch.Tensor, txt_ids: torch.Tensor, t: torch.Tensor,
                       guidance: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between the predicted velocity at x_t and (noise - x0). x0: patchified latents (B, C, H, W).
    Why not loss.FlowMatchingLoss: t comes from outside (sample_timesteps: resolution-dependent shift), the
    transformer reads t in [0, 1] (not 1000 s) on packed tokens, noise is drawn after t on the CPU generator, and
    the MSE is over the whole batch (not a mean of per-sample means): reusing the class would change the numbers."""
    from diffusers import Flux2Pipeline

    noise = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device, x0.dtype)
    tb = t.to(x0.device, x0.dtype).view(-1, 1, 1, 1)
    xt = (1 - tb) * x0 + tb * noise
    img_ids = Flux2Pipeline._prepare_latent_ids(xt).to(x0.device)
    pred = transformer(hidden_states=Flux2Pipeline._pack_latents(xt), timestep=t.to(x0.device, x0.dtype),
                       guidance=torch.full((x0.shape[0],), guidance, device=x0.device, dtype=torch.float32),
                       encoder_hidden_states=text, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
    target = Flux2Pipeline._pack_latents(noise - x0)
    return F.mse_loss(pred.float(), target.float())


def save_lora(pipe_cls, transformer, out: Path, cfg) -> Path:
    """The adapter alone, in diffusers' LoRA format (loadable with pipe.load_lora_weights)."""
    from peft.utils import get_peft_model_state_dict

    layers = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    with atomic_dir(out) as tmp:
        pipe_cls.save_lora_weights(str(tmp), transformer_lora_layers=layers)
        write_json(Path(tmp) / "adapter_info.json", {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha,
                                                     "targets": list(cfg.lora_targets), "base": cfg.pipeline})
    return out


def _text_encoder_id(pipeline: str, info: dict) -> dict:
    """Cache namespace: the encoder's weights (their file sizes and config) and how it is read."""
    enc = Path(pipeline) / "text_encoder"
    files = sorted((p.name, p.stat().st_size) for p in enc.iterdir() if p.is_file())
    return {"pipeline": str(Path(pipeline).resolve()), "files": files,
            "config": hashlib.sha256((enc / "config.json").read_bytes()).hexdigest()[:16], **info}


def main(cfg=None):
    from projects.sd_flux_lab.flux import load_flux2
    from shared.data import FolderSource, ResumableLoader, image_transform

    cfg = resolve(Config, cfg, PRESETS)
    if cfg.crop not in ("center", "random"):
        raise ConfigError(f"crop={cfg.crop!r}; expected center or random")
    frozen_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(cfg.device_dtype)
    if frozen_dtype is None:
        raise ConfigError(f"device_dtype={cfg.device_dtype!r}; expected fp32 or bf16")
    data = Path(cfg.data_dir)
    if not data.is_dir():
        raise FileNotFoundError(f"data_dir={data}: not a folder of images")

    trainer = Trainer(cfg)
    pipe, info = load_flux2(cfg.pipeline, dtype=frozen_dtype if frozen_dtype != torch.float32 else None)
    pipe.vae.to(trainer.device).requires_grad_(False).eval()
    pipe.text_encoder.to(trainer.device).requires_grad_(False).eval()
    transformer = pipe.transformer.to(trainer.device, torch.float32).train()  # trained weights stay fp32
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    params = add_lora(transformer, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, targets=cfg.lora_targets,
                      init="gaussian") if cfg.lora else list(transformer.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    transformer, _ = trainer.add("transformer", transformer, opt, trainable_only=cfg.lora)

    source = FolderSource(data, transform=image_transform(cfg.resolution, crop=cfg.crop, hflip_p=cfg.hflip),
                          min_size=cfg.min_image_size)
    loader = ResumableLoader(source, cfg.batch_size, num_workers=cfg.num_workers, seed=cfg.seed,
                             uncond_p=cfg.caption_dropout, rank=trainer.rank, world_size=trainer.world_size,
                             drop_last=True)
    noise_gen = trainer.generator("noise", cfg.seed + 1000 * trainer.rank, device="cpu")
    layers = tuple(info["text_encoder_out_layers"])
    max_len = int(info["max_sequence_length"])
    cache = TextEmbeddingCache(cfg.text_cache_dir or Path(cfg.run_dir) / "text_cache",
                               _text_encoder_id(cfg.pipeline, {"layers": list(layers), "max_len": max_len}))

    def encode(texts):
        with torch.no_grad():
            embeds, _ = pipe.encode_prompt(prompt=list(texts), device=trainer.device, max_sequence_length=max_len,
                                           text_encoder_out_layers=layers)
        return {"prompt_embeds": embeds}

    for batch in trainer.batches(loader):
        with torch.no_grad():
            images = batch["image"].to(trainer.device, frozen_dtype)
            x0 = pipe._encode_vae_image(images, generator=None).float()
        text = cache(batch["caption"], encode)["prompt_embeds"].to(trainer.device, torch.float32)
        txt_ids = pipe._prepare_text_ids(text).to(trainer.device)
        t = sample_timesteps(x0.shape[0], cfg, x0.shape[2] * x0.shape[3], noise_gen)
        loss = flow_matching_loss(transformer, x0, text, txt_ids, t, cfg.guidance, noise_gen)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss, t=t.mean())

    out = Path(cfg.run_dir)
    raw = trainer.unit("transformer").raw
    exported = {}
    if trainer.is_main:
        if cfg.lora:
            exported["lora"] = str(save_lora(type(pipe), raw, out / "lora", cfg))
        else:
            with atomic_dir(out / "transformer") as tmp:
                raw.save_pretrained(tmp)
            exported["transformer"] = str(out / "transformer")
            if cfg.export_pipeline:
                from projects.sd_flux_lab.flux import save_flux2

                pipe.transformer = raw
                save_flux2(pipe, layers, out / "pipeline", max_len, info.get("sample_size", 0))
                exported["pipeline"] = str(out / "pipeline")
    trainer.finish({"steps": trainer.global_step, "skipped": loader.skips.bad, **exported})
    print(f"data: {loader.skips.summary()}" + (f"\n{loader.skips.listing()}" if loader.skips.counts else ""))
    print(f"trained {trainer.global_step} steps -> {json.dumps(exported)}")
    return exported


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
