"""Bad data through the project's image-reading steps (issue 17, point 1): one folder with a truncated JPEG, a
zero-byte .png, a text file named .png and a dangling symlink beside good images (a 16-bit PNG, a palette PNG with a
transparent entry, a half-transparent RGBA PNG, plain RGB), run through crop_images, categorize, dmd2 compare and
evaluate, glide evaluate and held-out upsampling, and shared/evaluate.py. Each step must skip the four bad files,
count them per reason, say so, write the counts where it writes JSON, and decode the good ones correctly."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

SIZE = 16
REASONS = {"not_an_image": 2, "truncated": 1, "unreadable": 1}  # the four bad files, as the shared decoder sorts them
GREY16 = 32896  # 0x8080 in 16 bits -> 128 in 8 bits (PIL's bare convert("RGB") gives 255 for this)


def _good_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    pal = Image.new("P", (SIZE, SIZE), 0)
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0, 0, 0] * 254)
    pal.paste(1, (0, 0, SIZE // 2, SIZE))  # left half: entry 1, right half: entry 0 (transparent)
    pal.info["transparency"] = 0
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128  # red at half opacity over white: (200*128 + 255*127) / 255
    return {
        "a_rgb": Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)),
        "b_sixteen": Image.fromarray(np.full((SIZE, SIZE), GREY16, np.uint16)),
        "c_palette": pal,
        "d_rgba": Image.fromarray(rgba, "RGBA"),
    }


# what each good image must decode to (first pixel, and the right half for the palette image)
EXPECTED = {"b_sixteen": (128, 128, 128), "c_palette": (200, 100, 50), "d_rgba": (227, 127, 127)}


def _bad_bytes() -> dict[str, bytes]:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(buf, "JPEG")
    return {"cut": buf.getvalue()[: len(buf.getvalue()) * 2 // 3], "empty": b"", "notes": b"this is a text file\n"}


def make_folder(root: Path, numbered: bool = False) -> Path:
    """The good images and the four bad files in `root`. numbered=True names them 000000.png ... (the sample
    folders dmd2/compare and the evaluators read); the bad ones are then 000001..000004 and the truncated JPEG is
    named .png (PIL goes by the bytes, so it is still a cut JPEG)."""
    root.mkdir(parents=True)
    good, bad = _good_images(), _bad_bytes()
    names = {}
    if numbered:
        order = ["a_rgb", "cut", "empty", "notes", "gone", "b_sixteen", "c_palette", "d_rgba"]
        names = {k: f"{i:06d}.png" for i, k in enumerate(order)}
    for k, im in good.items():
        im.save(root / names.get(k, f"{k}.png"))
        (root / names.get(k, f"{k}.png")).with_suffix(".txt").write_text("a red seven\n")
    (root / names.get("cut", "cut.jpg")).write_bytes(bad["cut"])
    (root / names.get("empty", "empty.png")).write_bytes(bad["empty"])
    (root / names.get("notes", "notes.png")).write_bytes(bad["notes"])
    (root / names.get("gone", "gone.png")).symlink_to(root / "deleted.png")
    return root


def _check_pixels(files: dict[str, Path]) -> None:
    """The decoded good images (as a step wrote them) have the expected colours."""
    for k, rgb in EXPECTED.items():
        with Image.open(files[k]) as im:
            a = np.asarray(im.convert("RGB"))
        assert tuple(int(v) for v in a[0, 0]) == pytest.approx(rgb, abs=1), (k, a[0, 0])
    with Image.open(files["c_palette"]) as im:  # the transparent palette entry composited on white
        assert tuple(np.asarray(im.convert("RGB"))[0, -1]) == (255, 255, 255)


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("bad") / "pics")


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    folder = make_folder(tmp_path_factory.mktemp("samples") / "s", numbered=True)
    (folder / "samples.json").write_text(json.dumps({"sampler": "euler", "steps": 1}))
    return folder


@pytest.fixture(scope="module")
def extractor(tmp_path_factory) -> str:
    """An untrained small digits network: FD needs features, not good ones."""
    from shared.toy import features

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("net") / "features.safetensors"
    features.save(features.DigitsNet(width=4, feature_dim=2).eval(), path)
    return f"digits:{path}"


def _reasons_printed(out: str) -> None:
    assert "4 of 8 samples skipped as bad" in out and all(f"{r}={n}" in out for r, n in REASONS.items()), out


def test_crop_images(bad, tmp_path, capsys):
    from projects.sd_flux_lab import crop_images

    res = crop_images.main({"scale": "tiny", "in_dir": str(bad), "out_dir": str(tmp_path / "out"), "size": SIZE})
    assert res == {"images": 4, "skipped": 4, "skip_reasons": REASONS}
    out = capsys.readouterr().out
    _reasons_printed(out)
    assert "gone.png" in out and "cut.jpg" in out
    written = {p.stem: p for p in (tmp_path / "out").glob("*.png")}
    assert sorted(written) == ["a_rgb", "b_sixteen", "c_palette", "d_rgba"]
    _check_pixels(written)


def test_categorize(bad, tmp_path, capsys):
    import shutil

    from projects.sd_flux_lab import categorize

    src = tmp_path / "in"
    shutil.copytree(bad, src, symlinks=True)
    summary = categorize.main({"scale": "tiny", "model": "random", "input_dir": str(src),
                               "output_dir": str(tmp_path / "sorted"), "organize": True, "min_count": 1})
    assert summary["skip_reasons"] == REASONS
    assert summary["skipped"] == {"cut.jpg": "truncated", "empty.png": "not_an_image", "notes.png": "not_an_image",
                                  "gone.png": "unreadable"}
    assert sorted(summary["images"]) == ["a_rgb.png", "b_sixteen.png", "c_palette.png", "d_rgba.png"]
    on_disk = json.loads((tmp_path / "sorted/keywords.json").read_text())
    assert on_disk["skip_reasons"] == REASONS
    _reasons_printed(capsys.readouterr().out)
    sorted_names = {p.name for p in (tmp_path / "sorted").rglob("*.png")}
    assert sorted_names == {"a_rgb.png", "b_sixteen.png", "c_palette.png", "d_rgba.png"}  # bad ones not sorted


def test_dmd2_compare(samples, tmp_path, capsys):
    from projects.dmd2 import compare

    grid = compare.main({"scale": "tiny", "folders": [str(samples)], "n": 8, "cell": SIZE,
                         "out": str(tmp_path / "grid.png")})
    _reasons_printed(capsys.readouterr().out)
    with Image.open(grid) as im:
        g = np.asarray(im.convert("RGB"))
    cell = lambda i: g[:SIZE, compare.LABEL_WIDTH + i * SIZE: compare.LABEL_WIDTH + (i + 1) * SIZE]  # noqa: E731
    for i in (1, 2, 3, 4):  # the bad samples: grey cells
        assert (cell(i) == 128).all()
    assert tuple(cell(5)[0, 0]) == EXPECTED["b_sixteen"] and tuple(cell(6)[0, 0]) == EXPECTED["c_palette"]
    assert tuple(cell(7)[0, 0]) == pytest.approx(EXPECTED["d_rgba"], abs=1)


def test_shared_evaluate(samples, extractor, tmp_path, capsys):
    from shared import evaluate

    out = tmp_path / "eval.json"
    evaluate.main({"scale": "tiny", "images": str(samples), "reference": str(samples), "metrics": ["fd"],
                   "extractor": extractor, "experiment": "bad", "out": str(out), "check_resolution": False,
                   "reference_stats": str(tmp_path / "ref.npz")})
    result = json.loads(out.read_text())
    assert result["num_images_found"] == 8 and result["num_images_read"] == 4 and result["num_unreadable"] == 4
    assert result["skip_reasons"] == REASONS
    assert [u.split(" (")[0] for u in result["unreadable"]] == [
        "000001.png: truncated", "000002.png: not_an_image", "000003.png: not_an_image", "000004.png: unreadable"]
    assert "(No such file or directory)" in result["unreadable"][3]  # the dangling link, with the OS's reason
    assert "4 unreadable skipped: not_an_image=2, truncated=1, unreadable=1" in capsys.readouterr().out
    fd = next(m["value"] for m in result["metrics"] if m["metric"] == "fd")
    assert abs(fd) < 1e-6  # the same four readable images on both sides


def test_shared_metrics_reader_decodes_modes(samples):
    from shared.metrics.images import read_image

    assert tuple(read_image(samples / "000005.png")[0, 0]) == EXPECTED["b_sixteen"]
    assert tuple(read_image(samples / "000006.png")[0, -1]) == (255, 255, 255)


def test_dmd2_evaluate_resized(samples, extractor, tmp_path, capsys):
    import shutil

    from projects.dmd2 import evaluate

    imgs = tmp_path / "s"
    shutil.copytree(samples, imgs, symlinks=True)
    out = tmp_path / "eval.json"
    evaluate.main({"scale": "tiny", "images": str(imgs), "reference": str(imgs), "metrics": ["fd"],
                   "extractor": extractor, "experiment": "bad", "out": str(out), "resolution": 8})
    result = json.loads(out.read_text())
    assert result["resolution"] == "8x8" and result["num_images_read"] == 4 and result["skip_reasons"] == REASONS
    cached = tmp_path / "s__8px"
    assert (cached / "000004.png").is_symlink() and (cached / "000002.png").stat().st_size == 0
    with Image.open(cached / "000005.png") as im:
        assert im.size == (8, 8) and tuple(np.asarray(im.convert("RGB"))[0, 0]) == EXPECTED["b_sixteen"]
    _reasons_printed(capsys.readouterr().out)


def test_glide_evaluate_and_held_out_upsampling(samples, bad, extractor, tmp_path, capsys):
    import shutil

    from projects.glide_finetune import evaluate, sample

    ref = tmp_path / "ref"
    shutil.copytree(samples, ref, symlinks=True)
    small = tmp_path / "small"  # samples at 8 px: the reference is resized to them, bad files carried over
    small.mkdir()
    for p in sorted(samples.iterdir()):
        if p.suffix == ".png" and p.name in ("000000.png", "000005.png", "000006.png", "000007.png"):
            Image.open(p).convert("RGB").resize((8, 8)).save(small / p.name)
    (small / "samples.json").write_text(json.dumps({"sampler": "plms", "steps": "50"}))
    out = tmp_path / "g.json"
    res = evaluate.main({"scale": "tiny", "images": str(small), "reference": str(ref), "metrics": ["fd"],
                         "extractor": extractor, "out": str(out)})
    assert res["num_images_read"] == 4 and res["skip_reasons"] == {}
    cached = tmp_path / "ref__8px"
    assert (cached / "000004.png").is_symlink() and (cached / "000001.png").read_bytes()[:2] == b"\xff\xd8"
    for name in ("000000.png", "000005.png", "000006.png", "000007.png"):
        with Image.open(cached / name) as im:
            assert im.size == (8, 8)
    _reasons_printed(capsys.readouterr().out)

    up = sample.main({"scale": "tiny", "low_res_images": str(bad), "upsampler": "bicubic:2", "low_res_size": SIZE,
                      "out_dir": str(tmp_path / "up"), "batch_size": 8})
    assert up["skipped"] == 4 and up["skip_reasons"] == REASONS and up["num_images"] == 4
    assert json.loads((tmp_path / "up/samples.json").read_text())["skip_reasons"] == REASONS
    written = {p.stem: p for p in (tmp_path / "up").glob("*.png")}
    assert sorted(written) == ["a_rgb", "b_sixteen", "c_palette", "d_rgba"]
    with Image.open(written["b_sixteen"]) as im:
        assert im.size == (2 * SIZE, 2 * SIZE)
        assert tuple(np.asarray(im.convert("RGB"))[SIZE, SIZE]) == pytest.approx(EXPECTED["b_sixteen"], abs=1)
    _reasons_printed(capsys.readouterr().out)


def test_titok_evaluate(bad, extractor, tmp_path, capsys):
    from projects.titok_rar import evaluate
    from projects.titok_rar.image_tokenizers import MaskGITVQGAN, small_vqgan_config

    torch.manual_seed(0)
    MaskGITVQGAN(small_vqgan_config("tiny")).save_pretrained(tmp_path / "vq")  # untrained: reading is the test
    out = tmp_path / "e.json"
    evaluate.main({"scale": "tiny", "tokenizer": str(tmp_path / "vq"), "experiment": "bad", "data": str(bad),
                   "image_size": SIZE, "extractor": extractor, "metrics": "fd", "out": str(out),
                   "max_skip_rate": 0.6})  # half the folder is bad: above the default 5%, which stops a run
    result = json.loads(out.read_text())
    assert result["num_reconstructed"] == 4 and result["input_skipped"] == 4
    assert result["input_skip_reasons"] == REASONS
    assert "skipped 4 unreadable input images: not_an_image=2, truncated=1, unreadable=1" in capsys.readouterr().out
    originals = sorted((tmp_path / "e/originals").glob("*.png"))
    assert len(originals) == 4
    sixteen = next(p for p in originals if "sixteen" in p.name)
    with Image.open(sixteen) as im:  # the 16-bit grey, through the shared decoder and the loader
        assert tuple(np.asarray(im.convert("RGB"))[0, 0]) == EXPECTED["b_sixteen"]


def test_flux_edit_folder(bad, tmp_path, capsys):
    import shutil

    from projects.sd_flux_lab import flux, generate

    src = tmp_path / "photos"  # FLUX.2's image processor wants >= 64 px: the good images scaled up, same modes
    shutil.copytree(bad, src, symlinks=True)
    for k, im in _good_images().items():
        im.resize((64, 64), Image.NEAREST).save(src / f"{k}.png")
    pipe = flux.main({"scale": "tiny", "out_dir": str(tmp_path / "flux2")})
    capsys.readouterr()
    files = generate.main({"scale": "tiny", "pipeline": str(pipe), "out_dir": str(tmp_path / "edit"),
                           "input_dir": str(src), "prompt": "make it blue"})
    sources = [Path(generate.read_png_settings(f)["parameters"]["source"]).stem for f in files]
    assert sources == ["a_rgb", "b_sixteen", "c_palette", "d_rgba"]  # the four bad files skipped, the run went on
    _reasons_printed(capsys.readouterr().out)
    with pytest.raises(ValueError, match=r"init_image=.*notes.png: not a readable image \(not_an_image"):
        generate.main({"scale": "tiny", "pipeline": str(pipe), "out_dir": str(tmp_path / "i2i"), "prompt": "x",
                       "init_image": str(bad / "notes.png")})
