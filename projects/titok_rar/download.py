"""Paper-scale downloads for titok_rar, tokenizers and generators (a light step; needs the internet, or `mirror=`).

    python projects/titok_rar/download.py item=titok_l32 out_dir=downloads/titok_rar/titok_l32
    python projects/titok_rar/download.py item=maskgit_vqgan out_dir=downloads/titok_rar/maskgit_vqgan
    python projects/titok_rar/download.py item=rar_b out_dir=downloads/titok_rar/generators/rar_b
    python projects/titok_rar/download.py item=adm_imagenet256 out_dir=... inception=downloads/dmd2/inception
    python projects/titok_rar/download.py --help        # lists the items

Items go through shared.download (atomic files, SHA-256 of every file recorded in download.json, reruns skip
what is there). Hugging Face items follow HF_ENDPOINT; plain URLs take `mirror=<folder or URL prefix>` (copy the
files there on a machine with internet access first). The released TiTok folders hold config.json +
weights in the hub-mixin layout, so `image_tokenizers.load_tokenizer(out_dir)` reads them (strictly).

Tokenizer half: the released TiTok tokenizers, the MaskGIT-VQGAN, the perceptual losses' networks (torchvision
ConvNeXt-S; LPIPS = torchvision's VGG16 + the lpips package's linear heads), the CLIP text encoder (TA-TiTok's
text guidance, MaskGen's condition) and Inception (rFID). Generator half: the released RAR-B/L/XL/XXL weights
(huggingface yucornetto/RAR, README_RAR.md), the released MaskGIT generators on TiTok-L-32/B-64/S-128 and their
tokenizers (yucornetto/generator_titok_*_imagenet, yucornetto/tokenizer_titok_*_imagenet; the generator rules name
the tokenizers `tokenizer_titok_*`, the same repositories as `titok_*`), and ADM's ImageNet-256 reference batch
(VIRTUAL_imagenet256_labeled.npz, what OpenAI's evaluator compares against), and MJHQ-30K (MaskGen's FID
benchmark: meta_data.json + the unpacked reference images; the step also writes prompts.txt, one prompt a line).
For the ADM batch the step also writes reference_stats.npz: ADM's own mu/sigma (TF Inception pool_3, resize inside
the network) labelled with shared.metrics' `inception_inside` extractor, so shared.evaluate computes gFID against
exactly them.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import ConfigError, cli, resolve
from shared.download import Download, fetch

_HUB_FILES = ("*.json", "*.safetensors", "*.bin")


def _titok(name: str, what: str) -> Download:
    return Download(f"released {what} (hub-mixin folder)", repo=f"yucornetto/tokenizer_{name}_imagenet",
                    allow=_HUB_FILES)


DOWNLOADS: dict[str, Download] = {
    "titok_l32": _titok("titok_l32", "TiTok-L-32 (rFID 2.21)"),
    "titok_b64": _titok("titok_b64", "TiTok-B-64 (rFID 1.70)"),
    "titok_s128": _titok("titok_s128", "TiTok-S-128 (rFID 1.71)"),
    "titok_bl64_vq8k": _titok("titok_bl64_vq8k", "TiTok-BL-64 VQ 8k codes"),
    "titok_bl128_vq8k": _titok("titok_bl128_vq8k", "TiTok-BL-128 VQ 8k codes"),
    "titok_sl256_vq8k": _titok("titok_sl256_vq8k", "TiTok-SL-256 VQ 8k codes"),
    "titok_ll32_vae_c16": _titok("titok_ll32_vae_c16", "TiTok-LL-32 VAE, 16 channels"),
    "titok_bl64_vae_c16": _titok("titok_bl64_vae_c16", "TiTok-BL-64 VAE, 16 channels"),
    "titok_bl128_vae_c16": _titok("titok_bl128_vae_c16", "TiTok-BL-128 VAE, 16 channels"),
    "maskgit_vqgan": Download("the MaskGIT-VQGAN (f16, 1024 codes): stage-1 proxy codes, legacy pixel decoder, "
                              "RAR's tokenizer", repo="fun-research/TiTok", files=("maskgit-vqgan-imagenet-f16-256.bin",)),
    "convnext_small": Download("torchvision ConvNeXt-S ImageNet weights: the 'convnext_s' perceptual loss",
                               urls=("https://download.pytorch.org/models/convnext_small-0c510722.pth",)),
    # LPIPS (losses.LPIPS): torchvision's VGG16 ImageNet weights (the trunk; lpips' pretrained_networks.vgg16 takes
    # torchvision's features) and the lpips package's v0.1 linear heads, one folder for `lpips:<folder>`
    "lpips_vgg": Download("LPIPS-VGG: torchvision vgg16 weights + lpips v0.1 linear heads (perceptual loss)",
                          urls=("https://download.pytorch.org/models/vgg16-397923af.pth",
                                "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/"
                                "weights/v0.1/vgg.pth")),
    # open_clip's "openai" ViT-L-14-336 (utils/train_utils.py create_clip_model in the original); a file, so the
    # architecture is named "ViT-L-14-336-quickgelu" (the openai tag would switch QuickGELU on by itself)
    "open_clip_vit_l14_336": Download("CLIP ViT-L/14-336 (OpenAI, open_clip): TA-TiTok / MaskGen text encoder",
                                      repo="timm/vit_large_patch14_clip_336.openai",
                                      files=("open_clip_pytorch_model.bin",)),
    "inception": Download("Inception-v3 FID weights as clean-fid uses them (TorchScript), for rFID",
                          urls=("https://github.com/GaParmar/clean-fid/releases/download/v0.1.10/"
                                "inception-2015-12-05.pt",)),
    # generators
    **{f"rar_{s}": Download(f"RAR-{s.upper()} generator", repo="yucornetto/RAR", files=(f"rar_{s}.bin",))
       for s in ("b", "l", "xl", "xxl")},
    **{f"generator_titok_{k}": Download(f"MaskGIT generator on TiTok-{k.upper()}",
                                        repo=f"yucornetto/generator_titok_{k}_imagenet", allow=_HUB_FILES)
       for k in ("l32", "b64", "s128")},
    # MaskGen's FID benchmark (README_MaskGen.md: MJHQ-30K FID): 30k prompts with their reference images (a
    # Hugging Face dataset repo, fetched by URL so that mirror= serves it too); the step also writes prompts.txt
    "mjhq30k": Download("MJHQ-30K: 30k prompts + reference images (MaskGen's text-to-image FID)", urls=(
        "https://huggingface.co/datasets/playgroundai/MJHQ-30K/resolve/main/meta_data.json",
        "https://huggingface.co/datasets/playgroundai/MJHQ-30K/resolve/main/mjhq30k_imgs.zip"), unpack=True),
    "adm_imagenet256": Download("ADM ImageNet-256 reference batch (gFID statistics)", urls=(
        "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
        "VIRTUAL_imagenet256_labeled.npz",)),
}
DOWNLOADS.update({f"tokenizer_titok_{k}": DOWNLOADS[f"titok_{k}"] for k in ("l32", "b64", "s128")})


@dataclass
class Config:
    scale: str = "paper"
    item: str = field(default="titok_l32", metadata={"help": "one of " + ", ".join(DOWNLOADS)})
    out_dir: str = "downloads/titok_rar/titok_l32"
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


def write_mjhq_prompts(out: Path) -> Path:
    """prompts.txt (one a line, ordered by image id) from MJHQ-30K's meta_data.json ({id: {category, prompt}}), what
    sample.py's `prompts=` reads; sample i takes prompt i, so the 30k samples are one per prompt."""
    import json

    meta_path = out / "meta_data.json"
    try:
        meta = json.loads(meta_path.read_text())
        prompts = [" ".join(str(meta[k]["prompt"]).split()) for k in sorted(meta)]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_path}: expected MJHQ-30K's {{id: {{category, prompt}}}} ({e})") from None
    if not all(prompts):
        raise ValueError(f"{meta_path}: {sum(not p for p in prompts)} empty prompts")
    path = out / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    return path


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.item not in DOWNLOADS:
        raise ConfigError(f"item={cfg.item!r}; known: {', '.join(DOWNLOADS)}")
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
    if cfg.item == "mjhq30k":
        print(f"prompts -> {write_mjhq_prompts(out)}")
    print(f"{cfg.item}: {len(record)} files in {out}")
    return record


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__ + "\nItems:\n" + "\n".join(f"  {k}: {v.description}" for k, v in DOWNLOADS.items()))
