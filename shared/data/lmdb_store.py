"""LMDB datasets: an atomic writer for images / latents + labels / captions, and a random-access reader.

    with LMDBWriter("data/toy/latents.lmdb") as w:          # written into a temp folder beside the target
        for z, text in pairs:
            w.add(latent=z.numpy(), caption=text)           # fields are fixed by the first record
    ds = LMDBDataset("data/toy/latents.lmdb")               # ds[i] -> {"latent": tensor, "caption": str}

Layout: one LMDB key per field and record (`<field>/<index:010d>`), so a reader may load only the fields it
needs (DMD2 reads latents and prompts, not the images). `manifest.json` records count, and per field its kind
(array with shape/dtype, image, text, int, float, bytes, json); it is written last and the folder renamed into
place, so a database without a manifest is unfinished and is refused.
"""
from __future__ import annotations

import io
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import lmdb
import numpy as np
import torch
from PIL import Image

from shared.data.decode import decode_image
from shared.data.skips import BadSample
from shared.io import atomic_dir, read_json, write_json

MANIFEST = "manifest.json"
FORMAT = "imagegen-lmdb"


class IncompleteDatabase(RuntimeError):
    """An LMDB folder without a manifest: its writer did not finish."""


def _key(field: str, index: int) -> bytes:
    return f"{field}/{index:010d}".encode()


def _kind_of(name: str, value: Any, image_fields: Sequence[str]) -> dict:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return {"kind": "array", "shape": list(value.shape), "dtype": value.dtype.str}
    if isinstance(value, Image.Image) or (isinstance(value, (bytes, bytearray)) and name in image_fields):
        return {"kind": "image"}
    if isinstance(value, (bytes, bytearray)):
        return {"kind": "bytes"}
    if isinstance(value, str):
        return {"kind": "text"}
    if isinstance(value, (bool, int, np.integer)):
        return {"kind": "int"}
    if isinstance(value, (float, np.floating)):
        return {"kind": "float"}
    if isinstance(value, (dict, list, tuple)):
        return {"kind": "json"}
    raise TypeError(f"field '{name}': cannot store a {type(value).__name__}")


class LMDBWriter:
    """Write records into a new LMDB database at `path`, atomically (see the module doc).

    Use as a context manager (an exception discards everything), or call `close()` to finish / `abort()`.
    PIL images are encoded as `image_format`; bytes in `image_fields` are stored as already-encoded images.
    """

    def __init__(self, path: str | Path, image_fields: Sequence[str] = ("image",), image_format: str = "png",
                 map_size: int = 1 << 30, commit_every: int = 1000, meta: Mapping | None = None):
        self.path = Path(path)
        self.image_fields = tuple(image_fields)
        self.image_format = image_format
        self.commit_every = commit_every
        self.meta = dict(meta or {})
        self.fields: dict[str, dict] | None = None
        self.count = 0
        self._pending: list[tuple[bytes, bytes]] = []
        self._ctx = atomic_dir(self.path)
        self.tmp = self._ctx.__enter__()
        self._env = lmdb.open(str(self.tmp), map_size=map_size, subdir=True, readahead=False, meminit=False)
        self._done = False

    def __enter__(self) -> "LMDBWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc_type, exc, tb)
        return False

    def _encode(self, name: str, value: Any, spec: dict) -> bytes:
        kind = spec["kind"]
        if kind == "array":
            a = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if list(a.shape) != spec["shape"] or a.dtype.str != spec["dtype"]:
                raise ValueError(f"record {self.count}, field '{name}': shape {list(a.shape)} dtype {a.dtype.str}; "
                                 f"the first record had shape {spec['shape']} dtype {spec['dtype']}")
            return np.ascontiguousarray(a).tobytes()
        if kind == "image":
            if isinstance(value, Image.Image):
                buf = io.BytesIO()
                value.save(buf, format=self.image_format)
                return buf.getvalue()
            return bytes(value)
        if kind == "bytes":
            return bytes(value)
        if kind == "text":
            return str(value).encode("utf-8")
        if kind in ("int", "float"):
            return repr(int(value) if kind == "int" else float(value)).encode()
        return json.dumps(value).encode()

    def add(self, **fields: Any) -> int:
        """Append one record; returns its index. Every record must have the first record's fields."""
        if self._done:
            raise RuntimeError(f"{self.path}: writer already closed")
        if self.fields is None:
            if not fields:
                raise ValueError("add(): give at least one field, e.g. add(image=..., caption=...)")
            self.fields = {k: _kind_of(k, v, self.image_fields) for k, v in fields.items()}
        elif set(fields) != set(self.fields):
            raise ValueError(f"record {self.count}: fields {sorted(fields)}; expected {sorted(self.fields)}")
        for name, value in fields.items():
            self._pending.append((_key(name, self.count), self._encode(name, value, self.fields[name])))
        self.count += 1
        if self.count % self.commit_every == 0:
            self._flush()
        return self.count - 1

    def _flush(self) -> None:
        while self._pending:
            try:
                with self._env.begin(write=True) as txn:
                    for k, v in self._pending:
                        txn.put(k, v)
                self._pending = []
            except lmdb.MapFullError:  # the transaction was aborted; grow the map and redo it
                self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def close(self) -> Path:
        """Commit, write the manifest, and move the finished database to `path`."""
        if self._done:
            return self.path
        try:
            self._flush()
            self._env.sync()
            self._env.close()
            write_json(self.tmp / MANIFEST, {
                "format": FORMAT, "version": 1, "id": uuid.uuid4().hex, "count": self.count,
                "fields": self.fields or {}, "image_format": self.image_format,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "meta": self.meta})
        except BaseException as e:
            self.abort(type(e), e, e.__traceback__)
            raise
        self._done = True
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self, exc_type=None, exc=None, tb=None) -> None:
        """Discard the temporary database; `path` is left as it was."""
        if self._done:
            return
        self._done = True
        try:
            self._env.close()
        except lmdb.Error:
            pass
        try:
            self._ctx.__exit__(exc_type or RuntimeError, exc or RuntimeError("aborted"), tb)
        except BaseException:
            pass  # the context re-raises the exception we are already handling


def read_manifest(path: str | Path) -> dict:
    """The manifest of a finished database; IncompleteDatabase with a clear message for an unfinished one."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no LMDB database here (expected a folder with data.mdb and {MANIFEST})")
    if not (path / MANIFEST).is_file():
        raise IncompleteDatabase(
            f"{path}: no {MANIFEST}, so this database was never finished (its writer was interrupted or is "
            f"still running) and may be missing records; delete it and write it again")
    manifest = read_json(path / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if not (path / "data.mdb").is_file():
        raise IncompleteDatabase(f"{path}: {MANIFEST} present but data.mdb missing")
    return manifest


_ENVS: dict[tuple[str, str], tuple[int, lmdb.Environment]] = {}


def _open_readonly(path: Path, db_id: str) -> lmdb.Environment:
    """One read-only handle per database and process (py-lmdb refuses a second open of the same files)."""
    key = (os.path.realpath(path), db_id)  # the id changes when the database is rewritten in place
    hit = _ENVS.get(key)
    if hit is not None and hit[0] == os.getpid():
        return hit[1]
    if hit is not None:
        # inherited through fork (DataLoader workers): LMDB handles must not be used in a child; closing this
        # copy only unmaps it here and lets the child open its own
        try:
            hit[1].close()
        except lmdb.Error:
            pass
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, subdir=True,
                    max_readers=1024)
    _ENVS[key] = (os.getpid(), env)
    return env


class LMDBDataset(torch.utils.data.Dataset):
    """Random access to a finished database: ds[i] -> {field: value} (+ "key": str(i) if no key field).

    arrays -> tensors of the stored shape/dtype; images -> transform(PIL RGB) (default uint8 (C, H, W));
    text -> str; int/float -> number; json -> object. `fields` selects a subset to read.
    `transforms` maps field names to callables applied after decoding (`transform` is the one for "image").
    A record whose image does not decode raises BadSample (the loader counts and skips it).
    """

    def __init__(self, path: str | Path, fields: Sequence[str] | None = None, transform: Callable | None = None,
                 transforms: Mapping[str, Callable] | None = None):
        from shared.data.transforms import to_uint8_tensor

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        all_fields = self.manifest["fields"]
        missing = [f for f in (fields or ()) if f not in all_fields]
        if missing:
            raise KeyError(f"{self.path}: no field(s) {missing}; it has {sorted(all_fields)}")
        self.fields = {k: all_fields[k] for k in (fields or all_fields)}
        self.transforms = dict(transforms or {})
        if transform is not None:
            self.transforms["image"] = transform
        for name, spec in self.fields.items():
            if spec["kind"] == "image":
                self.transforms.setdefault(name, to_uint8_tensor)

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def _txn(self):
        # opened on first use, so the dataset pickles to workers without a handle
        return _open_readonly(self.path, self.manifest.get("id", "")).begin(buffers=False)

    def _decode(self, name: str, spec: dict, data: bytes, index: int) -> Any:
        kind = spec["kind"]
        if kind == "array":
            a = np.frombuffer(data, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])
            return torch.from_numpy(a.copy())
        if kind == "image":
            return decode_image(data, f"{self.path}[{index}].{name}")
        if kind == "text":
            return data.decode("utf-8")
        if kind == "int":
            return int(data)
        if kind == "float":
            return float(data)
        if kind == "json":
            return json.loads(data)
        return data

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: index {index} out of range 0..{len(self) - 1}")
        out = {}
        with self._txn() as txn:
            for name, spec in self.fields.items():
                data = txn.get(_key(name, index))
                if data is None:
                    raise BadSample("missing_field", f"{self.path}[{index}]", f"no '{name}'")
                value = self._decode(name, spec, data, index)
                tf = self.transforms.get(name)
                out[name] = tf(value) if tf is not None else value
        out.setdefault("key", str(index))
        return out

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self[i]


class LMDBSource:
    """Loader source over an LMDBDataset: one unit per record (index), shuffled per epoch by the loader."""

    buffered = False

    def __init__(self, dataset: LMDBDataset | str | Path, **kw):
        self.dataset = dataset if isinstance(dataset, LMDBDataset) else LMDBDataset(dataset, **kw)

    def __repr__(self) -> str:
        return f"LMDBSource({self.dataset.path}, {len(self.dataset)} records)"

    def units(self) -> Sequence[int]:
        return range(len(self.dataset))

    def fingerprint(self) -> str:
        return f"lmdb:{len(self.dataset)}:{self.dataset.manifest.get('id', '')}"

    def read(self, unit: int, report) -> Iterator[int]:
        yield unit  # records are read in decode(), so a resume's fast-forward costs nothing

    def decode(self, raw: int) -> dict:
        return self.dataset[raw]
