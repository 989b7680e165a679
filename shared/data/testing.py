"""Real broken data for tests: synthetic photos, truncated and garbage images, shards with broken members.

Used by tests/test_data_*.py and the benchmark; projects can use it to check that their training scripts
survive bad data too.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A smooth random RGB image (compresses like a photo, unlike white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    noise = rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" and not kw else kw))
    return buf.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first `keep` share of an encoded image, as a partial download leaves it."""
    return data[: max(16, int(len(data) * keep))]


GARBAGE = b"this is not an image at all\x00\x01\x02" * 8


def write_tar(path: str | Path, members: list[tuple[str, bytes]]) -> Path:
    """A plain tar of (name, bytes) members in the given order, with fixed mtimes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return path


def corrupt_member_header(path: str | Path, member: str) -> None:
    """Overwrite the header block of `member` with garbage, as bit rot or a bad copy would."""
    path = Path(path)
    with tarfile.open(path, "r") as tar:
        offset = tar.getmember(member).offset
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xde\xad\xbe\xef" * 128)


def truncate_file(path: str | Path, keep_bytes: int) -> None:
    path = Path(path)
    path.write_bytes(path.read_bytes()[:keep_bytes])


def member_data_end(path: str | Path, member: str) -> int:
    """Byte offset just inside the data of `member` (truncating there cuts the member in half)."""
    with tarfile.open(path, "r") as tar:
        info = tar.getmember(member)
    return info.offset_data + max(1, info.size // 2)
