"""Fetching paper-scale files (run by the workflow's download rules, on a machine with internet access).

    item = Download("SDXL base", repo="stabilityai/stable-diffusion-xl-base-1.0", allow=("*.json", ...))
    fetch(item, "downloads/sdxl_base")          -> {relative path: {"sha256", "bytes"}}, also in download.json

A Download is a Hugging Face repo (a snapshot filtered by allow/ignore patterns, or named `files`) or plain
`urls`. Every fetched file is hashed; a published SHA-256 (`sha256={name: digest}`) is checked, otherwise the
digest is recorded in `<out_dir>/download.json` so later runs can pin it. Files land atomically (a half
downloaded file never carries the final name) and a rerun skips files download.json already vouches for.
`mirror=` serves plain URLs from a staging folder or another server (air-gapped clusters copy the files there
first; Hugging Face downloads follow HF_ENDPOINT instead). With `unpack=True`, zip archives are extracted into
out_dir/<archive name without .zip>/. Files the steps write themselves under dot-folders (.download/) are not
recorded as downloaded.
"""
from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from tqdm import tqdm

from shared.io import atomic_dir, atomic_path, read_json, write_json

RECORD = "download.json"


@dataclass(frozen=True)
class Download:
    description: str
    repo: str = ""  # Hugging Face repo id
    revision: str = "main"
    files: tuple[str, ...] = ()  # files of `repo`; none = a snapshot filtered by allow/ignore
    allow: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()  # plain http(s)/file URLs
    sha256: Mapping[str, str] = field(default_factory=dict)  # published digests by file name
    unpack: bool = False  # extract fetched .zip archives (kept, for their digests) into out_dir/<stem>/


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mirrored(url: str, mirror: str) -> str:
    if not mirror:
        return url
    if "://" not in mirror:
        mirror = Path(mirror).resolve().as_uri()
    return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1].split("?")[0]


def _fetch_url(url: str, target: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(target) as tmp:
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeError(f"{url}: download to {target} failed ({e}); nothing was written under that name. "
                           f"Without internet here, stage the file in a folder and pass mirror=<folder>") from None


def _unpack(archive: Path, out: Path) -> Path:
    """Extract `archive` into out/<archive stem>/ (replaced as a whole, never half-written)."""
    try:
        z = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise ValueError(f"{archive}: not a readable zip archive ({e}); delete it and run the download again") from None
    with z:
        for name in z.namelist():  # refuse members that would land outside the folder
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"{archive}: member {name!r} points outside the folder")
        with atomic_dir(out / archive.stem) as tmp:
            z.extractall(tmp)
    return out / archive.stem


def fetch(item: Download, out_dir: str | Path, mirror: str = "") -> dict[str, dict]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    known = read_json(out / RECORD).get("files", {}) if (out / RECORD).is_file() else {}
    fetched: list[Path] = []
    for url in item.urls:
        target = out / url.rsplit("/", 1)[-1].split("?")[0]
        if not (target.is_file() and known.get(target.name, {}).get("bytes") == target.stat().st_size):
            _fetch_url(_mirrored(url, mirror), target)
        fetched.append(target)
    if item.repo and item.files:
        from huggingface_hub import hf_hub_download

        fetched += [Path(hf_hub_download(item.repo, f, revision=item.revision, local_dir=str(out)))
                    for f in item.files]
    elif item.repo:
        from huggingface_hub import snapshot_download

        snapshot_download(item.repo, revision=item.revision, local_dir=str(out),
                          allow_patterns=list(item.allow) or None, ignore_patterns=list(item.ignore) or None)
        # hub files only: not our record, not hidden folders (.cache of the hub, .download of our steps)
        fetched += [p for p in sorted(out.rglob("*")) if p.is_file() and p.name != RECORD
                    and not any(part.startswith(".") for part in p.relative_to(out).parts)]
    if not fetched:
        raise ValueError(f"download {item.description!r} names no repo and no urls")

    record = {}
    for path in fetched:
        rel = str(path.relative_to(out))
        digest = sha256_of(path)
        published = item.sha256.get(path.name)
        if published and digest != published:
            path.unlink()
            raise ValueError(f"{path}: sha256 {digest} differs from the published {published}; the file was removed, "
                             f"run the download again")
        record[rel] = {"sha256": digest, "bytes": path.stat().st_size, "verified": bool(published)}
    if item.unpack:
        for path in fetched:
            if path.suffix == ".zip":
                _unpack(path, out)
    write_json(out / RECORD, {"description": item.description, "source": item.repo or list(item.urls),
                              "files": record})
    print(f"{item.description}: {len(record)} files in {out}")
    return record
