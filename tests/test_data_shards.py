"""WebDataset shards: keys, filters, splitting over ranks x workers, resumption, and broken shards."""
import gzip
import io
import json
import tarfile
from collections import Counter

import pytest

from shared.data import ResumableLoader, SampleFilter, ShardSource, write_shards
from shared.data.tario import open_shard, read_members
from shared.data.testing import (GARBAGE, corrupt_member_header, encode, member_data_end, photo, truncate_file,
                                 truncated, write_tar)


def _shards(out, n_shards, per_shard, fmt="JPEG", ext="jpg"):
    """n_shards x per_shard samples keyed %06d; returns the loader keys ('shard-NNNNNN/%06d')."""
    samples = [{"__key__": f"{i:06d}", ext: encode(photo(24, 16, i), fmt), "txt": f"caption {i}",
                "json": {"width": 24, "height": 16, "label": i}} for i in range(n_shards * per_shard)]
    index = write_shards(samples, out, shard_size=per_shard)
    assert [s["count"] for s in index["shards"]] == [per_shard] * n_shards
    return {f"shard-{i // per_shard:06d}/{i:06d}" for i in range(n_shards * per_shard)}


def _keys(loader):
    return [k for b in loader for k in b["key"]]


def test_image_and_caption_keys(tmp_path):
    write_tar(tmp_path / "png/a.tar", [("s1.json", json.dumps({"caption": "from json", "n": 7}).encode()),
                                       ("s1.png", encode(photo(8, 8), "PNG"))])
    b = next(iter(ResumableLoader(ShardSource(tmp_path / "png", image_keys=("png",), caption_key="json:caption",
                                              extra_keys=("n",)), batch_size=1)))
    assert b["caption"] == ["from json"] and b["n"].tolist() == [7] and b["image"].shape == (1, 3, 8, 8)
    write_tar(tmp_path / "webp/a.tar", [("s1.txt", b"from txt"), ("s1.webp", encode(photo(8, 6), "WEBP"))])
    b = next(iter(ResumableLoader(ShardSource(tmp_path / "webp/a.tar"), batch_size=1)))
    assert b["caption"] == ["from txt"] and b["image"].shape == (1, 3, 6, 8) and b["key"] == ["a/s1"]


def test_metadata_filters(tmp_path):
    def sample(key, w=64, h=64, caption="a fine caption", **meta):
        members = [(f"{key}.jpg", encode(photo(w, h))), (f"{key}.txt", caption.encode())]
        if meta is not None:
            members.append((f"{key}.json", json.dumps({"width": w, "height": h, **meta}).encode()))
        return members

    members = (sample("ok1", NSFW="UNLIKELY", punsafe=0.01) + sample("nsfw", NSFW="NSFW")
               + sample("flag", nsfw=True) + sample("unsafe", punsafe=0.9) + sample("small", w=32, h=48)
               + sample("wide", w=200, h=64) + sample("short", caption="hi") + sample("long", caption="x" * 300)
               + sample("ok2", w=64, h=80))
    members += [("nojson.jpg", encode(photo(20, 20))), ("nojson.txt", b"size from the decoded image")]
    write_tar(tmp_path / "f.tar", members)
    filt = SampleFilter(drop_nsfw=True, max_punsafe=0.5, min_size=40, min_aspect=0.5, max_aspect=2.0,
                        min_caption_len=5, max_caption_len=200)
    loader = ResumableLoader(ShardSource(tmp_path / "f.tar", filter=filt, transform=lambda im: im.size),
                             batch_size=4, shuffle=False)
    assert sorted(_keys(loader)) == ["f/ok1", "f/ok2"]
    only = ResumableLoader(ShardSource(tmp_path / "f.tar", filter=SampleFilter(drop_nsfw=True, nsfw_keys=("NSFW",)),
                                       transform=lambda im: im.size), batch_size=16)
    assert "f/flag" in _keys(only) and only.skips.filtered == {"nsfw": 1}
    s = loader.skips
    assert s.filtered == {"nsfw": 2, "punsafe": 1, "too_small": 2, "aspect": 1, "caption_short": 1,
                          "caption_long": 1}
    assert s.bad == 0 and s.seen == 10  # filtered samples are policy, not bad data


@pytest.mark.parametrize("world_size,num_workers", [(2, 2), (3, 1)])
def test_every_sample_exactly_once_across_ranks_and_workers(tmp_path, world_size, num_workers):
    n_shards = world_size * num_workers * 2
    expected = _shards(tmp_path, n_shards, 5)
    for epoch in range(2):
        seen = Counter()
        orders = []
        for rank in range(world_size):
            loader = ResumableLoader(ShardSource(tmp_path), batch_size=4, num_workers=num_workers, seed=3,
                                     shuffle_buffer=8, rank=rank, world_size=world_size)
            loader.set_epoch(epoch)
            keys = _keys(loader)
            assert len(keys) == len(expected) // world_size  # shards divide evenly: equal work per rank
            seen.update(keys)
            orders.append(keys)
        assert set(seen) == expected and set(seen.values()) == {1}
        if epoch == 0:
            first = orders
        else:
            assert orders != first  # a new epoch reshuffles


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_yields_exactly_the_rest(tmp_path, num_workers):
    expected = _shards(tmp_path, 4, 9)

    def make():
        return ResumableLoader(ShardSource(tmp_path), batch_size=4, num_workers=num_workers, seed=7,
                               shuffle_buffer=10, rank=1, world_size=2)

    full = _keys(make())
    a = make()
    head = []
    for i, b in enumerate(a):
        head += b["key"]
        if i == 2:  # consume 3 batches, then "crash"
            break
    state = json.loads(json.dumps(a.state_dict()))  # what goes into the checkpoint
    b = make()
    b.load_state_dict(state)
    rest = _keys(b)
    assert len(head) == 12 and not set(head) & set(rest)
    assert sorted(head + rest) == sorted(full) and len(full) == len(expected) // 2
    if num_workers == 0:
        assert head + rest == full  # one stream: even the order is the uninterrupted one
    assert b.epoch == 1 and b.state_dict()["positions"] == [0] * max(1, num_workers)

    # a state saved at an epoch end starts the next epoch, as the uninterrupted loader would
    nxt = make()
    nxt.load_state_dict(b.state_dict())
    cont = make()
    cont.set_epoch(1)
    assert sorted(_keys(nxt)) == sorted(_keys(cont)) and _keys(make()) != []


def test_resume_refuses_a_different_split(tmp_path):
    _shards(tmp_path, 4, 4)
    a = ResumableLoader(ShardSource(tmp_path), batch_size=2, num_workers=2)
    next(iter(a))
    b = ResumableLoader(ShardSource(tmp_path), batch_size=2, num_workers=1)
    with pytest.raises(ValueError, match="num_workers: saved 2, now 1"):
        b.load_state_dict(a.state_dict())
    c = ResumableLoader(ShardSource(sorted(tmp_path.glob("*.tar"))[:3]), batch_size=2, num_workers=2)
    with pytest.raises(ValueError, match="fingerprint"):
        c.load_state_dict(a.state_dict())


def _broken_shards(root):
    """Two shards with one of each kind of damage; returns the keys of the good samples."""
    good = set()
    members = []
    for i in range(8):
        k = f"a{i}"
        members += [(f"{k}.jpg", encode(photo(24, 16, i))), (f"{k}.txt", f"caption {i}".encode())]
    members[2 * 1] = ("a1.jpg", truncated(encode(photo(24, 16, 1))))  # truncated JPEG
    members[2 * 2] = ("a2.jpg", GARBAGE)  # garbage bytes
    del members[2 * 3 + 1]  # a3: no caption
    write_tar(root / "s0.tar", members)
    corrupt_member_header(root / "s0.tar", "a5.jpg")  # corrupt header: a5 loses its image, a6.. still read
    good |= {f"s0/a{i}" for i in (0, 4, 6, 7)}
    members = []
    for i in range(6):
        members += [(f"b{i}.jpg", encode(photo(24, 16, 10 + i))), (f"b{i}.txt", f"caption b{i}".encode())]
    write_tar(root / "s1.tar", members)
    truncate_file(root / "s1.tar", member_data_end(root / "s1.tar", "b4.jpg"))  # archive cut inside b4.jpg
    good |= {f"s1/b{i}" for i in range(4)}
    return good


@pytest.mark.parametrize("num_workers", [0, 2])
def test_broken_shards_are_skipped_and_counted_per_reason(tmp_path, num_workers):
    good = _broken_shards(tmp_path)
    loader = ResumableLoader(ShardSource(tmp_path), batch_size=3, num_workers=num_workers, max_skip_rate=1.0)
    keys = _keys(loader)
    assert sorted(keys) == sorted(good)
    s = loader.skips
    assert s.counts == {"truncated": 1, "not_an_image": 1, "missing_caption": 1, "missing_image": 1,
                        "broken_member": 1, "truncated_shard": 1}  # no index.json: how many b4 took along unknown
    assert s.files["truncated_shard"] == [f"{tmp_path / 's1.tar'}:b4.jpg"]
    assert any(f.startswith(str(tmp_path / "s0.tar@")) for f in s.files["broken_member"])
    assert s.files["truncated"] == [f"{tmp_path / 's0.tar'}:a1.jpg"]


def test_resume_does_not_recount_skips(tmp_path):
    _broken_shards(tmp_path)

    def make():
        return ResumableLoader(ShardSource(tmp_path), batch_size=2, num_workers=2, shuffle_buffer=4,
                               max_skip_rate=1.0)

    whole = make()
    all_keys = _keys(whole)
    a = make()
    it = iter(a)
    head = next(it)["key"] + next(it)["key"]
    state = a.state_dict()
    b = make()
    b.load_state_dict(state)
    rest = _keys(b)
    assert sorted(head + rest) == sorted(all_keys)
    assert b.skips.counts == whole.skips.counts and b.skips.seen == whole.skips.seen


def test_caption_dropout_is_seeded_and_independent_of_workers(tmp_path):
    _shards(tmp_path, 4, 25)

    def dropped(workers, seed=0):
        loader = ResumableLoader(ShardSource(tmp_path), batch_size=10, num_workers=workers, uncond_p=0.3, seed=seed)
        return {k for b in loader for k, c in zip(b["key"], b["caption"]) if c == ""}

    d0 = dropped(0)
    assert 15 <= len(d0) <= 45  # 30 expected of 100
    assert dropped(2) == d0 and dropped(0, seed=1) != d0


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_reader_agrees_with_tarfile(tmp_path, fmt):
    """shared.data.tario against the standard library on long names, non-ASCII, links, folders, gzip."""
    path = tmp_path / "t.tar"
    long_dir = "d" * 90 + "/" + "e" * 60  # needs the ustar prefix field, or a long-name extension
    entries = [("plain.txt", b"hello"), (f"{long_dir}/x.jpg", bytes(range(256)) * 7), ("empty.txt", b""),
               ("exact.bin", b"\x01" * 1024)]
    if fmt != tarfile.USTAR_FORMAT:
        entries += [("caf\u00e9/" + "n" * 120 + ".json", b'{"a": 1}')]
    with tarfile.open(path, "w", format=fmt) as tar:
        d = tarfile.TarInfo("folder")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.5  # a float mtime adds pax records in PAX format
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "plain.txt"
        tar.addfile(link)
    with tarfile.open(path) as tar:
        expected = [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]
    events = []
    with open_shard(str(path)) as f:
        assert list(read_members(f, str(path), lambda *e: events.append(e))) == expected
    gz = tmp_path / "t.tar.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with open_shard(str(gz)) as f:
        assert list(read_members(f, str(gz), lambda *e: events.append(e))) == expected
    assert events == [] and len(expected) == len(entries)


def test_tar_reader_reports_a_truncated_header(tmp_path):
    p = write_tar(tmp_path / "a.tar", [("a.txt", b"x" * 10), ("b.txt", b"y" * 10)])
    truncate_file(p, 512 + 512 + 200)  # cut inside b.txt's header
    events = []
    with open_shard(str(p)) as f:
        assert list(read_members(f, str(p), lambda *e: events.append(e))) == [("a.txt", b"x" * 10)]
    assert [e[0] for e in events] == ["truncated_shard"] and "ends inside a header after a.txt" in events[0][2]


def test_bad_metadata_is_a_counted_skip(tmp_path):
    img = encode(photo(16, 16))
    write_tar(tmp_path / "m.tar", [("a.jpg", img), ("a.json", b"{not json"), ("a.txt", b"caption a"),
                                   ("b.jpg", img), ("b.json", b'{"width": "n/a", "height": 16}'), ("b.txt", b"cap b"),
                                   ("c.jpg", img), ("c.json", b"[1, 2]"), ("c.txt", b"caption c"),
                                   ("d.jpg", img), ("d.json", b'{"width": 16, "height": 16}'), ("d.txt", b"cap d")])
    loader = ResumableLoader(ShardSource(tmp_path, filter=SampleFilter(min_size=8)), batch_size=4, max_skip_rate=1)
    assert _keys(loader) == ["m/d"]
    assert loader.skips.counts == {"bad_metadata": 3} and loader.skips.seen == 4
