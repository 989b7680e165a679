"""Reading and decoding one image, with failures sorted into skip reasons instead of exceptions mid-epoch.

Every PIL mode becomes correct 8-bit RGB (not PIL's bare `convert("RGB")`, which clips 16-bit values: a 16-bit PNG
came out almost white):
    1, L, RGB, RGBX, YCbCr, LAB, HSV      PIL's conversion
    I;16 (and I;16B/L/N), I               16-bit values scaled to 8 bits (v * 255 / 65535, rounded); an `I` image
                                          whose values all fit in 0..255 is taken as 8-bit
    F                                     taken as 0..1 if its maximum is <= 1, else as 0..255; clipped
    LA, La, PA, RGBA, RGBa, P and L/RGB with a transparency entry
                                          composited on `background` (default BACKGROUND = white) by their alpha
    CMYK                                  PIL's CMYK -> RGB (Adobe-inverted JPEGs are un-inverted by PIL on load)
EXIF orientation is applied first, so a phone photo stored sideways is trained on upright. Images whose shorter
side is below `min_size` raise Filtered("too_small") (counted, not bad data).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.data.skips import BadSample, Filtered, SkipCounter

BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


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


def _scaled_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float greyscale -> 8-bit L, by the value range the mode stands for."""
    a = np.asarray(img)
    if img.mode == "F":
        a = a.astype(np.float64)
        a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
    elif img.mode in _SIXTEEN_BIT or (img.mode == "I" and a.size and a.max() > 255):
        a = a.astype(np.float64) * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8), "L")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """`img` (any PIL mode) as 8-bit RGB, per the table in the module doc."""
    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        img = _scaled_to_l(img)
    if img.mode == "P" or "transparency" in img.info:
        img = img.convert("RGBA")  # a palette may carry alpha (tRNS); an L/RGB image may name a transparent colour
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_image(data: bytes, name: str, mode: str | None = "RGB", background: tuple[int, int, int] = BACKGROUND,
                 min_size: int = 0) -> Image.Image:
    """Fully decode `data` (so a truncated file fails here, not later inside a transform), apply the EXIF
    orientation, convert to RGB as the module doc says (then to `mode` if it is not RGB; None keeps the file's mode).
    Raises BadSample for data that cannot be used, Filtered("too_small") below `min_size`."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        img = ImageOps.exif_transpose(img)  # a no-op (same image) without an orientation tag
        if mode is not None:
            img = to_rgb(img, background)
            if mode != "RGB":
                img = img.convert(mode)
    except UnidentifiedImageError as e:
        # a file cut inside its header is not identified by some Pillow versions; its magic bytes still tell
        reason = "truncated" if _is_truncation(e, data) else "not_an_image"
        raise BadSample(reason, name, str(e).split(" <")[0]) from None
    except Image.DecompressionBombError as e:
        raise BadSample("too_large", name, str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadSample("truncated" if _is_truncation(e, data) else "undecodable", name, str(e)) from None
    if min_size and min(img.size) < min_size:
        raise Filtered("too_small")
    return img


def probe_image(path: str | Path, min_size: int = 0) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only (cheap: no pixel decode). Raises BadSample for
    a file that is missing (a dangling link), unreadable, empty or not an image, Filtered below `min_size`. A file
    cut in its pixel data passes here and is caught when decoded."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if not head:
                raise BadSample("not_an_image", name, "empty file (0 bytes)")
            f.seek(0)
            with Image.open(f) as im:
                w, h = im.size
                orientation = im.getexif().get(0x0112, 1)
    except BadSample:
        raise
    except UnidentifiedImageError as e:
        raise BadSample("not_an_image", name, str(e).split(" <")[0]) from None
    except OSError as e:
        raise BadSample("unreadable", name, e.strerror or str(e)) from None
    except (SyntaxError, ValueError, EOFError) as e:
        raise BadSample("undecodable", name, str(e)) from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: sides swap
        w, h = h, w
    if min_size and min(w, h) < min_size:
        raise Filtered("too_small")
    return w, h


def check_images(root: str | Path, paths: Iterable[str], min_size: int = 0, decode: bool = True,
                 counter: SkipCounter | None = None) -> tuple[SkipCounter, dict[str, str]]:
    """What a training run would skip: every image under `root` probed (and fully decoded when `decode`).
    Returns the counts and {relative path: "reason (detail)"} for each image that would be skipped or filtered."""
    counter = counter if counter is not None else SkipCounter(log_first=0)
    why: dict[str, str] = {}
    root = Path(root)
    for rel in paths:
        counter.add_seen()
        try:
            probe_image(root / rel, min_size)
            if decode:
                decode_image(read_file(root / rel), str(root / rel), min_size=min_size)
        except BadSample as e:
            counter.record(e.reason, e.file, e.detail)
            why[rel] = f"{e.reason}" + (f" ({e.detail})" if e.detail else "")
        except Filtered as e:
            counter.record_filtered(e.reason)
            why[rel] = f"filtered: {e.reason} (shorter side below {min_size} px)"
    return counter, why
