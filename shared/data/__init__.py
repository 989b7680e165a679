"""Data loading that survives real datasets and real clusters.

Sources (what to read):
    FolderSource(root, transform, extra_keys)       image folder + .txt/.cap captions + folder-name prompts
    ShardSource(shards, transform, image_keys, caption_key, extra_keys, filter=SampleFilter(...))   WebDataset
    LMDBSource(path | LMDBDataset)                   LMDB written by LMDBWriter
    open_source(path, **kw)                          picks one of the above from what is at `path`
The loader (how to read it: iter() = one epoch of this rank, state_dict()/load_state_dict() resume mid-epoch,
.skips counts bad data and travels in the state, TooManyBadSamples past max_skip_rate):
    ResumableLoader(data, batch_size, seed, rank, world_size, num_workers, drop_last, max_skip_rate, ...)
        data = a source above (streamed: per-sample augmentation seeds, uncond_p caption dropout, a shuffle buffer
        for shards), or map-style: in-memory tensors (one fancy index per batch; what Trainer.loader() builds) or
        a Dataset, ordered by a batch sampler: PermutationBatches (default) or
        batch_sampler=BucketBatchSampler(item_bucket, batch_size, seed, rank, world_size) (aspect buckets)
Random access:
    LMDBWriter(path) .add(**fields) .close();  LMDBDataset(path)[i];  read_manifest(path)
Decoding / checking:
    decode_image(bytes, name, background=(255, 255, 255), min_size=0): every PIL mode to RGB (16-bit scaled, alpha
        composited on `background`, CMYK, EXIF orientation); BadSample / Filtered("too_small") otherwise
    probe_image(path, min_size) -> (w, h) from the header;  check_images(root, listing, min_size) -> SkipCounter
Listing / transforms:
    list_images(root) -> FolderListing (.items, .counts, .report());  image_transform(size, crop, hflip_p);
    CaptionDropout(p, seed);  drop_condition(cond, empty, p, generator)
Converters (step scripts): shared/data/folder_to_shards.py, folder_to_lmdb.py (the toy digits: shared/toy/digits_formats.py)
"""
from shared.data.buckets import BucketBatchSampler, make_buckets, nearest_bucket
from shared.data.decode import BACKGROUND, check_images, decode_image, probe_image, read_file
from shared.data.folder import FolderItem, FolderListing, FolderSource, folder_prompt, list_images, read_caption_file
from shared.data.lmdb_store import IncompleteDatabase, LMDBDataset, LMDBSource, LMDBWriter, read_manifest
from shared.data.loader import PermutationBatches, ResumableLoader, dist_info, open_source
from shared.data.shards import SampleFilter, ShardSource, expand_shards, iter_shard, write_shards
from shared.data.skips import BadSample, Filtered, SkipCounter, TooManyBadSamples
from shared.data.transforms import (CaptionDropout, center_crop, drop_condition, hflip, image_transform,
                                    random_resized_crop, resize_side, to_uint8_tensor)

__all__ = [
    "BACKGROUND", "BadSample", "BucketBatchSampler", "CaptionDropout", "Filtered", "FolderItem",
    "FolderListing", "FolderSource", "IncompleteDatabase", "LMDBDataset", "LMDBSource", "LMDBWriter",
    "PermutationBatches", "ResumableLoader", "SampleFilter", "ShardSource", "SkipCounter", "TooManyBadSamples",
    "center_crop", "check_images", "decode_image", "dist_info", "drop_condition", "expand_shards", "folder_prompt",
    "hflip", "image_transform", "iter_shard", "list_images", "make_buckets", "nearest_bucket", "open_source",
    "probe_image", "random_resized_crop", "read_caption_file", "read_file", "read_manifest", "resize_side",
    "to_uint8_tensor", "write_shards",
]
