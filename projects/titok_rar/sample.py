"""Sample a token generator (MaskGIT, RAR, MaskGen) and decode with its tokenizer: an image folder plus the `.npz`
OpenAI's ADM evaluator reads (arr_0: uint8 N x H x W x 3, arr_1: labels), sharded with per-sample seeds.

    python projects/titok_rar/sample.py projects/titok_rar/configs/generator/toy_rar.yaml \
        checkpoint=results/toy/titok_rar/generators/rar_annealed tokenizer=<tokenizer folder> out_dir=...
    torchrun --nproc_per_node=8 -m projects.titok_rar.sample config=projects/titok_rar/configs/generator/rar.yaml \
        experiment.output_dir=rar_b experiment.generator_checkpoint=rar_b.bin \
        experiment.tokenizer_checkpoint=maskgit-vqgan-imagenet-f16-256.bin model.generator.hidden_size=768 \
        model.generator.guidance_scale=16.0 model.generator.guidance_scale_pow=2.75      (as sample_imagenet_rar.py)

What is sampled: `checkpoint=` (a train_generator run dir or its final/ folder: architecture from generator.yaml), or
a released weights file (`experiment.generator_checkpoint`, architecture from `generator=` and model.generator.*).
Sampling settings always come from this step's config (model.generator.* for MaskGIT/RAR, model.maskgen.* for
MaskGen), so one trained model can be swept over guidance. RAR samples with the KV cache unless kv_cache=false.
Class-balanced: sample i has class i % num_classes (per_class x num_classes images; ImageNet: 50 x 1000); MaskGen
takes prompt i % P (prompts= file, or the 80 digits captions). Sample i uses seed `seed + i` for all its noise, so
a shard re-run alone gives the same images. Shards: num_shards/shard_index (default SLURM array task, or torchrun's
RANK/WORLD_SIZE); sample i belongs to shard i % num_shards; existing images are kept. Writes <i:06d>.png and
<i:06d>.txt (its prompt: the digits caption of the class at toy scale, read by prompt accuracy), shard_<k>.json
(timing: images/s, NFE), and when every shard is done samples.npz and samples.json.
A TA-TiTok tokenizer decodes MaskGen's tokens with each prompt's text guidance: the frozen text encoder saved beside
it (text_encoder.json in the tokenizer folder, from train_tokenizer.py model.type=tatitok; the toy encoder at
tiny/toy) when present, else the MaskGen's own open_clip encoder (the paper's: one CLIP serves both).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.config import ConfigError, cli, resolve, save_resolved
from shared.io import atomic_path, read_json, write_json
from shared.launch import sample_shard, step_device
from projects.titok_rar.generator_config import Config, check, model_section
from projects.titok_rar.schema import with_config_file


@dataclass
class SampleConfig(Config):
    checkpoint: str = ""          # generator folder / run dir; '' = experiment.generator_checkpoint
    tokenizer: str = ""           # tokenizer folder or file; '' = experiment.tokenizer_checkpoint
    out_dir: str = ""             # '' = experiment.output_dir
    per_class: int = 50           # class-conditional: images per class
    num_classes: int = 0          # 0 = model.generator.condition_num_classes
    num_images: int = 0           # 0 = per_class x num_classes (MaskGen: per_class x prompts)
    prompts: str = ""             # MaskGen: a text file, one prompt per line; '' = the digits captions
    seed: int = 0
    batch_size: int = 64
    num_shards: int = 0           # 0 = from SLURM_ARRAY_TASK_COUNT / WORLD_SIZE, else 1
    shard_index: int = -1         # -1 = from SLURM_ARRAY_TASK_ID / RANK, else 0
    kv_cache: bool = True         # RAR
    write_npz: bool = True
    device: str = "auto"          # auto = cuda:<LOCAL_RANK> when available
    released: str = ""            # rar_b..rar_xxl | titok_l32/b64/s128: that release's architecture + sampling


PRESETS = {"tiny": {"per_class": 1, "batch_size": 16, "threads": 1}, "toy": {"threads": 1},
           "paper": {"batch_size": 125}}


def apply_released(cfg):
    """`released=<name>`: the architecture and sampling settings of a released generator (rar.RAR_SIZES from
    README_RAR.md; maskgit.RELEASED from configs/infer/titok_*.yaml), over whatever the config says."""
    from omegaconf import OmegaConf

    from projects.titok_rar.maskgit import RELEASED
    from projects.titok_rar.rar import RAR_SIZES

    if cfg.released in RAR_SIZES:
        g = {k: v for k, v in RAR_SIZES[cfg.released].items() if k != "paper_fid"}
        over = {"generator": "rar", "model": {"vq_model": {"codebook_size": 1024, "num_latent_tokens": 256},
                                              "generator": {**g, "image_seq_len": 256}}}
    elif cfg.released in RELEASED:
        g = RELEASED[cfg.released]
        over = {"generator": "maskgit", "model": {"vq_model": {"codebook_size": 4096,
                                                               "num_latent_tokens": g["image_seq_len"]},
                                                  "generator": dict(g)}}
    else:
        raise ConfigError(f"released={cfg.released!r}; known: {', '.join([*RAR_SIZES, *RELEASED])}")
    return OmegaConf.merge(cfg, over)



def load_model(cfg, device):
    from projects.titok_rar.generator_io import load_generator

    path = cfg.checkpoint or cfg.experiment.generator_checkpoint
    if not path:
        raise ConfigError("checkpoint: the generator to sample (a train_generator run dir, or "
                          "experiment.generator_checkpoint=<released weights file>)")
    if not Path(path).exists():
        raise ConfigError(f"checkpoint={path}: not found")
    kw = {}
    if Path(path).is_file():  # a released file: the architecture is this config's
        g = cfg.model.vq_model
        kw = {"kind": cfg.generator, "model_cfg": model_section(cfg, g.codebook_size, g.num_latent_tokens)}
        if cfg.generator == "maskgen":
            te = cfg.model.text_encoder
            kw["text_encoder"] = {"kind": te.kind, "model_name": te.model_name, "pretrained": te.pretrained}
    return load_generator(path, device=device, **kw)


def tokenizer_path(cfg) -> str:
    path = cfg.tokenizer or cfg.experiment.tokenizer_checkpoint or tokenizer_of_training(cfg)
    if not path:
        raise ConfigError("tokenizer: the tokenizer that decodes the tokens (folder or released file)")
    if not Path(path).exists():
        raise ConfigError(f"tokenizer={path}: not found")
    return str(path)


def load_tok(cfg, device):
    from projects.titok_rar.image_tokenizers import load_tokenizer

    return load_tokenizer(tokenizer_path(cfg)).to(device).eval()


def tokenizer_guidance(path: str, tok, loaded, device):
    """What a TA-TiTok decodes with (captions -> (B, L, D)): its own text guidance (text_guidance.load_text_guidance)
    when its folder has text_encoder.json, checked against its decoder's text input, else the generator's open_clip
    encoder's; None for other tokenizers."""
    from projects.titok_rar.text_guidance import SPEC_FILE, load_text_guidance_for
    from projects.titok_rar.titok import TATiTok

    if not isinstance(tok, TATiTok):
        return None
    if not (Path(path) / SPEC_FILE).is_file():
        guide = getattr(loaded.text_encoder, "decoder_guidance", None)
        if guide is None:
            raise ConfigError(f"tokenizer={path} is a TA-TiTok: decoding needs its text guidance, from {SPEC_FILE} in "
                              "the tokenizer folder (train_tokenizer.py model.type=tatitok writes it) or from the "
                              "generator's open_clip text encoder (model.text_encoder.kind=open_clip)")
        return guide
    text = load_text_guidance_for(tok, path, "tokenizer")
    return text.to(device)


def tokenizer_of_training(cfg) -> str:
    """The tokenizer recorded in the meta.json of the token folder the generator was trained from."""
    from omegaconf import OmegaConf

    from projects.titok_rar.generator_io import _folder

    folder = _folder(Path(cfg.checkpoint)) if cfg.checkpoint and Path(cfg.checkpoint).is_dir() else None
    if folder is None:
        return ""
    tokens = OmegaConf.load(folder / "generator.yaml").get("trained_from", "")
    meta = Path(tokens) / "meta.json" if tokens else None
    return str(read_json(meta).get("tokenizer", "")) if meta is not None and meta.is_file() else ""


def prompts_of(cfg) -> list[str]:
    if cfg.prompts:
        lines = [ln.strip() for ln in Path(cfg.prompts).read_text().splitlines() if ln.strip()]
        if not lines:
            raise ConfigError(f"prompts={cfg.prompts}: no prompts in the file")
        return lines
    from projects.titok_rar.generator_common import toy_caption
    return [toy_caption(c) for c in range(80)]


def class_text(label: int, num_classes: int) -> str:
    """The caption prompt accuracy reads: the digits caption at toy scale (80 classes), else the class id."""
    if num_classes == 80:
        from projects.titok_rar.generator_common import toy_caption
        return toy_caption(label)
    return f"class {label}"


def sampling_settings(kind: str, cfg, model) -> tuple[dict, int]:
    """generate() kwargs and NFE (network passes per sample; a guided pass doubles the batch, not the count)."""
    if kind == "maskgit":
        from projects.titok_rar.maskgit import sampling_kwargs
        kw = sampling_kwargs(cfg)
        return kw, kw["num_sample_steps"]
    if kind == "rar":
        from projects.titok_rar.rar import sampling_kwargs
        return {**sampling_kwargs(cfg), "kv_cache": bool(cfg.kv_cache)}, model.image_seq_len
    from projects.titok_rar.maskgen import sampling_kwargs
    kw = sampling_kwargs(cfg)
    return kw, kw["num_sample_steps"]


@torch.no_grad()
def generate_batch(loaded, kind, kw, labels, texts, seeds, device):
    model = loaded.model
    if kind == "maskgen":
        text = loaded.text_encoder
        hidden, pooled = text(texts)
        null_hidden, null_pooled = text([""])
        return model.generate(hidden, pooled, null_hidden, null_pooled, seeds=seeds, **kw)
    return model.generate(torch.tensor(labels, device=device), seeds=seeds, **kw)


def decode(tok, tokens, texts, guidance=None):
    """Tokens -> images; a TA-TiTok with the prompts' text guidance (tokenizer_guidance)."""
    if guidance is not None:
        return tok.decode_tokens(tokens, guidance(texts).to(tokens.device))
    return tok.decode_tokens(tokens)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def write_npz(out: Path, n: int, labels: list[int]) -> Path:
    """All images into ADM's format; the array is assembled in a memory map, so 50k x 256^2 fits anywhere."""
    from PIL import Image

    first = np.asarray(Image.open(out / f"{0:06d}.png").convert("RGB"))
    tmp = out / ".samples_arr0.npy"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *first.shape))
    for i in range(n):
        arr[i] = np.asarray(Image.open(out / f"{i:06d}.png").convert("RGB"))
    arr.flush()
    with atomic_path(out / "samples.npz") as t:
        with open(t, "wb") as f:
            np.savez(f, arr_0=arr, arr_1=np.asarray(labels, dtype=np.int64))
    del arr
    tmp.unlink(missing_ok=True)
    return out / "samples.npz"


def main(cfg=None):
    from PIL import Image

    cfg = resolve(SampleConfig, with_config_file(cfg), PRESETS)
    if cfg.released:
        cfg = apply_released(cfg)
    check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = step_device(cfg.device)
    out = Path(cfg.out_dir or cfg.experiment.output_dir)
    loaded = load_model(cfg, device)
    kind = loaded.kind
    tok_path = tokenizer_path(cfg)
    tok = load_tok(cfg, device)
    guidance = tokenizer_guidance(tok_path, tok, loaded, device)
    # recorded in samples.json: what a TA-TiTok decoded with (its own encoder's spec, or the generator's CLIP)
    guidance_source = (dict(guidance.spec, folder=tok_path) if hasattr(guidance, "spec") else
                       "generator's open_clip text encoder" if guidance is not None else None)
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be good
    kw, nfe = sampling_settings(kind, cfg, loaded.model)
    if kind == "maskgen":
        prompts = prompts_of(cfg)
        n = cfg.num_images or cfg.per_class * len(prompts)
        labels = [i % len(prompts) for i in range(n)]
        texts = [prompts[i % len(prompts)] for i in range(n)]
    else:
        classes = cfg.num_classes or loaded.model.condition_num_classes
        n = cfg.num_images or cfg.per_class * classes
        labels = [i % classes for i in range(n)]
        texts = [class_text(c, classes) for c in labels]
    k, shards = sample_shard(cfg.num_shards, cfg.shard_index)
    mine = [i for i in range(k, n, shards) if not (out / f"{i:06d}.png").is_file()]
    if k == 0:
        save_resolved(cfg, out, name="sample_config.yaml")
    gen_seconds, made = 0.0, 0
    for b in range(0, len(mine), cfg.batch_size):
        idx = mine[b:b + cfg.batch_size]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        tokens = generate_batch(loaded, kind, kw, [labels[i] for i in idx], [texts[i] for i in idx],
                                [cfg.seed + i for i in idx], device)
        images = decode(tok, tokens, [texts[i] for i in idx], guidance)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        gen_seconds += time.perf_counter() - t0
        made += len(idx)
        for i, im in zip(idx, to_uint8(images)):
            (out / f"{i:06d}.txt").write_text(texts[i] + "\n")
            with atomic_path(out / f"{i:06d}.png") as tmp:
                Image.fromarray(im).save(tmp, format="PNG")
    write_json(out / f"shard_{k}.json", {"images": made, "seconds": gen_seconds,
                                         "images_per_sec": made / gen_seconds if gen_seconds else None,
                                         "batch_size": cfg.batch_size, "device": str(device)})
    done = sum((out / f"{i:06d}.png").is_file() for i in range(n))
    if done == n:  # whichever shard sees the set complete writes the summaries (atomically)
        rates = [read_json(p) for p in sorted(out.glob("shard_*.json"))]
        timed = [r for r in rates if r.get("seconds")]
        ips = sum(r["images"] for r in timed) / sum(r["seconds"] for r in timed) if timed else None
        if cfg.write_npz:
            write_npz(out, n, labels)
        write_json(out / "samples.json", {
            "generator": kind, "checkpoint": cfg.checkpoint or cfg.experiment.generator_checkpoint,
            "tokenizer": tok_path, "num_images": n, "seed": cfg.seed,
            "text_guidance": guidance_source,
            "nfe": nfe, "images_per_sec": ips, "sampling": {k_: v for k_, v in kw.items()}, "scale": cfg.scale,
            # the leaderboard's columns: the generator's size (not the tokenizer's), time per image with decoding
            "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "seconds_per_image": 1.0 / ips if ips else None})
    print(f"shard {k}/{shards}: {made} new images ({made / gen_seconds if gen_seconds else 0:.2f} img/s); "
          f"{done}/{n} present in {out}")
    return out


if __name__ == "__main__":
    cli(main, SampleConfig, PRESETS, __doc__)
