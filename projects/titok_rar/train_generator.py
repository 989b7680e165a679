"""Train a token generator from pretokenized data: MaskGIT (ImageBert/UViTBert), RAR, or MaskGen.

    python projects/titok_rar/train_generator.py config=projects/titok_rar/configs/generator/rar.yaml \
        generator=rar dataset.params.pretokenization=data/paper/titok_rar/tokens/maskgit_vqgan \
        experiment.output_dir=results/paper/titok_rar/generators/rar_b model.generator.hidden_size=768
    python -m projects.titok_rar.train_generator projects/titok_rar/configs/generator/toy_rar.yaml order=raster \
        dataset.params.pretokenization=data/toy/titok_rar/tokens/vqgan experiment.output_dir=runs/rar_raster
    accelerate launch / torchrun --nproc_per_node 8 -m projects.titok_rar.train_generator config=...   (DDP)

What the original runs as scripts/train_maskgit.py, scripts/train_rar.py and scripts/train_maskgen.py is one step
here, chosen by `generator=maskgit|rar|maskgen` (STEPS); the config keeps the original's shape and names
(generator_config.py). Data: a token folder (token_data.py) given as dataset.params.pretokenization; with the
ten-crop option each sample takes one random crop per step. Class labels are dropped to the null class with
model.generator.class_label_dropout (MaskGIT, RAR), captions to the empty caption with model.maskgen.text_drop_prob.
RAR's order: `order=annealed` (the paper: random-order probability 1 until randomness_anneal_start, linearly to 0 at
randomness_anneal_end), `order=raster` or `order=random` (the ablation's fixed orders).

Outputs in experiment.output_dir: config.yaml, metrics.jsonl (loss, correct_tokens, lr, grad_norm, random_ratio),
checkpoints/ (resumed from automatically; SIGUSR2/SIGTERM -> save and exit 75), final/generator.safetensors (EMA
weights when training.use_ema, the released checkpoints' key names) + final/generator.yaml (how to rebuild and
sample it) [+ final/text_encoder.safetensors for MaskGen's toy encoder].
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from shared.config import ConfigError, cli, resolve, save_resolved
from shared.train.seed import seed_everything
from shared.train.trainer import Trainer
from projects.titok_rar import generator_io
from projects.titok_rar.generator_common import MLMLoss, mask_input_tokens
from projects.titok_rar.generator_config import Config, check, model_section
from projects.titok_rar.schema import train_config, with_config_file
from projects.titok_rar.token_data import load_tokens

# Scale presets shrink only what the YAML recipes (configs/generator/*.yaml) leave to the scale.
PRESETS = {
    "tiny": {"training": {"max_train_steps": 4, "per_gpu_batch_size": 8, "mixed_precision": "no"},
             "experiment": {"log_every": 2, "save_every": 2}, "threads": 1},
    "toy": {"training": {"mixed_precision": "no"}, "threads": 1},
    "paper": {},
}


def no_decay(name: str, p: nn.Parameter) -> bool:
    """The original's exclusion from weight decay (utils/train_utils.py create_optimizer): biases, norms,
    embeddings and other 1-d parameters."""
    return p.ndim < 2 or any(s in name for s in ("ln", "bias", "embed", "norm", "gamma", "mask_token",
                                                  "latent_tokens", "cls_token"))


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    o = cfg.optimizer.params
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": o.weight_decay},
              {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.learning_rate, betas=(o.beta1, o.beta2))


class MaskGenWithText(nn.Module):
    """MaskGen and its text encoder as one trained unit (toy: the encoder learns too; paper: it is frozen)."""

    def __init__(self, maskgen: nn.Module, text: nn.Module, train_text: bool):
        super().__init__()
        self.maskgen, self.text, self.train_text = maskgen, text, train_text

    def forward(self, tokens, captions):
        # one forward through the (DDP-wrapped) unit, so every trained weight's gradient is synchronised
        with torch.set_grad_enabled(self.train_text and torch.is_grad_enabled()):
            hidden, pooled = self.text(captions)
            null_hidden, null_pooled = self.text([""])
        hidden, pooled = self.maskgen.drop_text(hidden, pooled, null_hidden, null_pooled)
        return self.maskgen(tokens, hidden, pooled)


# ---- one class per generator: build, loss of a batch, exported weights ----------------------------------
class MaskGITStep:
    kind = "maskgit"

    def __init__(self, cfg, data):
        from projects.titok_rar.maskgit import build_maskgit

        self.cfg = cfg
        self.model_cfg = model_section(cfg, data.codebook_size, data.num_tokens)
        self.model = build_maskgit(self.model_cfg)
        self.loss_fn = MLMLoss(cfg.losses.label_smoothing, cfg.losses.loss_weight_unmasked_token)

    def loss(self, model, batch, step):
        tokens = batch["tokens"]
        masked, masks = mask_input_tokens(tokens, self.model.mask_token_id)
        logits = model(masked, batch["labels"], cond_drop_prob=self.cfg.model.generator.class_label_dropout)
        return self.loss_fn(logits, tokens, masks)

    def export(self, sd):
        return {"generator": sd}


class RARStep:
    kind = "rar"

    def __init__(self, cfg, data):
        from projects.titok_rar.rar import RAR, ARLoss

        self.cfg = cfg
        self.model_cfg = model_section(cfg, data.codebook_size, data.num_tokens)
        self.model = RAR(self.model_cfg)
        self.loss_fn = ARLoss()

    def random_ratio(self, step: int) -> float:
        from projects.titok_rar.rar import random_ratio

        g = self.cfg.model.generator
        if self.cfg.order == "raster":
            return 0.0
        if self.cfg.order == "random":
            return 1.0
        return random_ratio(step, g.randomness_anneal_start, g.randomness_anneal_end)

    def loss(self, model, batch, step):
        ratio = self.random_ratio(step)
        self.model.set_random_ratio(ratio)  # the unwrapped module: DDP forwards to it
        cond = self.model.preprocess_condition(batch["labels"], self.cfg.model.generator.class_label_dropout)
        logits, labels = model(batch["tokens"], cond, return_labels=True)
        loss, logs = self.loss_fn(logits, labels)
        return loss, {**logs, "random_ratio": ratio}

    def export(self, sd):
        return {"generator": sd}


class MaskGenStep:
    kind = "maskgen"

    def __init__(self, cfg, data):
        from projects.titok_rar.maskgen import MaskGen, build_text_encoder

        if data.captions is None:
            raise ConfigError(f"{data.folder}: MaskGen needs captions.json in the token folder")
        self.cfg, self.captions = cfg, data.captions
        te = OmegaConf.to_container(cfg.model.text_encoder)
        spec = {"kind": te["kind"]}
        spec.update({k: te[k] for k in ("width", "layers", "heads", "context_length")} if te["kind"] == "toy"
                    else {k: te[k] for k in ("model_name", "pretrained")})
        text = build_text_encoder(spec)
        text.requires_grad_(bool(te["train"]))
        self.train_text = bool(te["train"])
        self.text_spec = spec
        self.model_cfg = model_section(cfg, data.codebook_size, data.num_tokens, text_width=text.width)
        self.model = MaskGenWithText(MaskGen(self.model_cfg), text, self.train_text)
        self.loss_fn = MLMLoss(cfg.losses.label_smoothing, cfg.losses.loss_weight_unmasked_token)

    def loss(self, model, batch, step):
        captions = [self.captions[i] for i in batch["index"].tolist()]
        logits, masks = model(batch["tokens"], captions)
        return self.loss_fn(logits, batch["tokens"], masks)

    def export(self, sd):
        out = {"generator": {k[len("maskgen."):]: v for k, v in sd.items() if k.startswith("maskgen.")}}
        if self.text_spec["kind"] == "toy":
            out["text_encoder"] = {k[len("text."):]: v for k, v in sd.items() if k.startswith("text.")}
        return out


STEPS = {"maskgit": MaskGITStep, "rar": RARStep, "maskgen": MaskGenStep}


def token_tensors(data, num_classes: int | None) -> dict:
    """The token folder as tensors (memory-mapped where numpy allows), labels checked against the classes."""
    with warnings.catch_warnings():  # torch warns that the memory map is read-only; nothing writes to it
        warnings.simplefilter("ignore", UserWarning)
        tokens = torch.from_numpy(np.asarray(data.tokens).astype(np.int64, copy=False))
    labels = torch.from_numpy(np.array(data.labels, dtype=np.int64))
    if num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(f"{data.folder / 'labels.npy'}: labels in [{int(labels.min())}, {int(labels.max())}] but "
                          f"model.generator.condition_num_classes={num_classes}")
    return {"tokens": tokens, "labels": labels, "index": torch.arange(len(labels))}


def main(cfg=None):
    cfg = resolve(Config, with_config_file(cfg), PRESETS)
    check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not cfg.dataset.params.pretokenization:
        raise ConfigError("dataset.params.pretokenization: the token folder to train from (tokens.npy, labels.npy, "
                          "meta.json; projects/titok_rar/pretokenize.py)")
    data = load_tokens(cfg.dataset.params.pretokenization)
    # built before the Trainer (which seeds in its __init__): seeded here, so the initial weights do not depend on
    # what the process drew before (a resumed or in-process run would otherwise differ from the checkpointed one)
    seed_everything(cfg.training.seed)
    step_obj = STEPS[cfg.generator](cfg, data)
    classes = None if cfg.generator == "maskgen" else int(cfg.model.generator.condition_num_classes)
    tensors = token_tensors(data, classes)
    if cfg.experiment.init_weight:
        generator_io.load_weights_into(step_obj, cfg.experiment.init_weight)
    if cfg.training.enable_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    trainer = Trainer(train_config(cfg))
    if trainer.is_main:
        save_resolved(cfg, cfg.experiment.output_dir)
    trainable_only = cfg.generator == "maskgen" and not step_obj.train_text
    model, _ = trainer.add("generator", step_obj.model, make_optimizer(step_obj.model, cfg),
                           trainable_only=trainable_only)
    loader = trainer.loader(tensors, cfg.training.per_gpu_batch_size)
    crop_gen = trainer.generator("crops", cfg.training.seed + 17 * trainer.rank)
    model.train()
    for batch in trainer.batches(loader):
        if batch["tokens"].dim() == 3:  # ten-crop tokens: one crop per sample and step
            pick = torch.randint(batch["tokens"].shape[1], (batch["tokens"].shape[0],), generator=crop_gen,
                                 device=crop_gen.device).to(batch["tokens"].device)
            batch["tokens"] = batch["tokens"][torch.arange(len(pick), device=pick.device), pick]
        loss, logs = step_obj.loss(model, batch, trainer.global_step)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(**logs)
    sd = trainer.accelerator.get_state_dict(model)
    ema = trainer.ema("generator")
    if ema is not None and cfg.training.use_ema:
        sd = {**sd, **ema.tensors()}
    final = Path(cfg.experiment.output_dir) / "final"
    if trainer.is_main:
        generator_io.save_generator(final, cfg.generator, step_obj.model_cfg, step_obj.export(sd), cfg,
                                    text_encoder=getattr(step_obj, "text_spec", None), step=trainer.global_step)
    trainer.finish({"final_step": trainer.global_step})
    return final


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
