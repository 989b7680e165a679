"""Data-loading rate: WebDataset shards and LMDB through ResumableLoader vs a bare PIL decode loop.

    python bench/bench_data.py                       # ~30 s on 2 cores
    python bench/bench_data.py n_images=800 size=512 num_workers=2 methods=shards,lmdb,folder

Makes `n_images` JPEG photos (random crops of sklearn's two sample photos), converts the folder with the
project's converters into shards and into LMDB (encoded: the same JPEG bytes), then times, in one process,
    shards    ResumableLoader(ShardSource) -> uint8 batches (tar parsing, shuffle buffer, collate included)
    lmdb      ResumableLoader(LMDBSource), same JPEG bytes from LMDB
    lmdb-raw  LMDB storing uint8 arrays (no decode at all), for scale
    folder    ResumableLoader(FolderSource) over the original files (methods=...,folder)
against the bare decode loop (read each file, PIL open + convert RGB + numpy array). Each batch (each epoch when
num_workers > 0) is paired with a PIL pass over as many images run right after it, so both see the same load from
other jobs; the printed ratio is the median over pairs (goal: >= 0.8 for shards and LMDB). With num_workers=0 the
CPU-time ratio is shown too.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shared.config import cli, resolve
from shared.data import FolderSource, LMDBSource, ResumableLoader, ShardSource
from shared.data import folder_to_lmdb, folder_to_shards


@dataclass
class Config:
    n_images: int = 300
    size: int = 256
    quality: int = 90
    batch_size: int = 32
    num_workers: int = field(default=0, metadata={"help": "loader workers (the PIL loop is one process)"})
    shuffle_buffer: int = 256
    repeats: int = field(default=5, metadata={"help": "epochs per loader"})
    methods: str = field(default="shards,lmdb,lmdb-raw", metadata={"help": "compared with pil; also: folder"})
    threads: int = 1
    work_dir: str = field(default="", metadata={"help": "where to write the data ('' = a temp folder, removed)"})
    seed: int = 0


def make_photos(out: Path, n: int, size: int, quality: int, seed: int) -> list[Path]:
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(p) for p in load_sample_images().images]  # two 427x640 photos
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        src = photos[i % len(photos)]
        crop = min(src.shape[0], src.shape[1], int(rng.integers(size // 2, size * 2)))
        y = int(rng.integers(0, src.shape[0] - crop + 1))
        x = int(rng.integers(0, src.shape[1] - crop + 1))
        img = Image.fromarray(src[y:y + crop, x:x + crop]).resize((size, size), Image.BICUBIC)
        p = out / f"{i:05d}.jpg"
        img.save(p, quality=quality)
        (out / f"{i:05d}.txt").write_text(f"photo {i}")
        paths.append(p)
    return paths


def pil_loop(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        a = np.asarray(Image.open(p).convert("RGB"))
        n += a.shape[0] > 0
    return n


def paired(make_loader, paths: list[Path], epochs: int, per_batch: bool) -> dict:
    """Time the loader, then a PIL loop over as many images; ratios per pair, then their median.

    per_batch: pair every batch (~50 ms apart, so both see the same load from other jobs on the machine);
    only valid in-process: workers would prefetch during the PIL pass. Otherwise pair whole epochs.
    """
    wall, cpu, n, t_loader, t_pil = [], [], 0, 0.0, 0.0
    j = 0

    def pil_pass(k: int) -> tuple[float, float]:
        nonlocal j
        chunk = [paths[(j + i) % len(paths)] for i in range(k)]
        j += k
        t, c = time.perf_counter(), time.process_time()
        pil_loop(chunk)
        return time.perf_counter() - t, time.process_time() - c

    for _ in range(epochs):
        it = iter(make_loader())
        et, ec, ek = time.perf_counter(), time.process_time(), 0
        while True:
            t, c = time.perf_counter(), time.process_time()
            batch = next(it, None)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            if batch is None:
                break
            k = len(batch["key"])
            ek += k
            if per_batch:
                pt, pc = pil_pass(k)
                wall.append(pt / dt)
                cpu.append(pc / max(dc, 1e-9))
                n, t_loader, t_pil = n + k, t_loader + dt, t_pil + pt
        if not per_batch:
            dt, dc = time.perf_counter() - et, time.process_time() - ec
            pt, pc = pil_pass(ek)
            wall.append(pt / dt)
            cpu.append(pc / max(dc, 1e-9))
            n, t_loader, t_pil = n + ek, t_loader + dt, t_pil + pt
    assert n == epochs * len(paths), f"{n} images loaded, expected {epochs * len(paths)}"
    return {"rate": n / t_loader, "pil_rate": n / t_pil, "ratio": float(np.median(wall)),
            "cpu_ratio": float(np.median(cpu))}


def main(cfg=None):
    cfg = resolve(Config, cfg)
    torch.set_num_threads(cfg.threads)
    work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="bench_data."))
    try:
        t0 = time.perf_counter()
        paths = make_photos(work / "images", cfg.n_images, cfg.size, cfg.quality, cfg.seed)
        folder_to_shards.main({"src": str(work / "images"), "out_dir": str(work / "shards"), "shard_size": 100})
        folder_to_lmdb.main({"src": str(work / "images"), "out_dir": str(work / "lmdb")})
        folder_to_lmdb.main({"src": str(work / "images"), "out_dir": str(work / "lmdb_raw"), "image_mode": "array"})
        print(f"data: {cfg.n_images} JPEGs {cfg.size}x{cfg.size} q{cfg.quality}, "
              f"{sum(p.stat().st_size for p in paths) / len(paths) / 1024:.0f} KiB each; "
              f"prepared in {time.perf_counter() - t0:.1f} s")

        kw = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, seed=cfg.seed)
        loaders = {
            "shards": lambda: ResumableLoader(ShardSource(work / "shards"), shuffle_buffer=cfg.shuffle_buffer, **kw),
            "lmdb": lambda: ResumableLoader(LMDBSource(work / "lmdb"), **kw),
            "folder": lambda: ResumableLoader(FolderSource(work / "images"), **kw),
            "lmdb-raw": lambda: ResumableLoader(LMDBSource(work / "lmdb_raw"), **kw),
        }
        methods = cfg.methods.split(",")
        unknown = set(methods) - set(loaders)
        if unknown:
            raise ValueError(f"methods: unknown {sorted(unknown)}; choose from {', '.join(loaders)}")
        pil_loop(paths)  # warm-up: page cache, allocator
        in_process = cfg.num_workers == 0  # with workers, decoding happens in other processes, ahead of time
        results = {m: paired(loaders[m], paths, cfg.repeats, per_batch=in_process) for m in methods}
        show_cpu = in_process
        unit, units = ("batch", "batches") if in_process else ("epoch", "epochs")
        print(f"{cfg.repeats} epochs per loader; each {unit} is timed against a PIL loop over as many images right "
              f"after it; ratio = median over {units} of PIL time / loader time (num_workers={cfg.num_workers})")
        print(f"{'method':<10} {'images/s':>9} {'PIL img/s':>10} {'wall ratio':>11}"
              + (f" {'cpu ratio':>10}" if show_cpu else ""))
        for m, r in results.items():
            print(f"{m:<10} {r['rate']:9.0f} {r['pil_rate']:10.0f} {r['ratio']:11.2f}"
                  + (f" {r['cpu_ratio']:10.2f}" if show_cpu else ""))
        key = "cpu_ratio" if show_cpu else "ratio"
        ok = all(results[m][key] >= 0.8 for m in ("shards", "lmdb") if m in results)
        print(f"goal (shards and lmdb >= 0.8 x PIL, {key.replace('_', ' ')}): {'met' if ok else 'NOT met'}")
        return results
    finally:
        if not cfg.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    cli(main, Config, None, __doc__)
