"""sd_flux_lab categorize.py: keyword extraction on real captions, folder assignment, BLIP captioning from a local
folder (tiny random BLIP), .cap files and keyword folders."""
import json

import numpy as np
import pytest
from PIL import Image

from projects.sd_flux_lab import categorize
from shared.data import list_images


def test_keywords_of_real_captions():
    kw = categorize.extract_keywords
    assert kw("a dog sitting on the grass next to a red car") == ["dog", "sitting", "grass", "next", "red", "car"]
    assert kw("There are two cats lying on a bed, and the cats are sleeping.") == ["cat", "lying", "bed", "sleeping"]
    assert kw("arafed man riding a horse on a beach with boxes and puppies") == \
        ["man", "riding", "horse", "beach", "box", "puppy"]
    assert kw("A close up photo of a glass of water on this table") == ["glass", "water", "table"]
    assert kw("it's a picture of an old bus") == ["old", "bus"]
    assert kw("") == []


def test_folders_go_to_the_most_shared_keyword():
    keywords = {"a.png": ["dog", "grass"], "b.png": ["dog", "beach"], "c.png": ["cat", "grass"],
                "d.png": ["car"], "e.png": ["grass", "cat"]}
    folders, counts = categorize.assign_folders(keywords, min_count=2)
    assert counts["grass"] == 3 and counts["dog"] == 2 and counts["car"] == 1
    assert folders == {"a.png": "grass", "b.png": "dog", "c.png": "grass", "d.png": categorize.UNCATEGORIZED,
                       "e.png": "grass"}
    folders, _ = categorize.assign_folders(keywords, min_count=1)
    assert folders["d.png"] == "car"
    folders, _ = categorize.assign_folders({"x.png": ["b", "a"], "y.png": ["a", "b"]}, min_count=1)
    assert folders == {"x.png": "a", "y.png": "a"}  # ties: alphabetical


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    model, processor = categorize.tiny_blip()
    path = tmp_path_factory.mktemp("blip") / "blip"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _photos(folder, n=6):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_caption_and_organize_with_a_local_blip(blip_dir, tmp_path):
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "sorted"
    summary = categorize.main({"scale": "tiny", "model": str(blip_dir), "input_dir": str(photos),
                               "output_dir": str(out), "organize": True, "min_count": 2})
    caps = sorted(photos.glob("*.cap"))
    assert len(caps) == 6
    vocab = set(categorize.TINY_WORDS.split())
    for cap in caps:
        text = cap.read_text().strip()
        assert text and set(text.split()) <= vocab  # decoded from the tiny BLIP's vocabulary
        assert summary["images"][cap.stem + ".png"]["caption"] == text
    # every image (with its caption file) is in exactly the folder keywords.json names
    saved = json.loads((out / "keywords.json").read_text())
    assert saved["images"] == summary["images"]
    for name, entry in saved["images"].items():
        assert (out / entry["folder"] / name).is_file()
        assert (out / entry["folder"] / name).with_suffix(".cap").read_text().strip() == entry["caption"]
        if entry["folder"] != categorize.UNCATEGORIZED:
            assert entry["folder"] in entry["keywords"] and saved["keyword_counts"][entry["folder"]] >= 2
    assert sorted(p.name for p in photos.glob("*.png")) == [f"img{i}.png" for i in range(6)]  # copied, not moved
    # the organised folder is a training folder: shared.data reads the .cap captions
    listing = list_images(out)
    assert listing.counts["images"] == 6 and listing.counts["by_source"] == {"cap": 6}


def test_existing_captions_are_kept_and_move(blip_dir, tmp_path):
    photos = _photos(tmp_path / "photos", n=3)
    for i, text in enumerate(["a dog on the grass", "two dogs on a beach", "a red car"]):
        (photos / f"img{i}.cap").write_text(f"# written by hand\n{text}\n")
    summary = categorize.main({"scale": "tiny", "model": "does/not/exist", "input_dir": str(photos),
                               "output_dir": str(tmp_path / "out"), "organize": True, "move": True})
    assert {n: e["folder"] for n, e in summary["images"].items()} == \
        {"img0.png": "dog", "img1.png": "dog", "img2.png": categorize.UNCATEGORIZED}
    assert not list(photos.iterdir())  # moved, captions included
    assert (tmp_path / "out" / "dog" / "img1.cap").is_file()


def test_bad_input_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="input_dir="):
        categorize.main({"scale": "tiny", "input_dir": str(tmp_path / "none")})
    photos = _photos(tmp_path / "photos", n=1)
    with pytest.raises(FileNotFoundError, match="model=.*config.json"):
        categorize.main({"scale": "tiny", "input_dir": str(photos), "model": str(tmp_path)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        categorize.main({"scale": "tiny", "input_dir": str(tmp_path / "empty")})
