"""Training data for GLIDE fine-tuning through shared.data: image+caption folders or WebDataset shards.

    source = make_source("data/pics", side=64)                                         # folder: <id>.png + <id>.txt
    source = make_source("shards/{00000..00099}.tar", side=64, use_webdataset=True, wds_dataset_name="laion",
                         data_filter=GlideFilter(min_size=256, min_similarity=0.3))
    loader = make_loader(source, batch_size=4, uncond_p=0.2, seed=0, rank=0, world_size=1)

WebDataset layouts (`wds_dataset_name`, as glide-finetune names them): which member holds the caption and the
image, and which metadata filters apply. `wds_caption_key` / `wds_image_key` override the layout's keys.
Filtered samples (NSFW, too small, aspect ratio, CLIP similarity outside bounds) are counted under `filtered`,
corrupt ones under the loader's skip counter; neither stops a run (shared.data).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.data import FolderSource, ResumableLoader, SampleFilter, ShardSource, image_transform
from shared.data.skips import Filtered


@dataclass(frozen=True)
class WdsLayout:
    caption_key: str
    image_key: str
    drop_nsfw: bool = False  # the layout's metadata has an NSFW field
    description: str = ""


WDS_LAYOUTS: dict[str, WdsLayout] = {
    "laion": WdsLayout("txt", "jpg", drop_nsfw=True,
                       description="LAION (img2dataset): <key>.jpg, <key>.txt, <key>.json with NSFW, similarity, "
                                   "width, height"),
    "alamy": WdsLayout("txt", "jpg", description="Alamy scrape: <key>.jpg + <key>.txt, no metadata filters"),
    "synthetic": WdsLayout("txt", "png", description="generated images: <key>.png + <key>.txt"),
}


@dataclass
class GlideFilter(SampleFilter):
    """shared.data's SampleFilter plus LAION's CLIP-similarity bounds (0 = no bound). A sample whose metadata
    has no similarity field passes (folders and synthetic shards have none)."""
    min_similarity: float = 0.0
    max_similarity: float = 0.0
    similarity_key: str = "similarity"

    def check_meta(self, meta: dict) -> None:
        super().check_meta(meta)
        s = meta.get(self.similarity_key)
        if s is None:
            return
        s = float(s)
        if self.min_similarity and s < self.min_similarity:
            raise Filtered("similarity_low")
        if self.max_similarity and s > self.max_similarity:
            raise Filtered("similarity_high")


def make_source(data_dir: str, side: int, *, use_webdataset: bool = False, wds_dataset_name: str = "laion",
                wds_caption_key: str = "", wds_image_key: str = "", crop: str = "random", resize_ratio: float = 1.0,
                data_filter: GlideFilter | None = None):
    """A shared.data source yielding {"image": (3, side, side) in [-1, 1], "caption": str, "key": str}.
    crop="random": random-resized crop keeping at least `resize_ratio` of the area (glide-finetune's
    resize_ratio); "center": resize the short side and crop the centre."""
    if crop not in ("random", "center"):
        raise ValueError(f"crop={crop!r}; expected random or center")
    if not 0 < resize_ratio <= 1:
        raise ValueError(f"resize_ratio={resize_ratio}; expected a fraction of the image area in (0, 1]")
    transform = image_transform(side, crop=crop, scale=(resize_ratio, 1.0))
    if use_webdataset:
        if wds_dataset_name not in WDS_LAYOUTS:
            raise ValueError(f"wds_dataset_name={wds_dataset_name!r}; known layouts: {', '.join(WDS_LAYOUTS)}")
        layout = WDS_LAYOUTS[wds_dataset_name]
        filt = data_filter or GlideFilter()
        if layout.drop_nsfw:
            filt.drop_nsfw = True
        return ShardSource(data_dir, transform=transform, image_keys=(wds_image_key or layout.image_key,),
                           caption_key=wds_caption_key or layout.caption_key, filter=filt)
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"data_dir={data_dir}: not a folder of images with caption files "
                                f"(for WebDataset shards pass use_webdataset=true)")
    return FolderSource(data_dir, transform=transform)


def make_loader(source, batch_size: int, *, uncond_p: float, seed: int, rank: int, world_size: int,
                num_workers: int = 0, max_skip_rate: float = 0.05) -> ResumableLoader:
    """Seeded, sharded over ranks, resumable mid-epoch; `uncond_p` of the captions become "" (the empty prompt
    GLIDE's classifier-free guidance is trained with), decided per (seed, epoch, sample key)."""
    return ResumableLoader(source, batch_size, num_workers=num_workers, seed=seed, uncond_p=uncond_p, rank=rank,
                           world_size=world_size, drop_last=True, max_skip_rate=max_skip_rate)
