"""Reliability report: the faults of issue 17 tried on the project's own step scripts, one table.

    python bench/faults.py                          # ~3-5 min on 2 quiet cores; prints the table
    python bench/faults.py out=RELIABILITY_table.md cases=bad_folder,resume_issue

Columns: case | expected | observed | data lost | message (the first line the user sees). Cases:
    bad_folder, bad_folder_buckets   train_sd.py on a folder with a truncated JPEG, a zero-byte .png, a text file
                                     named .png, a dangling symlink and a 1x1 image (tests/test_faults.py's folder)
    list                             train_sd.py list=true on the same folder
    decode_*                         one image per PIL mode against its expected pixels (shared.data.decode)
    resume_issue                     the issue's run: train_sd.py scale=tiny base=preset arch=sd15 max_steps=60
                                     ckpt_every=3, SIGKILLed after step 8, resumed, vs uninterrupted (max |diff|)
    kill_mid_write                   train_sd.py SIGKILLed inside its 2nd checkpoint write, resumed
    disk_full                        a checkpoint write on a 1 MiB tmpfs (as root; else an injected ENOSPC)
    shard_cut                        22 samples written, the shard cut inside the 17th
    examples                         every tiny example command in the step scripts' docstrings
"""
from __future__ import annotations

import errno
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from shared.config import cli, resolve  # noqa: E402

CASES = ("bad_folder", "bad_folder_buckets", "list", "decode", "resume_issue", "kill_mid_write", "disk_full",
         "shard_cut", "examples")


@dataclass
class Config:
    cases: str = ",".join(CASES)
    out: str = ""  # also write the table (markdown) here
    work: str = ""  # '' = a temporary folder


def _row(case, expected, observed, lost, message, ok):
    return {"case": case, "expected": expected, "observed": observed, "data lost": lost,
            "message": " ".join(str(message).split())[:160], "ok": ok}


def _train_sd(**kw):
    from accelerate.state import AcceleratorState

    from projects.sd_flux_lab import train_sd
    try:
        return train_sd.main({"scale": "tiny", "base": "preset", "arch": "sd15", "batch_size": 4, "epochs": 1,
                              "sample_steps": 1, "validation_prompts": ["red seven"], "validation_seeds": [0],
                              "progress": False, **kw})
    finally:
        AcceleratorState._reset_state(True)


def case_bad_folder(work: Path, buckets: bool) -> dict:
    import contextlib

    from test_faults import make_bad_folder
    folder = work / "pics" if (work / "pics").is_dir() else make_bad_folder(work / "pics")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        r = _train_sd(data_dir=str(folder), run_dir=str(work / f"bad_run_{buckets}"), buckets=buckets)
    line = next((x for x in out.getvalue().splitlines() if x.startswith("training:")), "")
    ok = (r["skipped_listing"], r["filtered_listing"], r["skipped_training"]) == (3, 1, 1)
    return _row("bad_folder" + ("_buckets" if buckets else ""), "trains on the 15 good images; 4 bad + 1 small "
                "skipped, counted, named", f"{r['steps']} steps on {r['images'] - r['skipped_training']} images; "
                f"{r['skip_reasons']}; filtered too_small={r['filtered_listing']}",
                "the 5 faulty files only", line, ok)


def case_list(work: Path) -> dict:
    import contextlib

    from test_faults import make_bad_folder
    folder = work / "pics" if (work / "pics").is_dir() else make_bad_folder(work / "pics")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        c = _train_sd(data_dir=str(folder), list=True)
    would = [x for x in out.getvalue().splitlines() if x.startswith("would skip")]
    return _row("list", "list=true names the 5 files a run would leave out", f"{len(would)} 'would skip' lines; "
                f"{c['skip_reasons']}, filtered {c['filter_reasons']}", "none (dry run)", would[0] if would else "",
                len(would) == 5)


def _encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def case_decode() -> list[dict]:
    from shared.data import Filtered, decode_image

    rows = []

    def px(data, **kw):
        return np.asarray(decode_image(data, "x", **kw))

    grey16 = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))
    naive = float(np.asarray(Image.open(io.BytesIO(_encode(grey16))).convert("RGB")).mean())
    got = float(px(_encode(grey16)).mean())
    rows.append(_row("decode_16bit", "mid-grey 16-bit PNG -> 128", f"{got:.1f} (PIL convert: {naive:.1f})", "-",
                     "", got == 128))
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.putdata([0, 1])
    got = px(_encode(p, transparency=1)).tolist()
    rows.append(_row("decode_palette_transparency", "transparent index -> white background",
                     str(got[0]), "-", "", got[0][1] == [255, 255, 255]))
    la = Image.fromarray(np.array([[[100, 128]]], dtype=np.uint8), "LA")
    got = px(_encode(la), background=(0, 0, 0))[0, 0].tolist()
    rows.append(_row("decode_LA", "L=100 at alpha 128 on black -> 50", str(got), "-", "", got == [50, 50, 50]))
    cmyk = Image.new("CMYK", (1, 1), (255, 0, 0, 0))
    got = px(_encode(cmyk, "TIFF"))[0, 0].tolist()
    rows.append(_row("decode_CMYK", "pure cyan -> (0, 255, 255)", str(got), "-", "", got == [0, 255, 255]))
    a = np.zeros((2, 3, 3), dtype=np.uint8)
    a[0, 0] = 255
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6
    out = decode_image(_encode(img, exif=exif.tobytes()), "x")
    rows.append(_row("decode_exif_orientation", "orientation 6 -> stored 3x2 shown 2x3", f"{out.size}", "-", "",
                     out.size == (2, 3)))
    try:
        decode_image(_encode(Image.new("RGB", (1, 1))), "x", min_size=16)
        rows.append(_row("decode_1x1", "filtered as too_small", "kept", "-", "", False))
    except Filtered as e:
        rows.append(_row("decode_1x1", "filtered as too_small", f"Filtered({e.reason})", "the 1x1 image", "",
                         True))
    return rows


def case_resume_issue(work: Path) -> dict:
    from helpers.kill_resume import Script, kill_resume
    script = Script("train_sd_issue", "projects.sd_flux_lab.train_sd",
                    lambda w, r: ["scale=tiny", "base=preset", "arch=sd15", f"data_dir={w / 'lab/train'}",
                                  f"run_dir={r}", "max_steps=60", "ckpt_every=3", "progress=false"], needs=("lab",))
    _work_lab(work)
    rep = kill_resume(script, work, work / "resume", kill_at=8)
    diff = max([float(m.rsplit(" ", 1)[1]) for m in rep.mismatches if "max|diff|" in m] or [0.0])
    return _row("resume_issue", "killed -9 after step 8, resumed: final weights equal (was 2.1e-4 away)",
                f"resumed from step {rep.resumed_step}; {rep.compared} files compared, max |diff| {diff:g}",
                "steps 7-8 redone", rep.kill, rep.identical)


def _work_lab(work: Path) -> None:
    from helpers.kill_resume import prepare_work
    prepare_work(work, ["digits", "lab"])


def case_kill_mid_write(work: Path) -> dict:
    from helpers.kill_resume import SCRIPTS, kill_resume
    _work_lab(work)
    rep = kill_resume(SCRIPTS["train_sd"], work, work / "midwrite", mid_write=2)
    return _row("kill_mid_write", "killed inside checkpoint 4's write: resumes from 2, ends equal",
                f"resumed from step {rep.resumed_step}; identical={rep.identical}", "steps 3-4 redone", rep.kill,
                rep.identical)


def case_disk_full(work: Path) -> dict:
    from shared.io import DiskFull
    from shared.train import Checkpointer
    from shared.train import checkpoint as ck

    mnt = work / "tmpfs"
    mnt.mkdir(exist_ok=True)
    real = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    kind = "1 MiB tmpfs" if real.returncode == 0 else "injected ENOSPC"
    save_file = ck.save_file
    try:
        c = Checkpointer(mnt / "ckpts", keep_last=5)
        sd = {"w": torch.zeros(150_000)}  # 600 kB: the second one does not fit in 1 MiB
        c.save(1, tensors={"model": sd})
        if real.returncode != 0:
            def full(*a, **kw):
                raise OSError(errno.ENOSPC, "No space left on device")
            ck.save_file = full
        try:
            c.save(2, tensors={"model": sd})
            msg, ok = "no error", False
        except DiskFull as e:
            msg, ok = str(e), True
        kept = [i.step for i in c.list()]
        ok = ok and kept == [1]
    finally:
        ck.save_file = save_file
        if real.returncode == 0:
            subprocess.run(["umount", str(mnt)], capture_output=True)
    return _row("disk_full", "'no space left on device while writing <path> (<n> bytes free)', previous kept",
                f"{kind}: complete checkpoints after the failure: {kept}", "the unwritten checkpoint only", msg, ok)


def case_shard_cut(work: Path) -> dict:
    from shared.data import ResumableLoader, ShardSource, write_shards

    rng = np.random.default_rng(0)
    d = work / "shards"
    samples = ({"__key__": f"s{i:03d}", "png": _encode(Image.fromarray(rng.integers(0, 255, (16, 16, 3),
                                                                                    dtype=np.uint8))),
                "txt": f"caption {i}"} for i in range(22))
    index = write_shards(samples, d, shard_size=100)
    shard = d / index["shards"][0]["file"]
    with tarfile.open(shard) as t:
        m = [m for m in t.getmembers() if m.name == "s016.png"][0]
    shard.write_bytes(shard.read_bytes()[: m.offset_data + m.size // 2])
    loader = ResumableLoader(ShardSource(d, image_keys=("png",)), batch_size=4, max_skip_rate=1.0, shuffle=False)
    delivered = sum(len(b["caption"]) for b in loader)
    s = loader.skips
    return _row("shard_cut", "22 written, cut in the 17th: 16 delivered, 6 counted lost",
                f"{delivered} delivered; {s.summary()}", f"{s.bad} samples (the cut one and all after it)",
                s.listing().strip(), delivered == 16 and s.bad == 6 and s.seen == 22)


def case_examples(work: Path) -> dict:
    import importlib
    import os
    import shlex

    from accelerate.state import AcceleratorState

    from shared.config import parse_argv
    from test_faults_examples import CHAIN, _module, tiny_examples
    ex = work / "examples"
    ex.mkdir(exist_ok=True)
    here = os.getcwd()
    os.chdir(ex)
    ran, failed = 0, []
    try:
        for script in CHAIN:
            for argv in tiny_examples(script):
                module, args = _module(argv)
                try:
                    importlib.import_module(module).main(parse_argv(args))
                    ran += 1
                except Exception as e:
                    failed.append(f"python {shlex.join(argv)}: {type(e).__name__}: {e}")
                finally:
                    AcceleratorState._reset_state(True)
    finally:
        os.chdir(here)
    return _row("examples", "every tiny docstring example of the step scripts runs as typed",
                f"{ran} ran, {len(failed)} failed", "-", failed[0] if failed else "", not failed)


def table(rows: list[dict]) -> str:
    cols = ["case", "expected", "observed", "data lost", "message"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(out)


def main(cfg=None):
    cfg = resolve(Config, cfg)
    torch.set_num_threads(1)
    wanted = [c.strip() for c in cfg.cases.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CASES]
    if unknown:
        raise ValueError(f"cases: unknown {unknown}; known: {', '.join(CASES)}")
    work = Path(cfg.work) if cfg.work else Path(tempfile.mkdtemp(prefix="faults-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, t0 = [], time.time()
    for case in wanted:
        if case == "decode":
            rows += case_decode()
        elif case.startswith("bad_folder"):
            rows.append(case_bad_folder(work, buckets=case.endswith("buckets")))
        else:
            rows.append(globals()[f"case_{case}"](work))
    text = table(rows) + f"\n\n{sum(r['ok'] for r in rows)} of {len(rows)} as expected ({time.time() - t0:.0f} s)"
    print(text)
    if cfg.out:
        Path(cfg.out).write_text(text + "\n")
    if not cfg.work:
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    cli(main, Config, None, __doc__)
