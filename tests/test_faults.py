"""Faults as users meet them (issue 17), on the project's own step scripts: a folder of bad files through train_sd
(with and without buckets) and its `list=true`, a full disk during a checkpoint write, a shard cut mid-member."""
from __future__ import annotations

import errno
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from PIL import Image

torch.set_num_threads(1)


def make_bad_folder(root: Path, good: int = 15) -> Path:
    """`good` 32x32 images under two prompt folders, plus one of each fault: a truncated JPEG, a zero-byte .png, a
    text file named .png, a dangling symlink, and a 1x1 image (filtered by min_image_size)."""
    rng = np.random.default_rng(0)
    for i in range(good):
        d = root / ("red_seven" if i % 2 else "blue_two")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i:02d}.png")
    bad = root / "red_seven"
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    (bad / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.png").write_text("this is a text file\n")
    (bad / "gone.png").symlink_to(root / "deleted.png")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(bad / "dot.png")
    return root


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    return make_bad_folder(tmp_path_factory.mktemp("bad") / "pics")


def _train_sd(**kw):
    from projects.sd_flux_lab import train_sd

    try:
        return train_sd.main({"scale": "tiny", "base": "preset", "arch": "sd15", "batch_size": 4, "epochs": 1,
                              "sample_steps": 1, "validation_prompts": ["red seven"], "validation_seeds": [0],
                              "progress": False, **kw})
    finally:
        AcceleratorState._reset_state(True)


def test_list_shows_what_a_run_would_skip(bad_folder, capsys):
    counts = _train_sd(data_dir=str(bad_folder), list=True)
    out = capsys.readouterr().out
    assert counts["images"] == 20 and counts["would_skip"] == 4 and counts["would_filter"] == 1
    assert counts["skip_reasons"] == {"not_an_image": 2, "truncated": 1, "unreadable": 1}
    for line in ["would skip red_seven/cut.jpg: truncated", "would skip red_seven/empty.png: not_an_image",
                 "would skip red_seven/notes.png: not_an_image", "would skip red_seven/gone.png: unreadable",
                 "would skip red_seven/dot.png: filtered: too_small"]:
        assert line in out, out


@pytest.mark.parametrize("buckets", [False, True])
def test_train_sd_skips_and_counts_bad_files(bad_folder, tmp_path, capsys, buckets):
    run = tmp_path / "run"
    result = _train_sd(data_dir=str(bad_folder), run_dir=str(run), buckets=buckets, resolution=32 if not buckets
                       else 32)
    out = capsys.readouterr().out
    # 20 files: 3 left out when listed (empty, text, dangling link), 1 filtered (1x1), 16 trained on, of which the
    # truncated JPEG fails when decoded: every one of the 16 was read once in the one epoch (4 batches of 4)
    assert result["images"] == 16 and result["steps"] == 4
    assert result["skipped_listing"] == 3 and result["filtered_listing"] == 1
    assert result["skipped_training"] == 1 and result["samples_read"] == 16
    assert result["skip_reasons"] == "not_an_image=2, truncated=1, unreadable=1"
    assert "listing: 3 of 20 samples skipped as bad" in out and "too_small=1" in out
    assert "training: 1 of 16 samples skipped as bad" in out and "cut.jpg" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_training"] == 1 and metrics["skipped_listing"] == 3


def test_disk_full_during_checkpoint_write_names_path_and_keeps_previous(tmp_path, monkeypatch):
    """An injected ENOSPC in the middle of a checkpoint (the weights file): a clear error naming the file and the
    free space; the previous checkpoint is complete and is what a resume loads."""
    from shared.train import Checkpointer
    from shared.train import checkpoint as ck
    from shared import io as shared_io
    from shared.io import DiskFull

    c = Checkpointer(tmp_path / "ckpts")
    sd = {"w": torch.arange(1000, dtype=torch.float32)}
    c.save(1, tensors={"model": sd}, state={"step": 1})
    real = ck.save_file

    def full(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(DiskFull, match=r"no space left on device while writing .*\.ckpt-00000002\.tmp/model"
                                       r"\.safetensors \(\d+ bytes free\)"):
        c.save(2, tensors={"model": sd}, state={"step": 2})
    monkeypatch.setattr(ck, "save_file", real)
    assert [i.step for i in c.list()] == [1]
    assert not list((tmp_path / "ckpts").glob(".ckpt-*"))  # the partial write was removed (space given back)
    assert torch.equal(Checkpointer.load_tensors(c.latest(), "model")["w"], sd["w"])

    def torch_full(obj, f, *a, **kw):  # what torch.save says on a full disk: no errno, no path
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3639104 vs 3639056")

    monkeypatch.setattr(ck.torch, "save", torch_full)
    monkeypatch.setattr(shared_io, "free_bytes", lambda path: 4096)
    with pytest.raises(DiskFull, match=r"no space left on device while writing .*rank00000\.pt \(4096 bytes free\)"):
        c.save(3, tensors={"model": sd}, state={"step": 3})
    assert [i.step for i in c.list()] == [1]


def test_a_shard_cut_mid_member_counts_every_sample_lost(tmp_path):
    from shared.data import ResumableLoader, ShardSource, write_shards

    rng = np.random.default_rng(0)

    def samples():
        for i in range(22):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
            yield {"__key__": f"s{i:03d}", "png": buf.getvalue(), "txt": f"caption {i}"}

    index = write_shards(samples(), tmp_path, shard_size=100)
    shard = tmp_path / index["shards"][0]["file"]
    data = shard.read_bytes()
    with tarfile.open(shard) as t:  # cut inside the 17th sample's image member
        member = [m for m in t.getmembers() if m.name == "s016.png"][0]
    shard.write_bytes(data[: member.offset_data + member.size // 2])
    loader = ResumableLoader(ShardSource(tmp_path, image_keys=("png",)), batch_size=4, max_skip_rate=1.0,
                             shuffle=False)
    delivered = sum(len(b["caption"]) for b in loader)
    s = loader.skips
    assert delivered == 16
    assert s.seen == 22 and s.bad == 6, s.summary()  # the cut sample and the 5 after it, all counted
    assert s.counts == {"truncated_shard": 6}
    assert "the rest of the shard is unreadable: 6 samples lost" in s.listing() and "more" not in s.listing()


def test_dmd2_prepare_skips_and_counts_bad_files(tmp_path, capsys):
    """The DMD2 data step (image folder -> LMDB) leaves bad files out, counts and names them."""
    from projects.dmd2 import prepare
    from shared.data import LMDBDataset

    root = tmp_path / "imgs"
    rng = np.random.default_rng(1)
    for i in range(6):
        (root / str(i % 2)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / str(i % 2) / f"{i}.png")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "1" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "1" / "empty.png").write_bytes(b"")
    (root / "1" / "gone.png").symlink_to(root / "deleted.png")
    path = prepare.main({"kind": "edm", "images": str(root), "eval_images": "", "labels_from": "folder",
                         "out_dir": str(tmp_path / "out")})
    out = capsys.readouterr().out
    assert len(LMDBDataset(path, fields=["image", "label"])) == 6
    assert "3 of 9 samples skipped as bad" in out and "truncated=1" in out and "unreadable=1" in out
    assert "cut.jpg" in out and "wrote 6 records" in out


def test_digits_steps_skip_and_count_a_bad_image(digits_tiny, tmp_path):
    """The digits steps (train_features, the sampler comparison, ...) read splits through load_arrays: a damaged
    file is left out with its labels, counted and named."""
    import shutil

    from shared.toy.dataset import load_arrays, read_split

    split = tmp_path / "test"
    shutil.copytree(digits_tiny / "test", split)
    records = read_split(split)
    (split / records[3].file).write_bytes(b"")
    with pytest.warns(UserWarning, match=r"1 of 80 samples skipped as bad.*not_an_image"):
        images, digits, colours = load_arrays(split)
    assert len(images) == len(digits) == len(colours) == 79
    assert digits.tolist() == [r.digit for i, r in enumerate(records) if i != 3]


def test_disk_full_in_an_atomic_text_write_names_the_file(tmp_path, monkeypatch):
    from pathlib import Path as P

    from shared.io import DiskFull, write_json

    write_json(tmp_path / "run.json", {"a": 1})

    def full(self, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(P, "write_text", full)
    with pytest.raises(DiskFull, match=r"while writing .*run\.json \(\d+ bytes free\)"):
        write_json(tmp_path / "run.json", {"a": 2})
    monkeypatch.undo()
    assert json.loads((tmp_path / "run.json").read_text()) == {"a": 1}  # the previous file is intact
    assert not list(tmp_path.glob(".run.json.*"))
