"""Transforms, caption dropout, and the skip counter's persistence and threshold."""
import json

import numpy as np
import pytest
import torch

from shared.data import (CaptionDropout, FolderSource, ResumableLoader, SkipCounter, TooManyBadSamples,
                         center_crop, drop_condition, hflip, image_transform, resize_side)
from shared.data.testing import encode, photo


def _arr(t):
    return t.permute(1, 2, 0).numpy()


def test_center_crop_and_resize_side_keep_aspect():
    img = photo(60, 40, 1)
    a = np.asarray(img)
    assert np.array_equal(_arr(image_transform(40, crop="center", normalize=False)(img)), a[:, 10:50])
    assert np.array_equal(np.asarray(center_crop(40)(img)), a[:, 10:50])
    wide = photo(80, 40, 2)
    assert resize_side(20, "short")(wide).size == (40, 20)
    assert resize_side(20, "long")(wide).size == (20, 10)
    assert image_transform(20, crop="none", resize="long")(wide).shape == (3, 10, 20)
    with pytest.raises(ValueError, match="crop="):
        image_transform(20, crop="middle")


def test_flip_random_crop_and_range():
    img = photo(50, 30, 3)
    assert np.array_equal(np.asarray(hflip(1.0)(img)), np.asarray(img)[:, ::-1])
    tf = image_transform(24, crop="random", hflip_p=0.5, scale=(0.3, 1.0))
    torch.manual_seed(0)
    x = tf(img)
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    torch.manual_seed(0)
    assert torch.equal(tf(img), x)
    assert not all(torch.equal(tf(img), x) for _ in range(5))  # it is random


def test_augmentation_is_seeded_per_sample_not_by_workers(tmp_path):
    for i in range(12):
        (tmp_path / f"{i:02d}.jpg").write_bytes(encode(photo(48, 40, i)))
        (tmp_path / f"{i:02d}.txt").write_text(f"caption {i}")
    tf = image_transform(24, crop="random", hflip_p=0.5)

    def images(workers, torch_seed):
        torch.manual_seed(torch_seed)  # the training process's RNG must not matter
        loader = ResumableLoader(FolderSource(tmp_path, transform=tf), batch_size=5, num_workers=workers, seed=4)
        return {k: x for b in loader for k, x in zip(b["key"], b["image"])}

    a, b = images(0, 1), images(2, 2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # in-process loading restores the training RNG after each per-sample seed: the state afterwards is the
    # one a loader without random transforms leaves (the DataLoader draws one base seed either way)
    images(0, 5)
    after_random = torch.random.get_rng_state()
    torch.manual_seed(5)
    list(ResumableLoader(FolderSource(tmp_path), batch_size=5, seed_augment=False))
    assert torch.equal(after_random, torch.random.get_rng_state())


def test_caption_dropout_rate_and_determinism():
    d = CaptionDropout(0.2, seed=3)
    keys = [f"k{i}" for i in range(4000)]
    dropped = [k for k in keys if d("text", k) == ""]
    assert abs(len(dropped) / len(keys) - 0.2) < 0.03
    assert dropped == [k for k in keys if CaptionDropout(0.2, seed=3)("text", k) == ""]
    assert dropped != [k for k in keys if d("text", k, epoch=1) == ""]  # a new epoch draws anew
    assert all(CaptionDropout(0.0)("t", k) == "t" for k in keys[:100])
    assert all(CaptionDropout(1.0, empty="<null>")("t", k) == "<null>" for k in keys[:100])
    with pytest.raises(ValueError):
        CaptionDropout(1.5)


def test_drop_condition_replaces_rows_with_the_empty_one():
    cond = torch.arange(1000 * 4, dtype=torch.float32).view(1000, 4) + 1
    empty = torch.zeros(4)
    out, mask = drop_condition(cond, empty, 0.25, torch.Generator().manual_seed(0))
    assert abs(mask.float().mean().item() - 0.25) < 0.05
    assert torch.equal(out[mask], torch.zeros(int(mask.sum()), 4)) and torch.equal(out[~mask], cond[~mask])
    out2, mask2 = drop_condition(cond, empty, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(mask, mask2)
    tokens = torch.randint(1, 100, (8, 77))
    t, m = drop_condition(tokens, torch.full((77,), 49407), 1.0)
    assert m.all() and (t == 49407).all() and t.dtype == tokens.dtype


def test_skip_counter_round_trip_listing_and_threshold(tmp_path):
    c = SkipCounter(max_files=3)
    c.add_seen(100)
    for i in range(5):
        c.record("truncated", f"img{i}.jpg", "cut")
    c.record("missing_caption", "x.jpg")
    c.record_filtered("nsfw", 4)
    d = json.loads(json.dumps(c.to_dict()))
    back = SkipCounter.load(d)
    assert (back.seen, back.bad, back.counts, back.filtered) == (100, 6, {"truncated": 5, "missing_caption": 1},
                                                                  {"nsfw": 4})
    assert back.files["truncated"] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert "truncated (5): img0.jpg, img1.jpg, img2.jpg, ... and 2 more" in back.listing()
    back.check(0.1)  # 6% is under 10%
    with pytest.raises(TooManyBadSamples, match=r"(?s)6 of 100 samples were bad \(6.0%\).*img0.jpg"):
        back.check(0.05)
    back.check(0.05, min_seen=1000)  # too early to judge
    path = back.save(tmp_path / "skips.json")
    assert json.loads(path.read_text())["counts"]["truncated"] == 5
