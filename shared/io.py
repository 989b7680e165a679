"""Atomic file writes: a reader never sees a half-written file, and a crash never loses the previous one."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the mode any new file gets (0666 minus the umask), so results stay
        # readable by the group on a shared cluster
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def replace_dir(tmp: Path, path: Path) -> None:
    """Move a finished directory `tmp` onto `path`, swapping out any existing one, and fsync the parent."""
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a finished folder gets the usual mode
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with reporting_disk_full(path), atomic_path(path) as tmp:  # a full disk: DiskFull naming `path`
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with reporting_disk_full(path), atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


class DiskFull(OSError):
    """A write failed because the file system is full: names the file and the space left."""


# what torch.save / safetensors say when a write runs out of space (they raise without an errno or a path)
_WRITE_FAILURES = ("no space left", "unexpected pos", "basic_ios::clear", "iostream error", "file write failed",
                   "disk quota", "failed to write")
_ALMOST_FULL = 1 << 20  # bytes: below this, a failed write with no errno is taken as a full disk


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes available to this user on the file system holding `path` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return -1


@contextlib.contextmanager
def reporting_disk_full(path: str | os.PathLike) -> Iterator[None]:
    """Turn an out-of-space failure while writing `path` into DiskFull("no space left on device while writing
    <path> (<n> bytes free)"); other write failures keep their type. Callers keep their previous file intact."""
    import errno

    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        code = getattr(e, "errno", None)
        msg = str(e).lower()
        full = code in (errno.ENOSPC, errno.EDQUOT) or (
            any(s in msg for s in _WRITE_FAILURES) and 0 <= free_bytes(path) < _ALMOST_FULL)
        if not full:
            raise
        raise DiskFull(errno.ENOSPC, f"no space left on device while writing {path} ({free_bytes(path)} bytes "
                                     f"free)") from e
