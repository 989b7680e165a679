"""Data-loading rate: WebDataset shards and LMDB through ResumableLoader vs a bare PIL decode loop.

    python bench/bench_data.py                       # ~30 s on 2 cores
    python bench/bench_data.py n_images=800 size=512 num_workers=2

Makes `n_images` JPEG photos (random crops of sklearn's two sample photos), converts the folder with the
project's converters into shards and into LMDB (encoded: the same JPEG bytes), then times, in one process and
interleaved `repeats` times:
    pil       read each file, PIL open + convert RGB + numpy array: the bare decode loop
    shards    ResumableLoader(ShardSource) -> uint8 batches (tar parsing, shuffle buffer, collate included)
    lmdb      ResumableLoader(LMDBSource), same JPEG bytes from LMDB
    folder    ResumableLoader(FolderSource) over the original files
    lmdb-raw  LMDB storing uint8 arrays (no decode at all), for scale
and prints images/s (best pass) and each loader's ratio to the PIL loop: per round, then the median over
rounds, which is robust to other load on the machine (goal: >= 0.8 for shards and LMDB).
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
    repeats: int = 7
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


def loader_loop(make) -> int:
    return sum(len(b["key"]) for b in make())


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
        runs = {
            "pil": lambda: pil_loop(paths),
            "shards": lambda: loader_loop(lambda: ResumableLoader(ShardSource(work / "shards"),
                                                                  shuffle_buffer=cfg.shuffle_buffer, **kw)),
            "lmdb": lambda: loader_loop(lambda: ResumableLoader(LMDBSource(work / "lmdb"), **kw)),
            "folder": lambda: loader_loop(lambda: ResumableLoader(FolderSource(work / "images"), **kw)),
            "lmdb-raw": lambda: loader_loop(lambda: ResumableLoader(LMDBSource(work / "lmdb_raw"), **kw)),
        }
        wall = {k: [] for k in runs}
        cpu = {k: [] for k in runs}  # this process's CPU time: what other jobs on the machine cannot inflate
        names = list(runs)
        for r in range(cfg.repeats):
            # interleaved, in a rotating order, so load from other processes hits every method alike
            for name in names[r % len(names):] + names[:r % len(names)]:
                t, c = time.perf_counter(), time.process_time()
                n = runs[name]()
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
                assert n == cfg.n_images, f"{name}: {n} images, expected {cfg.n_images}"
        rates = {k: cfg.n_images / min(v) for k, v in wall.items()}

        def ratio(times: dict, k: str) -> float:  # per round against that round's PIL pass; median of rounds
            return float(np.median([p / t for p, t in zip(times["pil"], times[k])]))

        ratios = {k: ratio(wall, k) for k in runs if k != "pil"}
        cpu_ratios = {k: ratio(cpu, k) for k in runs if k != "pil"}
        show_cpu = cfg.num_workers == 0  # with workers the decoding happens in other processes
        print(f"{cfg.repeats} interleaved rounds, num_workers={cfg.num_workers}; images/s = best wall-clock pass; "
              f"ratios = median over rounds of PIL time / loader time")
        print(f"{'method':<10} {'images/s':>9} {'wall ratio':>11}" + (f" {'cpu ratio':>10}" if show_cpu else ""))
        print(f"{'pil':<10} {rates['pil']:9.0f} {1:11.2f}" + (f" {1:10.2f}" if show_cpu else ""))
        for k in ratios:
            print(f"{k:<10} {rates[k]:9.0f} {ratios[k]:11.2f}" + (f" {cpu_ratios[k]:10.2f}" if show_cpu else ""))
        best = cpu_ratios if show_cpu else ratios
        ok = best["shards"] >= 0.8 and best["lmdb"] >= 0.8
        print(f"goal (shards and lmdb >= 0.8 x PIL, {'cpu' if show_cpu else 'wall'} ratio): "
              f"{'met' if ok else 'NOT met'}")
        return {"rates": rates, "ratios": ratios, "cpu_ratios": cpu_ratios if show_cpu else None}
    finally:
        if not cfg.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    cli(main, Config, None, __doc__)
