"""Image folders: caption files, folder-name prompts, the --list dry-run, and bad files in a folder."""
from pathlib import Path

import pytest

from shared.data import FolderSource, ResumableLoader, TooManyBadSamples, folder_prompt, list_images
from shared.data import folder_to_shards
from shared.data.folder import read_caption_file
from shared.data.testing import GARBAGE, encode, photo, truncated


def _img(path: Path, seed: int = 0, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(photo(40, 32, seed), fmt))
    return path


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "images"
    _img(root / "_v2/girl/long_hair/a.jpg", 1)
    _img(root / "_v2/girl/long_hair/b.jpg", 2)
    (root / "_v2/girl/long_hair/b.txt").write_text("  a custom\ncaption  \n")
    _img(root / "_v2/girl/c.png", 3, "PNG")
    (root / "_v2/girl/c.cap").write_text("# tagger v3 output\n\n   # indented comment\n  first real line  \nsecond\n")
    _img(root / "__old/x.jpg", 4)
    _img(root / "__old/deeper/y.jpg", 5)
    _img(root / "cat/__drafts/z.jpg", 6)
    _img(root / "cat/d.webp", 7, "WEBP")
    _img(root / "e.jpg", 8)  # root level, no caption: no prompt at all
    _img(root / "f.jpg", 9)
    (root / "f.txt").write_text("\n  \n")  # empty caption file
    _img(root / "g.jpg", 10)
    (root / "g.cap").write_text("# only comments\n")
    (root / "notes.md").write_text("not an image")
    return root


def test_folder_prompt_rules():
    assert folder_prompt(["_v2", "girl", "long_hair"]) == "girl, long hair"
    assert folder_prompt(["__old", "girl"]) is None
    assert folder_prompt(["girl", "__drafts"]) is None
    assert folder_prompt(["_hidden"]) == ""
    assert folder_prompt(["red__dress_", "x"]) == "red dress, x"


def test_caption_files(tmp_path):
    (tmp_path / "a.cap").write_text("#c\n\n# more\n  the caption \nnot this\n")
    (tmp_path / "b.txt").write_text("multi\nline  text\n")
    (tmp_path / "c.cap").write_text("# nothing\n")
    assert read_caption_file(tmp_path / "a.cap") == "the caption"
    assert read_caption_file(tmp_path / "b.txt") == "multi line text"
    assert read_caption_file(tmp_path / "c.cap") == ""


def test_listing_prompts_and_counts(tree):
    listing = list_images(tree)
    got = {i.path: (i.prompt, i.source) for i in listing.items}
    assert got == {
        "_v2/girl/long_hair/a.jpg": ("girl, long hair", "folder"),
        "_v2/girl/long_hair/b.jpg": ("a custom caption", "txt"),  # caption file overrides the folder prompt
        "_v2/girl/c.png": ("first real line", "cap"),
        "cat/d.webp": ("cat", "folder"),
        "e.jpg": ("", "none"),
        "f.jpg": ("", "none"),
        "g.jpg": ("", "none"),
    }
    assert listing.skipped_dirs == ["__old", "cat/__drafts"]
    assert listing.empty_caption_files == ["f.txt", "g.cap"]
    c = listing.counts
    assert (c["images"], c["with_prompt"], c["without_prompt"], c["skipped_dirs"]) == (7, 4, 3, 2)
    assert c["by_source"] == {"cap": 1, "folder": 2, "none": 3, "txt": 1}


def test_list_only_dry_run_prints_every_image_and_writes_nothing(tree, tmp_path, capsys):
    out = tmp_path / "shards"
    counts = folder_to_shards.main({"src": str(tree), "out_dir": str(out), "list_only": True})
    text = capsys.readouterr().out
    assert "_v2/girl/long_hair/a.jpg\tgirl, long hair\t[folder]" in text
    assert "e.jpg\t<no prompt>\t[none]" in text
    assert "skipped folder (and its subtree): __old" in text
    assert "7 images under" in text and "4 with a prompt" in text
    assert counts["images"] == 7 and not out.exists()


def test_metadata_jsonl_gives_labels_and_captions(tmp_path):
    root = tmp_path / "d"
    _img(root / "a.png", 1, "PNG")
    _img(root / "b.png", 2, "PNG")
    (root / "a.txt").write_text("from the txt")
    (root / "metadata.jsonl").write_text('{"file": "a.png", "caption": "ignored", "digit": 3}\n'
                                         '{"file_name": "b.png", "text": "from metadata", "digit": 5}\n')
    items = {i.path: i for i in list_images(root).items}
    assert (items["a.png"].prompt, items["a.png"].meta) == ("from the txt", {"digit": 3})
    assert (items["b.png"].prompt, items["b.png"].source, items["b.png"].meta) == ("from metadata", "metadata",
                                                                                  {"digit": 5})
    batch = next(iter(ResumableLoader(FolderSource(root, extra_keys=("digit",)), batch_size=2, shuffle=False)))
    assert batch["digit"].tolist() == [3, 5] and batch["caption"] == ["from the txt", "from metadata"]


def test_folder_loader_skips_bad_files_by_reason(tree):
    good = sorted(i.path for i in list_images(tree).items if i.prompt)
    (tree / "cat/broken.jpg").write_bytes(truncated(encode(photo(64, 64, 11))))  # partial download
    (tree / "cat/garbage.jpg").write_bytes(GARBAGE)
    (tree / "cat/unreadable.jpg").symlink_to(tree / "gone.jpg")  # listed, but reading fails (deleted target)
    loader = ResumableLoader(FolderSource(tree), batch_size=3, seed=0, max_skip_rate=1.0)
    keys = [k for b in loader for k in b["key"]]
    assert sorted(keys) == good  # every good image once, nothing else
    s = loader.skips
    assert s.counts == {"missing_caption": 3, "truncated": 1, "not_an_image": 1, "unreadable": 1}
    assert s.seen == len(good) + 6
    assert any(f.endswith("cat/broken.jpg") for f in s.files["truncated"])
    assert any(f.endswith("cat/garbage.jpg") for f in s.files["not_an_image"])
    assert any(f.endswith("cat/unreadable.jpg") for f in s.files["unreadable"])


def test_skip_rate_threshold_stops_with_file_list(tree):
    (tree / "cat/garbage.jpg").write_bytes(GARBAGE)
    loader = ResumableLoader(FolderSource(tree), batch_size=2, max_skip_rate=0.2)
    with pytest.raises(TooManyBadSamples) as e:
        for _ in loader:
            pass
    msg = str(e.value)
    assert "max_skip_rate=0.2" in msg and "garbage.jpg" in msg and "missing_caption (3)" in msg
    assert "e.jpg" in msg


def test_converter_refuses_a_mostly_bad_folder(tree, tmp_path):
    out = tmp_path / "shards"
    with pytest.raises(TooManyBadSamples, match="e.jpg"):
        folder_to_shards.main({"src": str(tree), "out_dir": str(out), "max_skip_rate": 0.1})
    assert not out.exists() and not list(tmp_path.glob(".shards*"))  # nothing half-written left behind


def test_skip_counter_with_log_first_zero_logs_nothing(caplog):
    from shared.data import SkipCounter

    counter = SkipCounter(log_first=0)
    with caplog.at_level("WARNING"):
        for i in range(3):
            counter.record("unreadable", f"f{i}.png")
    assert counter.counts == {"unreadable": 3} and not caplog.records
