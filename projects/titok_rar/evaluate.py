"""Reconstruction quality of a tokenizer: rFID / FD, PSNR, SSIM, codebook usage, tokens per image, speed.

    python projects/titok_rar/evaluate.py tokenizer=results/toy/titok_rar/k16/stage2/final \\
        data=data/toy/titok_rar/digits/shards/test experiment=k16_stage2 scale=toy \\
        extractor=digits:results/toy/digits_features/features.safetensors
    python projects/titok_rar/evaluate.py tokenizer=downloads/titok_rar/titok_l32 scale=paper \\
        data=data/paper/titok_rar/shards/val experiment=titok_l32 image_size=256    # rFID 2.21 in the paper
    python projects/titok_rar/evaluate.py tokenizer=results/toy/titok_rar/tatitok_k16/single/final \\
        data=data/toy/titok_rar/digits/shards/test experiment=tatitok_k16 scale=toy      # TA-TiTok: with captions

Every image of `data` is encoded and decoded once (centre crop, `image_size`); originals and reconstructions are
written as PNGs under out_dir/{originals,recon}/<key>.png and scored by shared.evaluate (the same code as every
other table here): `rfid` = Frechet distance between the reconstructions' and the originals' features (Inception at
paper scale, the ADM protocol's 50k ImageNet val images; the digits CNN at toy scale), PSNR / SSIM paired by
file name, codebook usage and perplexity over all tokens. Added: tokens per image, encode and decode images per
second (wall clock, this device, batch_size), `token_swap_change` (does the decode follow the tokens? 1 = yes,
0 = it ignores them; first batch; token_swap_change()), and a grid (originals above reconstructions).
A legacy stage-1 TiTok decodes through the VQGAN (`vqgan=`); a VAE TiTok is scored without codebook metrics.
A TA-TiTok decodes each image with its own caption's text guidance (text_guidance.load_text_guidance: the frozen text
encoder saved beside the tokenizer by train_tokenizer.py, text_encoder.json in the tokenizer folder, or in the folder
`text_guidance=`), captions from the shards' `caption_key`; the text encoding counts as decode time, since decoding
cannot happen without it. The metrics are TiTok's (the guidance changes the decoder's input, not what is measured).
Output: out (default results/<scale>/titok_rar/eval/<experiment>.json) + grid.png beside it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.config import ConfigError, cli, resolve, save_resolved
from shared.data import ResumableLoader
from shared.io import atomic_dir, write_json
from projects.titok_rar.data import image_source, to_unit
from projects.titok_rar.image_tokenizers import TATiTok, load_tokenizer


@dataclass
class Config:
    tokenizer: str = ""
    data: str = "data/toy/titok_rar/digits/shards/test"
    experiment: str = ""
    checkpoint: str = ""          # the row's checkpoint name in the JSON; '' = the tokenizer folder (seeds: a name
                                  # ending _seed<N>, so shared/tables.py joins a run's seeds as one row)
    scale: str = "toy"
    image_size: int = 32
    vqgan: str = ""               # legacy stage-1 TiTok: the VQGAN that decodes its predicted codes
    text_guidance: str = ""       # TA-TiTok: folder with text_encoder.json; '' = the tokenizer folder
    caption_key: str = "json:caption"   # TA-TiTok: where shards keep captions (img2dataset / DataComp: txt)
    extractor: str = "digits:results/toy/digits_features/features.safetensors"
    metrics: str = "rfid,psnr,ssim,codebook_usage,codebook_perplexity"
    max_images: int = 0           # 0 = all
    batch_size: int = 64
    out: str = ""
    out_dir: str = ""             # images; '' = beside `out`, in <experiment>/
    grid: int = 8                 # images in the grid (one row of originals, one of reconstructions)
    device: str = "cpu"
    threads: int = 0
    max_skip_rate: float = 0.05   # stop when more than this share of the inputs is unreadable (shared.data loader)


PRESETS = {
    "tiny": {"max_images": 32, "batch_size": 16},
    "toy": {},
    "paper": {"image_size": 256, "batch_size": 50,
              "extractor": "inception:downloads/inception/inception-2015-12-05.pt"},
}


def _save_png(x: torch.Tensor, path: Path) -> None:
    from PIL import Image
    arr = (x.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path)


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def load_guidance(cfg, tok):
    """A TA-TiTok's text guidance (text_guidance.py), checked against the decoder's text input; None for others."""
    if not isinstance(tok, TATiTok):
        return None
    from projects.titok_rar.text_guidance import load_text_guidance_for
    key, folder = ("text_guidance", cfg.text_guidance) if cfg.text_guidance else ("tokenizer", cfg.tokenizer)
    text = load_text_guidance_for(tok, folder, key)
    return text.to(cfg.device)


def captions_of(cfg, batch: dict, n: int) -> list[str]:
    caps = batch.get("caption")
    caps = [str(c) for c in caps][:n] if caps is not None else []
    if len(caps) != n or not any(caps):
        raise ValueError(f"data={cfg.data}: a TA-TiTok decodes with each image's caption; the data gives none under "
                         f"caption_key={cfg.caption_key!r} (ours: json:caption, img2dataset/DataComp: txt; image "
                         "folders: <name>.txt or metadata.jsonl)")
    return caps


def _decode(tok, tokens, vqgan=None, guidance=None):
    if vqgan is not None:
        return tok.decode_with_vqgan(tokens, vqgan)
    if guidance is not None:
        return tok.decode_tokens(tokens, guidance)
    return tok.decode_tokens(tokens)


@torch.no_grad()
def token_swap_change(tok, x, tokens, rec, vqgan=None, guidance=None) -> float:
    """Does the decoder use its tokens? Each image's tokens are swapped for the next image's in the batch (its own
    caption guidance kept) and decoded: the mean squared change of the decode, over the mean squared difference of
    the two originals. ~1: the decode follows the tokens; 0: it ignores them (a TA-TiTok whose decoder draws the
    caption alone, as the toy one was found to: posterior collapse, which rFID and PSNR cannot show)."""
    swapped = _decode(tok, tokens.roll(1, 0), vqgan, guidance).clamp(0, 1)
    denom = (x - x.roll(1, 0)).pow(2).mean()
    return float((swapped - rec.clamp(0, 1)).pow(2).mean() / denom.clamp_min(1e-12))


def reconstruct(cfg, tok, vqgan, images_dir: Path, orig_dir: Path, skips: dict | None = None, text=None,
                swap: list | None = None):
    """Encode/decode every image; returns (codes or None, timings, count, grid tensors). The loader skips and
    counts unreadable inputs (shared.data); their counts go into `skips` (SkipCounter.to_dict()) when given.
    `text` (TA-TiTok's guidance): each image is decoded with its own caption's. `swap` (a list) receives
    (token_swap_change, pairs) of the first batch of at least 2 images."""
    src = image_source(cfg.data, cfg.image_size, caption_key=cfg.caption_key)
    if hasattr(src, "allow_empty_caption") and text is None:  # an image folder: TiTok needs no captions
        src.allow_empty_caption = True
    loader = ResumableLoader(src, cfg.batch_size, shuffle=False, drop_last=False, rank=0, world_size=1,
                             max_skip_rate=cfg.max_skip_rate)
    dev = torch.device(cfg.device)
    codes, t_enc, t_dec, n, grid = [], 0.0, 0.0, 0, ([], [])
    continuous = getattr(tok, "is_continuous", False)
    for batch in loader:
        x = to_unit(batch["image"]).to(dev)
        if cfg.max_images:
            x = x[: cfg.max_images - n]
        if x.shape[0] == 0:
            break
        _sync(dev)
        t0 = time.perf_counter()
        tokens = tok.encode_latents(x) if continuous else tok.encode(x)
        _sync(dev)
        t1 = time.perf_counter()
        guidance = text(captions_of(cfg, batch, x.shape[0])).to(dev) if text is not None else None
        rec = _decode(tok, tokens, vqgan, guidance)
        _sync(dev)
        t_enc, t_dec = t_enc + (t1 - t0), t_dec + (time.perf_counter() - t1)
        if swap is not None and not swap and x.shape[0] >= 2:  # one batch is enough for a diagnostic
            swap.append((token_swap_change(tok, x, tokens, rec, vqgan, guidance), x.shape[0]))
        if not continuous:
            codes.append(tokens.cpu().numpy())
        for i, key in enumerate(batch["key"][: x.shape[0]]):
            name = str(key).replace("/", "_")
            _save_png(x[i], orig_dir / f"{name}.png")
            _save_png(rec[i], images_dir / f"{name}.png")
        if len(grid[0]) < cfg.grid:
            k = cfg.grid - len(grid[0])
            grid[0].extend(x[:k].cpu())
            grid[1].extend(rec[:k].clamp(0, 1).cpu())
        n += x.shape[0]
        if cfg.max_images and n >= cfg.max_images:
            break
    if skips is not None:
        skips.update(loader.skips.to_dict())
    if n == 0:
        raise ValueError(f"data={cfg.data}: no readable images ({loader.skips.summary()})")
    return (np.concatenate(codes) if codes else None), t_enc, t_dec, n, grid


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    for key in ("tokenizer", "experiment"):
        if not cfg[key]:
            raise ConfigError(f"missing required option {key}=...")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from shared import evaluate as shared_eval

    tok = load_tokenizer(cfg.tokenizer).to(cfg.device).eval()
    text = load_guidance(cfg, tok)
    vqgan = None
    if hasattr(tok, "outputs_pixels") and not tok.outputs_pixels:
        if not cfg.vqgan:
            raise ConfigError(f"tokenizer={cfg.tokenizer} is a legacy stage-1 TiTok (decodes to VQGAN codes): "
                              "give vqgan=<the MaskGIT-VQGAN it was trained against>")
        vqgan = load_tokenizer(cfg.vqgan).to(cfg.device).eval()
    out = Path(cfg.out) if cfg.out else Path("results") / cfg.scale / "titok_rar" / "eval" / f"{cfg.experiment}.json"
    img_root = Path(cfg.out_dir) if cfg.out_dir else out.with_suffix("")
    with atomic_dir(img_root) as tmp:
        (tmp / "recon").mkdir()
        (tmp / "originals").mkdir()
        input_skips: dict = {}
        swap: list = []
        codes, t_enc, t_dec, n, grid = reconstruct(cfg, tok, vqgan, tmp / "recon", tmp / "originals", input_skips,
                                                   text, swap)
        if codes is not None:
            np.save(tmp / "codes.npy", codes)
    names = [m.strip() for m in cfg.metrics.split(",") if m.strip()]
    if codes is None:
        names = [m for m in names if not m.startswith("codebook")]
    ecfg = resolve(shared_eval.Config, {
        "images": str(img_root / "recon"), "reference": str(img_root / "originals"),
        "reference_stats": str(img_root / "originals_stats.npz"), "extractor": cfg.extractor, "metrics": names,
        "experiment": cfg.experiment, "checkpoint": cfg.checkpoint or str(cfg.tokenizer), "sampler": "reconstruction",
        "steps": 0,
        "scale": cfg.scale, "batch_size": cfg.batch_size, "device": cfg.device,
        "codes": str(img_root / "codes.npy") if codes is not None else "",
        "codebook_size": int(getattr(tok, "codebook_size", 0) or 0)}, shared_eval.PRESETS)
    result = shared_eval.evaluate(ecfg)
    # speed and length as table columns too (entries like shared.evaluate's)
    for name, value in (("tokens_per_image", tok.num_tokens), ("encode_images_per_sec", n / max(t_enc, 1e-9)),
                        ("decode_images_per_sec", n / max(t_dec, 1e-9))):
        result["metrics"].append({"metric": name, "value": float(value), "num_samples": n, "reference_id": None,
                                  "extractor_id": None})
    if swap:
        result["metrics"].append({"metric": "token_swap_change", "value": swap[0][0], "num_samples": swap[0][1],
                                  "reference_id": None, "extractor_id": None})
    # the leaderboard's columns: the tokenizer's size, encode + decode time per image
    result["info"].update(parameters=sum(t.numel() for t in tok.parameters()),
                          seconds_per_image=(t_enc + t_dec) / max(n, 1))
    result.update({"tokenizer": str(cfg.tokenizer), "tokenizer_class": type(tok).__name__,
                   "tokens_per_image": int(tok.num_tokens), "codebook_size": int(getattr(tok, "codebook_size", 0)),
                   "encode_images_per_sec": n / max(t_enc, 1e-9), "decode_images_per_sec": n / max(t_dec, 1e-9),
                   "num_reconstructed": n, "device": cfg.device,
                   # inputs the loader could not read (the recon/originals folders hold only the good ones)
                   "input_skipped": input_skips.get("bad", 0), "input_skip_reasons": input_skips.get("counts", {})})
    if text is not None:  # which guidance decoded: the spec saved with the tokenizer (open_clip names its file)
        result["text_guidance"] = dict(text.spec, folder=str(cfg.text_guidance or cfg.tokenizer))
        result["info"]["text_encoder_parameters"] = sum(p.numel() for p in text.parameters())
    write_json(out, result)
    save_resolved(cfg, out.parent, name=f"{out.stem}.config.yaml")
    if grid[0]:
        from torchvision.utils import save_image
        save_image(torch.stack(grid[0] + grid[1]), out.with_name(f"{out.stem}_grid.png"), nrow=len(grid[0]))
    summary = ", ".join(f"{e['metric']}={e['value']:.4g}" for e in result["metrics"])
    print(f"{cfg.experiment}: {summary}, {tok.num_tokens} tokens/image, encode {result['encode_images_per_sec']:.1f} "
          f"img/s, decode {result['decode_images_per_sec']:.1f} img/s on {n} images -> {out}")
    if result["input_skipped"]:
        reasons = ", ".join(f"{r}={k}" for r, k in sorted(result["input_skip_reasons"].items()))
        print(f"skipped {result['input_skipped']} unreadable input images: {reasons}")
    return result


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
