"""LMDB: writer/reader round trip, atomic writing, refusal of unfinished databases, converters, digits."""
import json
import multiprocessing as mp
import os
import signal

import numpy as np
import pytest
import torch

from shared.data import (FolderSource, IncompleteDatabase, LMDBDataset, LMDBSource, LMDBWriter, ResumableLoader,
                         ShardSource, open_source, read_manifest)
from shared.toy import digits_formats
from shared.data import folder_to_lmdb
from shared.data.testing import GARBAGE, encode, photo


def test_latents_labels_captions_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((10, 4, 8, 8)).astype(np.float16)
    with LMDBWriter(tmp_path / "db", commit_every=3, meta={"vae": "tiny"}) as w:
        for i in range(10):
            w.add(latent=latents[i], caption=f"prompt {i}", label=i % 3, score=i / 10,
                  image=photo(16, 12, i), extra={"tags": ["a", i]})
    m = read_manifest(tmp_path / "db")
    assert m["count"] == 10 and m["meta"] == {"vae": "tiny"}
    assert m["fields"]["latent"] == {"kind": "array", "shape": [4, 8, 8], "dtype": "<f2"}
    assert {k: v["kind"] for k, v in m["fields"].items()} == {
        "latent": "array", "caption": "text", "label": "int", "score": "float", "image": "image", "extra": "json"}
    ds = LMDBDataset(tmp_path / "db")
    r = ds[7]
    assert torch.equal(r["latent"], torch.from_numpy(latents[7])) and r["latent"].dtype == torch.float16
    assert (r["caption"], r["label"], r["score"], r["extra"], r["key"]) == ("prompt 7", 1, 0.7, {"tags": ["a", 7]}, "7")
    assert torch.equal(r["image"], torch.from_numpy(np.array(photo(16, 12, 7))).permute(2, 0, 1))  # PNG: lossless
    only = LMDBDataset(tmp_path / "db", fields=["latent", "caption"])  # DMD2 reads just these
    assert set(only[0]) == {"latent", "caption", "key"} and len(only) == 10
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(KeyError, match="no field"):
        LMDBDataset(tmp_path / "db", fields=["nope"])


def test_writer_checks_record_shape_and_fields(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        with LMDBWriter(tmp_path / "db") as w:
            w.add(latent=np.zeros((4, 8, 8), np.float32))
            w.add(latent=np.zeros((4, 8, 9), np.float32))
    with pytest.raises(ValueError, match="expected"):
        with LMDBWriter(tmp_path / "db") as w:
            w.add(latent=np.zeros(3), caption="a")
            w.add(latent=np.zeros(3))
    assert not (tmp_path / "db").exists() and os.listdir(tmp_path) == []  # failed writes leave nothing


def test_writer_grows_the_map(tmp_path):
    with LMDBWriter(tmp_path / "db", map_size=64 * 1024, commit_every=50) as w:
        for i in range(200):
            w.add(x=np.full(1024, i, np.int32))
    ds = LMDBDataset(tmp_path / "db")
    assert len(ds) == 200 and int(ds[199]["x"][0]) == 199


def _write_then_get_killed(path):
    w = LMDBWriter(path, commit_every=5)
    for i in range(20):
        w.add(x=np.full(16, i, np.int64), caption=str(i))
    w._flush()  # records are on disk, the manifest is not
    print(w.tmp, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def test_killed_writer_leaves_an_unfinished_database_that_is_refused(tmp_path):
    target = tmp_path / "db"
    proc = mp.get_context("fork").Process(target=_write_then_get_killed, args=(target,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert not target.exists()  # readers of `db` never see a partial database
    (leftover,) = [p for p in tmp_path.iterdir()]
    assert (leftover / "data.mdb").exists() and not (leftover / "manifest.json").exists()
    with pytest.raises(IncompleteDatabase, match="no manifest.json.*never finished"):
        LMDBDataset(leftover)
    # a database whose manifest was removed (copied half-way, say) is refused the same way
    with LMDBWriter(target) as w:
        w.add(x=1)
    (target / "manifest.json").unlink()
    with pytest.raises(IncompleteDatabase, match="write it again"):
        LMDBSource(target)


def test_loader_over_lmdb_with_workers_counts_bad_records(tmp_path):
    with LMDBWriter(tmp_path / "db") as w:
        for i in range(30):
            w.add(image=GARBAGE if i in (4, 17) else encode(photo(12, 12, i)), caption=f"c{i}", key=f"k{i:02d}")
    assert LMDBDataset(tmp_path / "db")[0]["key"] == "k00"  # opened here first: workers must still open it
    loader = ResumableLoader(LMDBSource(tmp_path / "db"), batch_size=4, num_workers=2, max_skip_rate=0.1)
    keys = [k for b in loader for k in b["key"]]
    assert sorted(keys) == sorted(f"k{i:02d}" for i in range(30) if i not in (4, 17))
    assert loader.skips.counts == {"not_an_image": 2} and loader.skips.seen == 30
    assert sorted(loader.skips.files["not_an_image"]) == [f"{tmp_path / 'db'}[17].image",
                                                         f"{tmp_path / 'db'}[4].image"]
    # resume: 2 batches, then a fresh loader gives the rest
    a = ResumableLoader(LMDBSource(tmp_path / "db"), batch_size=4, num_workers=2, max_skip_rate=0.1, seed=5)
    it = iter(a)
    head = next(it)["key"] + next(it)["key"]
    b = ResumableLoader(LMDBSource(tmp_path / "db"), batch_size=4, num_workers=2, max_skip_rate=0.1, seed=5)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    rest = [k for batch in b for k in batch["key"]]
    assert sorted(head + rest) == sorted(keys) and b.skips.counts == {"not_an_image": 2}


def test_folder_to_lmdb_encoded_and_array(tmp_path):
    src = tmp_path / "imgs"
    (src / "red_apple").mkdir(parents=True)
    for i in range(3):
        (src / "red_apple" / f"{i}.jpg").write_bytes(encode(photo(40 + 8 * i, 30, i)))
    (src / "red_apple" / "bad.jpg").write_bytes(GARBAGE)
    enc = folder_to_lmdb.main({"src": str(src), "out_dir": str(tmp_path / "enc"), "max_skip_rate": 0.5})
    assert enc["count"] == 3 and enc["skipped"]["counts"] == {"not_an_image": 1}
    ds = LMDBDataset(tmp_path / "enc")
    assert ds[0]["caption"] == "red apple" and ds[2]["image"].shape == (3, 30, 56)
    assert (tmp_path / "enc" / "config.yaml").exists() and (tmp_path / "enc" / "skips.json").exists()
    folder_to_lmdb.main({"src": str(src), "out_dir": str(tmp_path / "arr"), "image_mode": "array", "size": 16,
                         "max_skip_rate": 0.5})
    arr = LMDBDataset(tmp_path / "arr")
    assert read_manifest(tmp_path / "arr")["fields"]["image"] == {"kind": "array", "shape": [16, 16, 3],
                                                                  "dtype": "|u1"}
    assert arr[1]["image"].shape == (16, 16, 3) and arr[1]["key"] == "red_apple/1.jpg"


def test_digits_in_shards_and_lmdb_keep_labels(digits_tiny, tmp_path):
    out = tmp_path / "fmt"
    counts = digits_formats.main({"scale": "tiny", "data_dir": str(digits_tiny), "out_dir": str(out)})
    assert counts == {"train": {"shards": 160, "lmdb": 160}, "test": {"shards": 80, "lmdb": 80}}
    meta = {}
    for line in (digits_tiny / "train" / "metadata.jsonl").read_text().splitlines():
        d = json.loads(line)
        meta[d["file"]] = (d["digit"], d["colour"], d["caption"])

    db = LMDBDataset(out / "lmdb" / "train")
    assert len(db) == 160
    for i in range(0, 160, 7):
        r = db[i]
        assert (r["digit"], r["colour"], r["caption"]) == meta[r["key"]] and r["image"].shape == (32, 32, 3)

    loader = ResumableLoader(ShardSource(out / "shards" / "train", extra_keys=("digit", "colour", "source")),
                             batch_size=32, num_workers=2)
    got = {}
    for b in loader:
        for src, d, c, cap in zip(b["source"], b["digit"].tolist(), b["colour"].tolist(), b["caption"]):
            got[src] = (d, c, cap)
    assert got == meta and b["image"].shape[1:] == (3, 32, 32)
    assert len(list((out / "shards" / "train").glob("*.tar"))) == 4  # tiny preset: 40 per shard
    assert isinstance(open_source(out / "lmdb" / "train"), LMDBSource)
    assert isinstance(open_source(out / "shards" / "train"), ShardSource)
    assert isinstance(open_source(out / "shards" / "train" / "shard-{000000..000003}.tar"), ShardSource)
    assert isinstance(open_source(digits_tiny / "train"), FolderSource)
