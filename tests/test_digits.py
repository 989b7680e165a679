"""The toy digits slice: deterministic dataset, captions, and the feature CNN's training and loading."""
import hashlib
import json

import numpy as np
import pytest
import torch

from shared.digits import features, prepare, train_features
from shared.digits.dataset import COLOUR_NAMES, caption, load_arrays, parse_caption, read_split


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in ("run.json", "config.yaml"):  # these record out_dir and time
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_prepare_is_deterministic_and_complete(digits_tiny, tmp_path):
    again = tmp_path / "again"
    prepare.main({"scale": "tiny", "out_dir": str(again)})
    assert _digest(digits_tiny) == _digest(again)
    train, test = read_split(digits_tiny / "train"), read_split(digits_tiny / "test")
    assert (len(train), len(test)) == (160, 80)
    for r in train[:20]:
        assert (digits_tiny / "train" / r.file).is_file()
        assert (digits_tiny / "train" / r.file).with_suffix(".txt").read_text().strip() == r.caption
        assert parse_caption(r.caption) == (r.digit, r.colour)
    images, digits, colours = load_arrays(digits_tiny / "test")
    assert images.shape == (80, 32, 32, 3) and images.dtype == np.uint8
    # the tint is the named colour: the brightest pixel's channel ratios follow the colour's
    i = int(np.argmax(images.reshape(80, -1).max(1)))
    px = images[i].reshape(-1, 3)[images[i].reshape(-1, 3).sum(1).argmax()].astype(float)
    from shared.digits.dataset import COLOURS
    ref = np.array(COLOURS[COLOUR_NAMES[colours[i]]], dtype=float)
    assert np.allclose(px / px.max(), ref / ref.max(), atol=0.08)


def test_train_and_test_sources_do_not_overlap():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(load_digits().target))
    tr, te = train_test_split(idx, test_size=0.2, stratify=load_digits().target, random_state=0)
    assert not set(tr) & set(te)


def test_caption_round_trip():
    for d in range(10):
        for c, name in enumerate(COLOUR_NAMES):
            assert parse_caption(caption(d, name)) == (d, c)
    assert parse_caption("A photo of a cat") is None
    assert parse_caption("A BLUE handwritten Nine, please") == (9, COLOUR_NAMES.index("blue"))


def test_broken_metadata_is_named(tmp_path):
    (tmp_path / "metadata.jsonl").write_text('{"file": "a.png"}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl:1: bad record"):
        read_split(tmp_path)
    with pytest.raises(FileNotFoundError, match="run shared/digits/prepare.py"):
        read_split(tmp_path / "missing")


def test_train_features_tiny_and_reload(digits_tiny, tmp_path):
    out = tmp_path / "feat"
    metrics = train_features.main({"scale": "tiny", "data_dir": str(digits_tiny), "out_dir": str(out)})
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["extractor_id"].startswith("digits-cnn:") and saved["num_test"] == 80
    assert 0.0 <= metrics["digit_accuracy"] <= 1.0
    model = features.load(out / "features.safetensors")
    assert model.extractor_id == saved["extractor_id"]
    x = torch.from_numpy(load_arrays(digits_tiny / "test")[0][:4]).permute(0, 3, 1, 2).float()
    assert model.features(x).shape == (4, 16)
    # the extractor resizes other resolutions itself (clean-fid passes whatever the images are)
    assert model.features(torch.nn.functional.interpolate(x, size=64)).shape == (4, 16)
    assert (out / "config.yaml").is_file() and (out / "run.json").is_file()
    with pytest.raises(ValueError, match="not a digits feature network"):
        from safetensors.torch import save_file
        save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        features.load(tmp_path / "other.safetensors")
