"""Download what the generators' paper chain needs, through shared.download (hashes, atomic files, mirror=).

    python projects/titok_rar/generator_download.py item=rar_b out_dir=downloads/titok_rar/generators/rar_b
    python projects/titok_rar/generator_download.py item=adm_imagenet256 out_dir=... inception=downloads/dmd2/inception

Items (DOWNLOADS): the released RAR-B/L/XL/XXL weights (huggingface yucornetto/RAR, README_RAR.md), the
MaskGIT-VQGAN they decode with (fun-research/TiTok), the released MaskGIT generators on TiTok-L-32/B-64/S-128 and
their tokenizers (yucornetto/generator_titok_*_imagenet, yucornetto/tokenizer_titok_*_imagenet), and ADM's
ImageNet-256 reference batch (VIRTUAL_imagenet256_labeled.npz, what OpenAI's evaluator compares against). For the
latter the step also writes reference_stats.npz: ADM's own mu/sigma (TF Inception pool_3, resize inside the network)
labelled with shared.metrics' `inception_inside` extractor, so shared.evaluate computes gFID against exactly them.
"""
from __future__ import annotations

import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import cli, resolve
from shared.download import Download, fetch

_HUB = ("*.json", "*.safetensors", "*.bin")
DOWNLOADS = {
    **{f"rar_{s}": Download(f"RAR-{s.upper()} generator", repo="yucornetto/RAR", files=(f"rar_{s}.bin",))
       for s in ("b", "l", "xl", "xxl")},
    "maskgit_vqgan": Download("MaskGIT-VQGAN f16 256 tokenizer", repo="fun-research/TiTok",
                              files=("maskgit-vqgan-imagenet-f16-256.bin",)),
    **{f"generator_titok_{k}": Download(f"MaskGIT generator on TiTok-{k.upper()}",
                                        repo=f"yucornetto/generator_titok_{k}_imagenet", allow=_HUB)
       for k in ("l32", "b64", "s128")},
    **{f"tokenizer_titok_{k}": Download(f"TiTok-{k.upper()} tokenizer", repo=f"yucornetto/tokenizer_titok_{k}_imagenet",
                                        allow=_HUB) for k in ("l32", "b64", "s128")},
    "adm_imagenet256": Download("ADM ImageNet-256 reference batch", urls=(
        "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
        "VIRTUAL_imagenet256_labeled.npz",)),
}


@dataclass
class Config:
    scale: str = "paper"
    item: str = field(default="rar_b", metadata={"help": "one of " + ", ".join(DOWNLOADS)})
    out_dir: str = "downloads/titok_rar/generators/rar_b"
    mirror: str = field(default="", metadata={"help": "folder or URL prefix serving the plain-URL files (staged)"})
    inception: str = field(default="downloads/dmd2/inception",
                           metadata={"help": "adm_imagenet256: the Inception its statistics are labelled with"})


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def _npz_rows(path: Path, member: str = "arr_0.npy") -> int:
    """Rows of an array inside an .npz without reading it (ADM's batch holds 10k 256x256 images)."""
    import numpy as np

    with zipfile.ZipFile(path) as z, z.open(member) as f:
        version = np.lib.format.read_magic(f)
        shape = np.lib.format._read_array_header(f, version)[0]
    return int(shape[0])


def import_adm_reference(out: Path, inception: str) -> Path:
    import numpy as np

    from shared.metrics.extractors import inception_inside_id
    from shared.metrics.stats import ReferenceStats

    npz = out / "VIRTUAL_imagenet256_labeled.npz"
    with np.load(npz, allow_pickle=False) as z:
        if {"mu", "sigma"} - set(z.files):
            raise ValueError(f"{npz}: expected ADM's reference batch (arr_0, mu, sigma), got {z.files}")
        mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    stats = ReferenceStats(mu, sigma, _npz_rows(npz), inception_inside_id(inception), "256x256",
                           "imagenet256-adm-virtual-labeled", "openai guided-diffusion ref_batches imagenet/256")
    return stats.save(out / "reference_stats.npz")


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.item not in DOWNLOADS:
        raise ValueError(f"item={cfg.item!r}; known: {', '.join(DOWNLOADS)}")
    out = Path(cfg.out_dir)
    record = fetch(DOWNLOADS[cfg.item], out, mirror=cfg.mirror)
    if cfg.item == "adm_imagenet256":
        from shared.metrics.extractors import INCEPTION_FILE

        inception = Path(cfg.inception)
        inception = inception / INCEPTION_FILE if inception.is_dir() else inception
        if not inception.is_file():
            raise FileNotFoundError(f"inception={cfg.inception}: the Inception file the reference is labelled with "
                                    "(run the dmd2_download item=inception rule first)")
        print(f"reference statistics -> {import_adm_reference(out, str(inception))}")
    print(f"{cfg.item}: {len(record)} files in {out}")
    return record


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
