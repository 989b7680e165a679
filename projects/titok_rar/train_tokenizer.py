"""Train an image tokenizer: the MaskGIT-VQGAN (toy proxy-code teacher), TiTok stage 1, stage 2, single stage, or
TA-TiTok (text-aware, single stage).

    python projects/titok_rar/train_tokenizer.py config=projects/titok_rar/configs/training/TiTok/stage1/titok_b64.yaml \\
        experiment.output_dir=runs/titok_b64_stage1 model.vq_model.num_latent_tokens=64
    python projects/titok_rar/train_tokenizer.py projects/titok_rar/configs/toy/titok_stage1.yaml scale=toy \\
        model.vq_model.num_latent_tokens=16 experiment.output_dir=results/toy/titok_rar/k16/stage1
    python projects/titok_rar/train_tokenizer.py config=projects/titok_rar/configs/training/TA-TiTok/tatitok_bl32_vq.yaml \\
        model.text_encoder.pretrained=downloads/titok_rar/open_clip_vit_l14_336/open_clip_pytorch_model.bin
    accelerate launch / torchrun --nproc_per_node 8 -m projects.titok_rar.train_tokenizer config=...   (DDP)

The config has the original's shape (bytedance/1d-tokenizer, configs/training/TiTok/...): sections experiment,
model.vq_model, losses, dataset, optimizer, lr_scheduler, training, with the same key names; `config=<yaml>`
(the original's spelling) or a YAML path as first argument, then dotted overrides. What is trained follows from
the config, as there: `model.type=vqgan` trains the VQGAN; a TiTok with `is_legacy` and not `finetune_decoder` is
stage 1 (decoder logits vs the frozen VQGAN's codes, `model.vq_model.pretrained_tokenizer_weight`); with
`finetune_decoder` it is stage 2 (init from the stage-1 model `experiment.init_weight`, encoder / quantiser /
latent tokens frozen, decoder + VQGAN decoder trained in pixel space against a discriminator, two optimisers);
without `is_legacy` it is the single-stage recipe (VQ8k / VAE: everything trained in pixel space). `model.type=tatitok`
(the original's scripts/train_tatitok.py) is that single-stage recipe with the decoder attending to each image's
caption through a frozen text encoder (`model.text_encoder`, text_guidance.py: CLIP ViT-L/14-336 at paper scale,
the toy word-level encoder at tiny/toy); the guidance's length and width set model.vq_model.text_context_length /
text_embed_dim, and the encoder (spec, and the toy one's weights) is saved in final/ beside the tokenizer.

Outputs in experiment.output_dir: config.yaml, metrics.jsonl (losses, lr, codebook usage and dead codes),
checkpoints/ (resumed from automatically; SIGUSR2/SIGTERM -> save and exit 75), final/ (save_pretrained of the
EMA weights when training.use_ema: config.json + model.safetensors, loadable with image_tokenizers.load_tokenizer;
TA-TiTok: + text_encoder.json [+ text_encoder.safetensors], text_guidance.load_text_guidance).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import torch
from omegaconf import DictConfig, OmegaConf

from shared.config import ConfigError, cli, resolve
from shared.data import ResumableLoader
from shared.train.seed import seed_everything
from shared.train.trainer import Trainer
from projects.titok_rar.data import image_source, to_unit
from projects.titok_rar.hub import read_state_dict
from projects.titok_rar.losses import LossOptions, PatchDiscriminator, PixelLoss, ProxyCodeLoss, build_perceptual
from projects.titok_rar.image_tokenizers import load_tokenizer
from projects.titok_rar.schema import (Dataset, Experiment, LRScheduler, Optimizer, TextEncoder, Training, VQModel,
                                       train_config, with_config_file)
from projects.titok_rar.titok import TATiTok, TiTok, TiTokConfig
from projects.titok_rar.vqgan import MaskGITVQGAN, VQGANConfig


@dataclass
class VQGANSection:
    """`model.vqgan` (type=vqgan): VQGANConfig's fields (vqgan.py)."""
    channel_mult: List[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 2
    hidden_channels: int = 128
    num_channels: int = 3
    z_channels: int = 256
    resolution: int = 256
    dropout: float = 0.0
    codebook_size: int = 1024
    norm_groups: int = 32


@dataclass
class Model:
    type: str = "titok"           # ours: titok | tatitok | vqgan (the original picks the class in the script)
    vq_model: VQModel = field(default_factory=VQModel)
    text_encoder: TextEncoder = field(default_factory=TextEncoder)   # tatitok: the text guidance's encoder
    vqgan: VQGANSection = field(default_factory=VQGANSection)
    discriminator_channels: int = 64                # ours: PatchDiscriminator width / depth
    discriminator_layers: int = 3
    # ours (not in the original): TA-TiTok, the probability that a training image's caption is replaced by the empty
    # one, so the decoder must sometimes reconstruct from the tokens alone; 0 = the released recipe. At toy scale a
    # caption says all the digits CNN sees, and the released recipe's decoder learns to ignore its tokens (README).
    text_guidance_dropout: float = 0.0


@dataclass
class Config:
    scale: str = "toy"
    config: str = ""              # the original's `config=<yaml>`; merged under the other options
    experiment: Experiment = field(default_factory=Experiment)
    model: Model = field(default_factory=Model)
    losses: LossOptions = field(default_factory=LossOptions)
    dataset: Dataset = field(default_factory=Dataset)
    optimizer: Optimizer = field(default_factory=Optimizer)
    lr_scheduler: LRScheduler = field(default_factory=LRScheduler)
    training: Training = field(default_factory=Training)
    threads: int = 0              # torch CPU threads; 0 = torch default
    progress: bool = True         # progress bar (false in the workflow's logs)
    preempt_signals: str = "SIGUSR2,SIGTERM"


# Scale presets shrink only what the YAML recipes do not set per model (the recipes carry the method's values).
PRESETS = {
    "tiny": {"training": {"max_train_steps": 4, "per_gpu_batch_size": 8}, "experiment": {"log_every": 2,
                                                                                          "save_every": 0}},
    "toy": {},
    "paper": {"training": {"mixed_precision": "bf16"}},
}
STAGES = ("vqgan", "stage1", "stage2", "single", "tatitok")
PIXEL_STAGES = ("vqgan", "stage2", "single", "tatitok")


def stage_of(cfg) -> str:
    if cfg.model.type == "vqgan":
        return "vqgan"
    if cfg.model.type == "tatitok":
        if cfg.model.vq_model.get("is_legacy", True):
            raise ConfigError("model.type=tatitok: TA-TiTok training is the single-stage recipe with the pixel "
                              "decoder; set model.vq_model.is_legacy=false (configs/training/TA-TiTok/*.yaml)")
        if cfg.model.text_encoder.train:
            raise ConfigError("model.text_encoder.train=true: TA-TiTok's text encoder stays frozen, as the original's "
                              "CLIP (utils/train_utils.py create_clip_model)")
        if not 0.0 <= cfg.model.text_guidance_dropout < 1.0:
            raise ConfigError(f"model.text_guidance_dropout={cfg.model.text_guidance_dropout}: a probability in [0, 1)")
        return "tatitok"
    if cfg.model.text_guidance_dropout:
        raise ConfigError(f"model.text_guidance_dropout={cfg.model.text_guidance_dropout}: only TA-TiTok "
                          "(model.type=tatitok) is trained with captions")
    if cfg.model.type != "titok":
        raise ConfigError(f"model.type={cfg.model.type!r}; allowed: titok, tatitok, vqgan")
    vq = cfg.model.vq_model
    if vq.get("is_legacy", True):
        return "stage2" if vq.get("finetune_decoder", True) else "stage1"
    return "single"


def _teacher(cfg) -> MaskGITVQGAN:
    path = cfg.model.vq_model.get("pretrained_tokenizer_weight", "")
    if not path:
        raise ConfigError("model.vq_model.pretrained_tokenizer_weight: the legacy TiTok needs the MaskGIT-VQGAN "
                          "(a folder from train_tokenizer model.type=vqgan, or maskgit-vqgan-imagenet-f16-256.bin)")
    if not Path(path).exists():
        raise ConfigError(f"model.vq_model.pretrained_tokenizer_weight={path}: not found")
    teacher = load_tokenizer(path)
    if not isinstance(teacher, MaskGITVQGAN):
        raise ConfigError(f"model.vq_model.pretrained_tokenizer_weight={path}: a {type(teacher).__name__}, "
                          "expected a MaskGIT-VQGAN")
    return teacher.requires_grad_(False).eval()


def build_text(cfg, stage: str):
    """TA-TiTok's frozen text encoder (text_guidance.py), before the model: its output shape sets the decoder's."""
    if stage != "tatitok":
        return None
    from projects.titok_rar.text_guidance import build_text_guidance
    try:
        return build_text_guidance(OmegaConf.to_container(cfg.model.text_encoder))
    except (TypeError, ValueError, FileNotFoundError, RuntimeError) as e:
        raise ConfigError(f"model.text_encoder: {e}") from None


def build_model(cfg, stage: str, teacher: MaskGITVQGAN | None, text=None):
    if stage == "vqgan":
        try:
            return MaskGITVQGAN(VQGANConfig.from_dict(OmegaConf.to_container(cfg.model.vqgan)))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.vqgan: {e}") from None
    vq = dict(OmegaConf.to_container(cfg.model.vq_model))
    vq["image_size"] = cfg.dataset.preprocessing.crop_size
    if teacher is not None:
        vq["pixel_vqgan"] = teacher.config.to_dict()  # the legacy head predicts this VQGAN's codes
    if text is not None:  # the guidance the decoder attends to: CLIP's 77 x 768, the toy encoder's L x width
        vq["text_context_length"], vq["text_embed_dim"] = text.context_length, text.width
    try:
        tcfg = TiTokConfig.from_dict(vq)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    return TATiTok(tcfg) if stage == "tatitok" else TiTok(tcfg)


def init_stage2(model: TiTok, cfg, teacher: MaskGITVQGAN) -> None:
    """Stage-1 weights (all but the pixel decoder), then the VQGAN's codebook and decoder as pixel_*."""
    path = cfg.experiment.init_weight
    if not path:
        raise ConfigError("experiment.init_weight: stage 2 starts from the stage-1 tokenizer (folder or weights)")
    p = Path(path)
    sd = read_state_dict(p / "model.safetensors" if p.is_dir() else p)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith(("pixel_quantize.", "pixel_decoder."))]
    unexpected = [k for k in sd if k not in own]
    bad = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(f"experiment.init_weight={path}: not this config's stage-1 model (missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}, shape mismatch {bad[:4]})")
    model.load_state_dict(sd, strict=False)
    model.pixel_quantize.embedding.weight.data.copy_(teacher.quantize.embedding.weight.data)
    model.pixel_decoder.load_state_dict(teacher.decoder.state_dict(), strict=True)
    # frozen in stage 2 (the original's TiTok.__init__ with finetune_decoder)
    model.latent_tokens.requires_grad_(False)
    model.encoder.requires_grad_(False)
    model.quantize.requires_grad_(False)


class CodebookMonitor:
    """Codes used since the last report: usage = fraction of the codebook, dead = codes never chosen."""
    def __init__(self, size: int):
        self.seen = torch.zeros(size, dtype=torch.bool)

    def update(self, indices: torch.Tensor) -> None:
        self.seen[indices.detach().reshape(-1).cpu()] = True

    def report(self) -> dict:
        out = {"codebook_usage": self.seen.float().mean().item(), "dead_codes": float((~self.seen).sum().item())}
        self.seen.zero_()
        return out

    # checkpointed with the run, so a resume inside a log window reports the same usage as an uninterrupted run
    def state_dict(self) -> dict:
        return {"seen": self.seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.seen.copy_(state["seen"])


def main(cfg=None):
    cfg = resolve(Config, with_config_file(cfg), PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.training.enable_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    stage = stage_of(cfg)
    pixel = stage in PIXEL_STAGES
    try:  # checked before any model is built: a bad path fails in a second, not after minutes
        perceptual = build_perceptual(cfg.losses.perceptual_loss) if pixel else None
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None
    pre = cfg.dataset.preprocessing
    try:
        source = image_source(cfg.dataset.params.train_shards_path_or_url, pre.crop_size, pre.resize_shorter_edge,
                              pre.random_crop, pre.random_flip, caption_key=cfg.dataset.params.caption_key)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"dataset.params.train_shards_path_or_url: {e}") from None
    # The models are built before the Trainer (which seeds in its __init__) so that a bad config fails before a run
    # folder exists; seeded here, their initial weights do not depend on what the process drew before (a
    # resumed or in-process run would otherwise start from other weights than the checkpointed run did).
    seed_everything(cfg.training.seed)
    teacher = _teacher(cfg) if stage in ("stage1", "stage2") else None
    text = build_text(cfg, stage)
    model = build_model(cfg, stage, teacher, text)
    if stage == "stage2":
        init_stage2(model, cfg, teacher)
    o = cfg.optimizer.params
    trainer = Trainer(_run_config(cfg))
    with trainer:  # restores the signal handlers however the run ends (a batch without captions raises mid-run)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=o.learning_rate, betas=(o.beta1, o.beta2), eps=o.epsilon,
                                weight_decay=o.weight_decay)
        model, _ = trainer.add("tokenizer", model.train(), opt)
        raw = trainer.unit("tokenizer").raw
        if text is not None:
            text.to(trainer.device)
        if teacher is not None:
            teacher.to(trainer.device)
            if stage == "stage2":
                raw.encoder.eval()

        disc = raw_disc = loss_fn = None
        if pixel:
            quantize_mode = "vae" if stage in ("single", "tatitok") and raw.config.quantize_mode == "vae" else "vq"
            try:
                loss_fn = PixelLoss(cfg.losses, perceptual, quantize_mode).to(trainer.device)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            if cfg.losses.discriminator_weight > 0:
                disc = PatchDiscriminator(cfg.model.discriminator_channels, cfg.model.discriminator_layers)
                # (betas, wd as the generator's: the original builds both AdamW from optimizer.params)
                dopt = torch.optim.AdamW(disc.parameters(), lr=o.discriminator_learning_rate, betas=(o.beta1, o.beta2),
                                         weight_decay=o.weight_decay)
                disc, _ = trainer.add("discriminator", disc, dopt, ema=False)
                raw_disc = trainer.unit("discriminator").raw
                trainer.register("lecam", _LeCamState(loss_fn))   # its EMAs of D's logits resume with the run
        else:
            proxy = ProxyCodeLoss(cfg.losses.quantizer_weight)

        loader = ResumableLoader(source, cfg.training.per_gpu_batch_size, num_workers=cfg.dataset.params.num_workers_per_gpu,
                                 seed=cfg.training.seed, rank=trainer.rank, world_size=trainer.world_size, drop_last=True)
        monitor = CodebookMonitor(raw.codebook_size) if stage == "vqgan" or raw.config.quantize_mode == "vq" else None
        if monitor is not None:
            trainer.register("codebook_monitor", monitor)

        for batch in trainer.batches(loader):
            images = to_unit(batch["image"])
            step = trainer.global_step
            if stage == "stage1":
                with torch.no_grad():
                    codes = teacher.encode(images)
                logits, q = model(images)  # a legacy stage-1 TiTok decodes to logits over the teacher's codes
                loss, parts = proxy(logits, codes, q)
            elif stage == "tatitok":
                captions = drop_captions(captions_of(batch, len(images), cfg), cfg.model.text_guidance_dropout,
                                         cfg.training.seed, step, trainer.rank)
                recon, q = model(images, text(captions).to(images.device))
                loss, parts = loss_fn.generator_loss(images, recon, q, step, raw_disc)
            else:
                recon, q = model(images)
                # D's unwrapped module for the generator's term: a second DDP forward of D before its own backward
                # would confuse DDP's gradient reducer (its parameters get no gradient from this term)
                loss, parts = loss_fn.generator_loss(images, recon, q, step, raw_disc)
            trainer.backward(loss)
            trainer.optimizer_step("tokenizer")
            if disc is not None and loss_fn.gan_active(step):
                d_loss, d_parts = loss_fn.discriminator_loss(images, recon, step, disc)
                trainer.backward(d_loss)
                trainer.optimizer_step("discriminator")
                parts.update(d_parts)
            if monitor is not None and "indices" in q:
                monitor.update(q["indices"])
            if monitor is not None and (step + 1) % max(1, cfg.experiment.log_every) == 0:
                parts.update(monitor.report())
            trainer.log(loss=loss, **parts)

        out = Path(cfg.experiment.output_dir) / "final"
        if trainer.is_main:
            ema = trainer.ema("tokenizer")
            if ema is not None:
                with ema.swap(raw):
                    raw.save_pretrained(out)
            else:
                raw.save_pretrained(out)
            if text is not None:
                text.save(out)
        trainer.finish({"stage": stage, "final": str(out), "steps": trainer.global_step})
        print(f"{stage}: {trainer.global_step} steps -> {out}")
        return out


def captions_of(batch: dict, n: int, cfg) -> list[str]:
    """The batch's captions (TA-TiTok); shards without any caption are an error naming the data and the key."""
    caps = batch.get("caption")
    caps = [str(c) for c in caps] if caps is not None else []
    if len(caps) != n or not any(caps):
        raise ConfigError(f"dataset.params.train_shards_path_or_url={cfg.dataset.params.train_shards_path_or_url}: "
                          f"TA-TiTok needs a caption per image; the shards give none under "
                          f"dataset.params.caption_key={cfg.dataset.params.caption_key!r} (ours: json:caption, "
                          "img2dataset/DataComp: txt)")
    return caps


def drop_captions(captions: list[str], p: float, seed: int, step: int, rank: int = 0) -> list[str]:
    """model.text_guidance_dropout: each caption replaced by "" with probability p, drawn from (seed, step, rank)
    alone, so a resumed run drops the same captions as an uninterrupted one (distinct draws for ranks < 64)."""
    if p <= 0:
        return captions
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)
    keep = (torch.rand(len(captions), generator=g) >= p).tolist()
    return [c if k else "" for c, k in zip(captions, keep)]


class _LeCamState:
    """Checkpoints only the LeCam EMAs of a PixelLoss (not its frozen perceptual network)."""
    def __init__(self, loss: PixelLoss):
        self.loss = loss

    def state_dict(self) -> dict:
        return {"real": self.loss.ema_real_logits_mean.detach().cpu(), "fake": self.loss.ema_fake_logits_mean.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.loss.ema_real_logits_mean.copy_(state["real"])
        self.loss.ema_fake_logits_mean.copy_(state["fake"])


def _run_config(cfg) -> DictConfig:
    """The whole nested config plus the Trainer's flat options derived from it, saved together as config.yaml."""
    flat = OmegaConf.create(dataclasses.asdict(train_config(cfg)))
    full = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return OmegaConf.merge(full, flat)


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
