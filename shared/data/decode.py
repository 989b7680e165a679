"""Reading and decoding one image, with failures sorted into skip reasons instead of exceptions mid-epoch."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from shared.data.skips import BadSample


def read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise BadSample("unreadable", str(path), e.strerror or type(e).__name__) from None


def _is_truncation(e: Exception, data: bytes) -> bool:
    msg = str(e).lower()
    if "truncated" in msg or "broken data stream" in msg or "premature end" in msg:
        return True
    # PIL's message depends on where the file was cut (inside the tables it is "cannot load this image"):
    # a missing end marker is the reliable sign of a partial file
    if data[:2] == b"\xff\xd8":
        return not data.rstrip(b"\0").endswith(b"\xff\xd9")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-16:]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return int.from_bytes(data[4:8], "little") + 8 > len(data)
    return False


def decode_image(data: bytes, name: str, mode: str | None = "RGB") -> Image.Image:
    """Fully decode `data` (so a truncated file fails here, not later inside a transform); convert to `mode`."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        if mode and img.mode != mode:
            # palette/alpha images: composite nothing, just drop alpha; "P" with transparency needs RGBA first
            img = img.convert("RGBA").convert(mode) if img.mode == "P" and mode == "RGB" else img.convert(mode)
    except UnidentifiedImageError as e:
        # a file cut inside its header is not identified by some Pillow versions; its magic bytes still tell
        reason = "truncated" if _is_truncation(e, data) else "not_an_image"
        raise BadSample(reason, name, str(e).split(" <")[0]) from None
    except Image.DecompressionBombError as e:
        raise BadSample("too_large", name, str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadSample("truncated" if _is_truncation(e, data) else "undecodable", name, str(e)) from None
    return img
