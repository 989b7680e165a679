"""WebDataset shards (.tar): reading with metadata filters and bad-member accounting, and writing.

A sample is the tar members sharing a key: `<key>.jpg|png|webp` (image), `<key>.txt` (caption), `<key>.json`
(metadata: width, height, NSFW flag / punsafe, any labels). Members are grouped with webdataset's own
`group_by_keys`; the tar stream is read by shared.data.tario (several times faster than `tarfile`), which
resynchronises after a corrupt header instead of losing the rest of the shard and reports the gap as a
`broken_member` (as it does for a truncated archive).

    src = ShardSource("data/shards/", caption_key="json:caption", filter=SampleFilter(min_size=256))
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import webdataset as wds
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys

from shared.data.decode import decode_image
from shared.data.skips import BadSample, Filtered
from shared.data.tario import open_shard, read_members
from shared.io import write_json

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
INDEX_FILE = "index.json"
_NSFW_TRUE = {"nsfw", "true", "1", "yes"}


@dataclass
class SampleFilter:
    """Policy filters; a dropped sample is counted under `filtered`, not as bad data.

    Metadata keys are read from the sample's JSON; size bounds fall back to the decoded image when the JSON
    has no width/height. 0 means "no bound" for every limit.
    """
    drop_nsfw: bool = False
    nsfw_keys: tuple[str, ...] = ("NSFW", "nsfw")  # LAION: "NSFW"/"UNSURE"/"UNLIKELY"; booleans understood
    max_punsafe: float = 0.0  # drop if metadata[punsafe_key] > this (0 = off)
    punsafe_key: str = "punsafe"
    min_size: int = 0  # minimum of width and height, pixels
    min_aspect: float = 0.0  # width / height
    max_aspect: float = 0.0
    min_caption_len: int = 0  # characters
    max_caption_len: int = 0

    def check_meta(self, meta: dict) -> None:
        if self.drop_nsfw:
            for k in self.nsfw_keys:
                v = meta.get(k)
                if v is True or v == 1 or (isinstance(v, str) and v.strip().lower() in _NSFW_TRUE):
                    raise Filtered("nsfw")
        if self.max_punsafe > 0:
            p = meta.get(self.punsafe_key)
            if p is not None and float(p) > self.max_punsafe:
                raise Filtered("punsafe")
        w, h = meta.get("width"), meta.get("height")
        if w and h:
            self.check_size(int(w), int(h))

    def check_size(self, w: int, h: int) -> None:
        if self.min_size and min(w, h) < self.min_size:
            raise Filtered("too_small")
        if self.min_aspect and w / h < self.min_aspect:
            raise Filtered("aspect")
        if self.max_aspect and w / h > self.max_aspect:
            raise Filtered("aspect")

    def check_caption(self, caption: str) -> None:
        if self.min_caption_len and len(caption) < self.min_caption_len:
            raise Filtered("caption_short")
        if self.max_caption_len and len(caption) > self.max_caption_len:
            raise Filtered("caption_long")


def expand_shards(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """Shard paths from a folder (its *.tar, sorted), a brace pattern `a-{000..009}.tar`, a glob, or a list."""
    if isinstance(spec, (list, tuple)):
        return [str(s) for s in spec]
    spec = str(spec)
    if os.path.isdir(spec):
        paths = sorted(glob.glob(os.path.join(spec, "*.tar")))
        if not paths:
            raise FileNotFoundError(f"{spec}: no .tar shards in this folder")
        return paths
    if any(c in spec for c in "*?["):
        paths = sorted(glob.glob(spec))
        if not paths:
            raise FileNotFoundError(f"{spec}: no shards match this pattern")
        return paths
    return expand_urls(spec)


def _tar_files(path: str, report) -> Iterator[dict]:
    """Members of one shard as webdataset file records; unreadable parts are reported, never raised."""
    try:
        f = open_shard(path)
    except OSError as e:
        report("unreadable_shard", path, e.strerror or type(e).__name__)
        return
    with f:
        name = "<start>"
        try:
            for name, data in read_members(f, path, report):
                yield {"fname": name, "data": data, "__url__": path}
        except (OSError, EOFError, zlib.error) as e:  # I/O errors, or a corrupt .tar.gz stream
            report("broken_member", f"{path}:{name}", f"{type(e).__name__}: {e}")


def iter_shard(path: str, report, suffixes: Iterable[str] | None = None, expected: int | None = None
               ) -> Iterator[dict]:
    """Samples (dicts of raw member bytes keyed by extension, plus __key__/__url__) of one shard.

    A shard that ends early (cut mid-member or mid-header) loses every sample from the cut on: they are reported as
    one `truncated_shard` event counting `expected - read` samples when the shard's sample count is known (its
    index.json entry), else as one sample with "how many unknown" in the detail."""
    cut: list[tuple[str, str, str]] = []

    def shard_report(reason: str, file: str, detail: str = "", count: int = 1) -> None:
        if reason == "truncated_shard":
            cut.append((reason, file, detail))  # held until we know how many samples were read
        else:
            report(reason, file, detail, count) if count != 1 else report(reason, file, detail)

    def handler(exn: Exception) -> bool:
        report("broken_member", path, str(exn.args[0]) if exn.args else type(exn).__name__)
        return True  # e.g. a duplicate member name: report and keep reading

    read = 0
    for sample in group_by_keys(_tar_files(path, shard_report), suffixes=set(suffixes) if suffixes else None,
                                handler=handler):
        read += 1
        yield sample
    if cut:
        reason, file, detail = cut[0]
        if expected is not None and expected > read:
            report(reason, file, f"{detail}; the rest of the shard is unreadable: {expected - read} samples lost "
                                 f"({expected} in {INDEX_FILE}, {read} read)", expected - read)
        else:
            report(reason, file, f"{detail}; the rest of the shard is unreadable: the samples after it are lost "
                                 f"(how many unknown: no {INDEX_FILE} entry for this shard)")


def shard_counts(shards: Sequence[str]) -> dict[str, int]:
    """{shard path: sample count} from the index.json beside the shards (written by write_shards), where present."""
    out: dict[str, int] = {}
    for folder in sorted({os.path.dirname(s) for s in shards}):
        path = os.path.join(folder, INDEX_FILE)
        try:
            with open(path) as f:
                index = json.load(f)
            counts = {e["file"]: int(e["count"]) for e in index.get("shards", [])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # no index or an unreadable one: counts unknown, nothing worse
        out.update({s: counts[os.path.basename(s)] for s in shards
                    if os.path.dirname(s) == folder and os.path.basename(s) in counts})
    return out


def _caption_spec(caption_key: str) -> tuple[str, str | None]:
    if caption_key.startswith("json:"):
        return "json", caption_key[5:]
    return caption_key, None


class ShardSource:
    """Loader source over WebDataset shards: one unit per shard; the loader adds a shuffle buffer.

    Samples: {"image": transform(PIL RGB), "caption": str, "key": str, **{k: json[k] for extra_keys}}.
    `caption_key` is a member extension ("txt") or "json:<field>".
    """

    buffered = True

    def __init__(self, shards: str | Path | Sequence[str | Path], transform: Callable | None = None,
                 image_keys: Sequence[str] = IMAGE_KEYS, caption_key: str = "txt", meta_key: str = "json",
                 extra_keys: Sequence[str] = (), filter: SampleFilter | None = None,
                 allow_empty_caption: bool = False):
        from shared.data.transforms import to_uint8_tensor

        self.shards = expand_shards(shards)
        if not self.shards:
            raise FileNotFoundError(f"{shards}: no shards")
        self.transform = transform or to_uint8_tensor
        self.image_keys = tuple(k.lower() for k in image_keys)
        self.caption_member, self.caption_field = _caption_spec(caption_key)
        self.meta_key = meta_key
        self.extra_keys = tuple(extra_keys)
        self.filter = filter or SampleFilter()
        self.allow_empty_caption = allow_empty_caption
        self.suffixes = set(self.image_keys) | {self.caption_member, self.meta_key}
        self.counts = shard_counts(self.shards)  # to count the samples a truncated shard lost

    def __repr__(self) -> str:
        return f"ShardSource({len(self.shards)} shards, first {self.shards[0]})"

    def units(self) -> Sequence[str]:
        return self.shards

    def fingerprint(self) -> str:
        names = "\n".join(os.path.basename(s) for s in self.shards)
        return f"shards:{len(self.shards)}:{hashlib.sha256(names.encode()).hexdigest()[:16]}"

    def read(self, unit: str, report) -> Iterator[dict]:
        return iter_shard(unit, report, self.suffixes, self.counts.get(unit))

    def decode(self, raw: dict) -> dict:
        name = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
        meta: dict[str, Any] = {}
        if self.meta_key in raw:
            try:
                meta = json.loads(raw[self.meta_key])
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BadSample("bad_metadata", name, str(e)) from None
            if not isinstance(meta, dict):
                raise BadSample("bad_metadata", name, "JSON is not an object")
            try:
                self.filter.check_meta(meta)
            except (TypeError, ValueError) as e:  # e.g. "width": "n/a"
                raise BadSample("bad_metadata", name, f"{type(e).__name__}: {e}") from None
        if self.caption_field is None:
            data = raw.get(self.caption_member)
            caption = data.decode("utf-8", errors="replace").strip() if data is not None else None
        else:
            caption = meta.get(self.caption_field)
            caption = str(caption).strip() if caption is not None else None
        if not caption and not self.allow_empty_caption:
            raise BadSample("missing_caption", name, f"no '{self.caption_member}'"
                            + (f" field '{self.caption_field}'" if self.caption_field else " member"))
        caption = caption or ""
        self.filter.check_caption(caption)
        ext = next((k for k in self.image_keys if k in raw), None)
        if ext is None:
            raise BadSample("missing_image", name, f"none of {', '.join(self.image_keys)}")
        img = decode_image(raw[ext], f"{name}.{ext}")
        if not (meta.get("width") and meta.get("height")):
            self.filter.check_size(*img.size)
        # keys repeat across shards (000000 in each): prefix the shard name so a key names one sample
        shard = os.path.basename(str(raw.get("__url__", ""))).rsplit(".tar", 1)[0]
        sample = {"image": self.transform(img), "caption": caption, "key": f"{shard}/{raw['__key__']}"}
        for k in self.extra_keys:
            if k not in meta:
                raise BadSample("missing_field", name, f"no '{k}' in {self.meta_key}")
            sample[k] = meta[k]
        return sample


def write_shards(samples: Iterable[dict], out_dir: str | Path, shard_size: int = 1000,
                 max_bytes: int = 1_000_000_000, pattern: str = "shard-%06d.tar") -> dict:
    """Write samples (dicts with __key__ and extension keys: bytes / str / JSON-able dict) with wds.ShardWriter.

    Returns the index written to out_dir/index.json: shard file names and sample counts.
    Keys must not contain dots (webdataset splits the member name at the first dot).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    # fixed integer mtime: the same input gives byte-identical shards, and no pax header per member (tarfile
    # adds one for a float mtime, which doubles the headers a reader parses)
    with wds.ShardWriter(str(out_dir / pattern), maxcount=shard_size, maxsize=max_bytes, verbose=0,
                         mtime=0) as sink:
        for s in samples:
            if "." in s["__key__"]:
                raise ValueError(f"sample key {s['__key__']!r} contains a dot; webdataset would split it")
            sink.write(s)
            name = os.path.basename(sink.fname)
            counts[name] = counts.get(name, 0) + 1
    first = out_dir / (pattern % 0)
    if first.name not in counts and first.exists():  # ShardWriter opens its first shard even for no samples
        first.unlink()
    index = {"format": "webdataset", "count": sum(counts.values()),
             "shards": [{"file": k, "count": v} for k, v in sorted(counts.items())]}
    write_json(out_dir / INDEX_FILE, index)
    return index
