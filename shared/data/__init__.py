"""Data loading that survives real datasets and real clusters.

Sources (what to read):
    FolderSource(root, transform, extra_keys)       image folder + .txt/.cap captions + folder-name prompts
    ShardSource(shards, transform, image_keys, caption_key, extra_keys, filter=SampleFilter(...))   WebDataset
    LMDBSource(path | LMDBDataset)                   LMDB written by LMDBWriter
    open_source(path, **kw)                          picks one of the above from what is at `path`
Loader (how to read it):
    ResumableLoader(source, batch_size, num_workers, seed, uncond_p, max_skip_rate, ...)
        iter() = one epoch of this rank; state_dict()/load_state_dict() resume mid-epoch; .skips counts bad data
Random access:
    LMDBWriter(path) .add(**fields) .close();  LMDBDataset(path)[i];  read_manifest(path)
Listing / transforms:
    list_images(root) -> FolderListing (.items, .counts, .report());  image_transform(size, crop, hflip_p);
    CaptionDropout(p, seed);  drop_condition(cond, empty, p, generator)
Converters (step scripts): shared/data/folder_to_shards.py, folder_to_lmdb.py, digits_formats.py
"""
from shared.data.decode import decode_image, read_file
from shared.data.folder import FolderItem, FolderListing, FolderSource, folder_prompt, list_images, read_caption_file
from shared.data.lmdb_store import IncompleteDatabase, LMDBDataset, LMDBSource, LMDBWriter, read_manifest
from shared.data.loader import ResumableLoader, dist_info, open_source
from shared.data.shards import SampleFilter, ShardSource, expand_shards, iter_shard, write_shards
from shared.data.skips import BadSample, Filtered, SkipCounter, TooManyBadSamples
from shared.data.transforms import (CaptionDropout, center_crop, drop_condition, hflip, image_transform,
                                    random_resized_crop, resize_side, to_uint8_tensor)

__all__ = [
    "BadSample", "CaptionDropout", "Filtered", "FolderItem", "FolderListing", "FolderSource", "IncompleteDatabase",
    "LMDBDataset", "LMDBSource", "LMDBWriter", "ResumableLoader", "SampleFilter", "ShardSource", "SkipCounter",
    "TooManyBadSamples", "center_crop", "decode_image", "dist_info", "drop_condition", "expand_shards",
    "folder_prompt", "hflip", "image_transform", "iter_shard", "list_images", "open_source", "random_resized_crop",
    "read_caption_file", "read_file", "read_manifest", "resize_side", "to_uint8_tensor", "write_shards",
]
