"""Train a toy noised CLIP (noised_clip.py) contrastively on the digit captions, so CLIP guidance and CLIP
fine-tuning run offline (the released clip_image_enc.pt / clip_text_enc.pt are the paper-scale pair).

Each image is noised to a random timestep of the base model's diffusion (x_t = q_sample(x0, t), the same
squaredcos_cap_v2 schedule and 1000 steps), the image encoder sees (x_t, t), the text encoder the caption; the
loss is the symmetric InfoNCE over the batch with a learnt temperature (CLIP's), with one fix for a caption set
this small: images whose captions are equal are all positives of each other (80 distinct captions, so a batch of
64 has repeats), the target row spread evenly over them.

    python projects/glide_finetune/train_clip.py scale=toy data_dir=data/toy/digits \
        tokenizer=results/toy/glide/tokenizer run_dir=results/toy/glide/clip
    python -m projects.glide_finetune.train_clip scale=tiny data_dir=/tmp/digits tokenizer=/tmp/tok run_dir=/tmp/c

Outputs in run_dir: clip.json (config with the learnt logit scale, tokenizer), clip_image_enc.safetensors,
clip_text_enc.safetensors (what noised_clip.load_clip reads; EMA weights when ema_decay > 0), eval.json (the
contrastive loss and caption-retrieval accuracy on the test split at fixed timesteps, before and after
training), checkpoints/ (resumed from by itself), metrics.jsonl, config.yaml.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from shared.config import cli, option, resolve
from shared.io import write_json
from shared.toy.dataset import COLOUR_NAMES, caption, load_arrays
from shared.train import TrainConfig, Trainer
from projects.glide_finetune.diffusion import create_diffusion
from projects.glide_finetune.noised_clip import CLIP_CONFIGS, NoisedCLIP, clip_tokenizer, create_clip, save_clip
from projects.glide_finetune.tokenizer import load_tokenizer


@dataclass
class Config(TrainConfig):
    scale: str = "toy"
    run_dir: str = "results/toy/glide/clip"
    data_dir: str = option("data/toy/digits", help="prepared digits (train/ and test/ splits)")
    tokenizer: str = option("results/toy/glide/tokenizer", help="GLIDE toy tokenizer folder (tokenizer.py)")
    arch: str = option("toy", choices=tuple(n for n in CLIP_CONFIGS if n != "released"))
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    init_temperature: float = option(0.07, help="CLIP's initial softmax temperature (logit scale 1/0.07)")
    max_logit_scale: float = option(100.0, help="CLIP's clamp on the learnt logit scale")
    eval_timesteps: List[int] = field(default_factory=lambda: [0, 250, 500, 750])
    eval_images: int = option(256, min=1, help="test images scored in eval.json")
    threads: int = 0


# toy: 800 steps, ~4 min of CPU at one thread (12 min wall on 2 cores at load ~10; README); tiny: seconds (tests)
PRESETS = {
    "tiny": {"arch": "tiny", "max_steps": 60, "batch_size": 32, "learning_rate": 3e-3, "ckpt_every": 30,
             "log_every": 5, "eval_images": 64, "eval_timesteps": [0, 500], "threads": 1, "progress": False},
    "toy": {"max_steps": 800, "lr_schedule": "cosine", "warmup_steps": 50, "min_lr_ratio": 0.1, "ema_decay": 0.99,
            "ckpt_every": 500, "log_every": 50, "threads": 2},
    "paper": {},  # the released pair is used at paper scale (load_clip("released")); no recipe was published
}


class Contrastive(nn.Module):
    """The noised CLIP plus CLIP's learnt log logit scale (training only; the export records its value)."""

    def __init__(self, clip: NoisedCLIP, init_temperature: float):
        super().__init__()
        self.clip = clip
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))

    def forward(self, x_t, t, tokens, lens, pair_ids, max_logit_scale: float) -> torch.Tensor:
        z_i = self.clip.image_encoder((x_t + 1) * 127.5, t)
        z_t = self.clip.text_encoder(tokens, lens)
        return contrastive_loss(z_i, z_t, pair_ids, self.log_scale.exp().clamp(max=max_logit_scale))


def contrastive_loss(z_image: torch.Tensor, z_text: torch.Tensor, pair_ids: torch.Tensor,
                     logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE; rows/columns with equal `pair_ids` (the same caption) share the target mass."""
    z_image = z_image / z_image.norm(dim=-1, keepdim=True)
    z_text = z_text / z_text.norm(dim=-1, keepdim=True)
    logits = logit_scale * z_image.float() @ z_text.float().T
    same = (pair_ids[:, None] == pair_ids[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def to_clip_size(images_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) in [-1, 1] (bicubic, antialiased, as the base's data shrinks)."""
    x = images_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp(-1, 1)


@torch.no_grad()
def evaluate(clip: NoisedCLIP, diffusion, images: torch.Tensor, pair_ids: torch.Tensor, timesteps, logit_scale: float,
             seed: int = 0):
    """Per timestep: contrastive loss over the images (one batch, at `logit_scale`) and top-1 retrieval of the
    right caption among all 80 digit captions (chance: 1/80)."""
    device = images.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    captions = [caption(d, c) for d in range(10) for c in COLOUR_NAMES]
    z_all = clip.text_embeddings(captions)
    z_batch = z_all[pair_ids]
    out = {}
    for t_val in timesteps:
        t = torch.full((len(images),), int(t_val), dtype=torch.long, device=device)
        x_t = diffusion.q_sample(images, t, torch.randn(images.shape, generator=gen).to(device))
        z_i = clip.image_embeddings(x_t, t)
        out[f"loss_t{t_val}"] = round(float(contrastive_loss(z_i, z_batch, pair_ids, logit_scale)), 4)
        out[f"retrieval_t{t_val}"] = round(float(((z_i @ z_all.T).argmax(1) == pair_ids).float().mean()), 4)
    return out


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = Path(cfg.data_dir)
    tok = load_tokenizer(cfg.tokenizer)  # fails early, naming the folder, if it is not a tokenizer
    arch = CLIP_CONFIGS[cfg.arch]
    images, digits, colours = load_arrays(data / "train")
    x_train = to_clip_size(torch.from_numpy(images), arch.image_size)
    ids_train = torch.from_numpy(digits * len(COLOUR_NAMES) + colours).long()
    test_images, test_digits, test_colours = load_arrays(data / "test")
    x_test = to_clip_size(torch.from_numpy(test_images[:cfg.eval_images]), arch.image_size)
    ids_test = torch.from_numpy(test_digits[:cfg.eval_images] * len(COLOUR_NAMES)
                                + test_colours[:cfg.eval_images]).long()
    captions = [caption(d, c) for d in range(10) for c in COLOUR_NAMES]

    trainer = Trainer(cfg, project_name="glide_finetune_clip")
    torch.manual_seed(cfg.seed)
    clip = create_clip(arch, tokenizer=clip_tokenizer(cfg.tokenizer), n_vocab=tok.n_vocab)
    model = Contrastive(clip, cfg.init_temperature)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    model, _ = trainer.add("clip", model, opt)
    raw: Contrastive = trainer.unit("clip").raw
    dev = trainer.device
    diffusion = create_diffusion({"diffusion_steps": arch.n_timesteps, "noise_schedule": arch.beta_schedule}, "")
    tokens_all, lens_all = clip.tokenizer(captions, arch.max_text_len)
    loader = trainer.loader((x_train, ids_train), cfg.batch_size)
    gen = trainer.generator("noise", cfg.seed * 1000 + 7 + trainer.rank, device=dev)
    # the initial weights depend on the seed only, so this is the same on a resumed run
    before = evaluate(raw.clip.eval(), diffusion, x_test.to(dev), ids_test.to(dev), cfg.eval_timesteps,
                      1 / cfg.init_temperature, cfg.seed)
    raw.clip.train()

    for x0, ids in trainer.batches(loader):
        t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), generator=gen, device=dev)
        x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=gen, device=dev))
        loss = model(x_t, t, tokens_all.to(dev)[ids], lens_all.to(dev)[ids], ids, cfg.max_logit_scale)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss, logit_scale=raw.log_scale.exp())

    out = Path(cfg.run_dir)
    summary = {"steps": trainer.global_step}
    if trainer.is_main:
        ema = trainer.ema("clip")
        with (ema.swap(raw) if ema else contextlib.nullcontext()):
            scale = float(raw.log_scale.detach().exp().clamp(max=cfg.max_logit_scale))
            final = create_clip(arch, tokenizer=clip.tokenizer, n_vocab=tok.n_vocab, logit_scale=scale)
            final.load_state_dict(raw.clip.state_dict())
            after = evaluate(final.eval(), diffusion, x_test.to(dev), ids_test.to(dev), cfg.eval_timesteps, scale,
                             cfg.seed)
            save_clip(final, out, cfg.tokenizer, {"step": trainer.global_step, "ema": ema is not None})
        summary.update(logit_scale=round(scale, 3), before=before, after=after)
        write_json(out / "eval.json", summary)
    trainer.finish(summary)
    if trainer.is_main:
        print(f"noised CLIP ({cfg.arch}): {trainer.global_step} steps -> {out}; eval {summary.get('after')}")
    return summary


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
