"""Paper-scale downloads for DMD2 (a light step: runs on the login node, needs the internet there).

    python projects/dmd2/download.py item=dmd2_sdxl_4step out_dir=downloads/dmd2/dmd2_sdxl_4step
    python projects/dmd2/download.py item=coco10k out_dir=downloads/dmd2/coco10k     # prompts.txt + images/

Items (DOWNLOADS) go through shared.download: SHA-256 recorded in download.json (no published digests were
found for these files), atomic files, reruns skip what is there. The SDXL / SD1.5 pipelines come from
sd_flux_lab's download rules (downloads/sdxl_base, downloads/sd15), so there is one copy of each.

COCO evaluation sets are the ones DMD2's own evaluation uses: its caption list (captions_coco14_test.pkl, a
pickled list of strings, read with an unpickler that can build nothing but lists and strings) and its reference
images (coco10k.zip for SDXL, val2014.zip for SD1.5's COCO-30k). `prompts.txt` gets the first `num_prompts`
captions, one per line; `images/` the reference images, flat. `mirror=` reads plain URLs from a staging folder.
"""
from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import cli, resolve
from shared.download import Download, fetch
from shared.io import atomic_dir, write_json, write_text

_DMD2_DATA = "https://huggingface.co/tianweiy/DMD2/resolve/main/data"
_DMD2_MODELS = "https://huggingface.co/tianweiy/DMD2/resolve/main/model"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

DOWNLOADS: dict[str, Download] = {
    "dmd2_sdxl_4step": Download("DMD2's released SDXL 4-step UNet (diffusers UNet state dict, fp16)",
                                repo="tianweiy/DMD2", files=("dmd2_sdxl_4step_unet_fp16.bin",)),
    "dmd2_sdxl_1step": Download("DMD2's released SDXL 1-step UNet (conditioning timestep 399)",
                                repo="tianweiy/DMD2", files=("dmd2_sdxl_1step_unet_fp16.bin",)),
    "dmd2_sd15_1step": Download("DMD2's released SD1.5 1-step UNet (FID 8.35 checkpoint; diffusers UNet state dict)",
                                urls=(f"{_DMD2_MODELS}/sdv1.5/laion6.25_sd_baseline_8node_guidance1.75_lr5e-7_seed10_"
                                      "dfake10_diffusion1000_gan1e-3_resume_fid8.35_checkpoint_model_041000/"
                                      "pytorch_model.bin",)),
    "dmd2_imagenet64": Download("DMD2's released ImageNet-64 1-step generator (FID 1.28 checkpoint; EDMPrecond keys)",
                                urls=(f"{_DMD2_MODELS}/imagenet/imagenet_gan_classifier_genloss3e-3_diffusion1000_lr5e-7_"
                                      "resume_fid1.28_checkpoint_model_548000/pytorch_model.bin",)),
    "inception": Download("Inception-v3 FID weights as clean-fid uses them (TorchScript)",
                          urls=("https://github.com/GaParmar/clean-fid/releases/download/v0.1.10/"
                                "inception-2015-12-05.pt",)),
    "clip_vit_g14": Download("OpenCLIP ViT-g-14 (LAION-2B) in transformers format, for CLIP score",
                             repo="laion/CLIP-ViT-g-14-laion2B-s12B-b42K",
                             allow=("*.json", "*.txt", "model.safetensors")),
    "imagenet64_edm": Download("EDM ImageNet-64 reference statistics for FID (EDM's fid-refs)",
                               urls=("https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/imagenet-64x64.npz",)),
    "coco10k": Download("COCO-2014 captions + the 10k reference images of DMD2's SDXL evaluation",
                        urls=(f"{_DMD2_DATA}/coco/captions_coco14_test.pkl", f"{_DMD2_DATA}/coco/coco10k.zip"),
                        unpack=True),
    "coco30k": Download("COCO-2014 captions + val2014 reference images of DMD2's SD1.5 (COCO-30k) evaluation",
                        urls=(f"{_DMD2_DATA}/coco/captions_coco14_test.pkl", f"{_DMD2_DATA}/coco/val2014.zip"),
                        unpack=True),
}
# what sample.py needs to know about a released generator file (written beside it as <file>.json)
GENERATOR_INFO = {
    "dmd2_sdxl_4step": {"backbone": "sd", "denoising_step_list": [999, 749, 499, 249]},
    "dmd2_sdxl_1step": {"backbone": "sd", "denoising_step_list": [399]},
    "dmd2_sd15_1step": {"backbone": "sd", "denoising_step_list": [999]},
    "dmd2_imagenet64": {"backbone": "edm", "teacher_config": "imagenet64", "denoising_step_list": [999]},
}
IMAGENET_CLASSES, IMAGENET_PER_CLASS = 1000, 50  # the 50k class-conditional samples FID is computed on
COCO_SETS = {"coco10k": ("coco10k", 10_000), "coco30k": ("val2014", 30_000)}  # archive, prompts


class _StringListUnpickler(pickle.Unpickler):
    """Lists, tuples and strings need no class lookups; anything that asks for one is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a caption list holds only strings")


def read_caption_pickle(path: str | Path) -> list[str]:
    try:
        captions = _StringListUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    except (pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f"{path}: not a pickled list of caption strings ({e})") from None
    if not isinstance(captions, (list, tuple)) or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"{path}: expected a list of strings, got {type(captions).__name__}")
    return [" ".join(c.split()) for c in captions]  # one line each


def make_coco_set(out: Path, archive_stem: str, num_prompts: int) -> None:
    """prompts.txt (the first num_prompts captions) and images/ (the unpacked reference images, flat)."""
    captions = read_caption_pickle(out / "captions_coco14_test.pkl")
    if len(captions) < num_prompts:
        raise ValueError(f"{out}/captions_coco14_test.pkl: {len(captions)} captions, need {num_prompts}")
    sources = sorted(p for p in (out / archive_stem).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not sources:
        raise ValueError(f"{out}/{archive_stem}.zip held no images ({', '.join(IMAGE_SUFFIXES)})")
    with atomic_dir(out / "images") as tmp:
        for p in sources:
            os.link(p, tmp / p.name)  # a second name, not a second copy
    write_text(out / "prompts.txt", "\n".join(captions[:num_prompts]) + "\n")
    print(f"{out}: {num_prompts} prompts, {len(sources)} reference images")


def import_edm_refs(out: Path, inception: str) -> Path:
    """EDM's ImageNet-64 reference statistics (mu, sigma over the 1,281,167 training images, StyleGAN's Inception
    with the resize inside the network) as shared.metrics statistics labelled with that extractor, plus the
    class prompts of the 50k evaluation samples (50 per class)."""
    import numpy as np

    from shared.metrics.extractors import inception_inside_id
    from shared.metrics.stats import ReferenceStats

    with np.load(out / "imagenet-64x64.npz", allow_pickle=False) as z:
        if {"mu", "sigma"} - set(z.files):
            raise ValueError(f"{out}/imagenet-64x64.npz: expected EDM's fid-refs (mu, sigma), got {z.files}")
        mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    stats = ReferenceStats(mu, sigma, 1_281_167, inception_inside_id(inception), "64x64",
                           "imagenet64-train-edm-refs:1281167", "nvlabs edm fid-refs/imagenet-64x64.npz")
    write_text(out / "eval_prompts.txt",
               "\n".join(str(i % IMAGENET_CLASSES) for i in range(IMAGENET_CLASSES * IMAGENET_PER_CLASS)) + "\n")
    return stats.save(out / "reference_stats.npz")


@dataclass
class Config:
    scale: str = "paper"
    item: str = field(default="coco10k", metadata={"help": "one of " + ", ".join(DOWNLOADS)})
    out_dir: str = "downloads/dmd2/coco10k"
    mirror: str = field(default="", metadata={"help": "folder or URL prefix serving the plain-URL files (staged)"})
    inception: str = field(default="downloads/dmd2/inception",
                           metadata={"help": "imagenet64_edm: the Inception its statistics are labelled with"})


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.item not in DOWNLOADS:
        raise ValueError(f"item={cfg.item!r}; known: {', '.join(DOWNLOADS)}")
    out = Path(cfg.out_dir)
    if cfg.item == "imagenet64_edm":
        from shared.metrics.extractors import INCEPTION_FILE

        weights = Path(cfg.inception) / INCEPTION_FILE if Path(cfg.inception).is_dir() else Path(cfg.inception)
        if not weights.is_file():
            raise FileNotFoundError(f"inception={cfg.inception}: no {INCEPTION_FILE} there; the statistics are "
                                    f"labelled with its digest, so fetch item=inception first")
    record = fetch(DOWNLOADS[cfg.item], out, mirror=cfg.mirror)
    if cfg.item in GENERATOR_INFO:
        for name in record:
            write_json((out / name).with_suffix(".json"), {**GENERATOR_INFO[cfg.item], "source": cfg.item})
    if cfg.item == "imagenet64_edm":
        import_edm_refs(out, cfg.inception)
    if cfg.item in COCO_SETS:
        make_coco_set(out, *COCO_SETS[cfg.item])
    return out


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
