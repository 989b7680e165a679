"""shared.data.decode: every PIL mode decodes to the expected 8-bit RGB pixels; bad files become skip reasons;
small images are filtered; the header probe sees what a run would leave out."""
import io

import numpy as np
import pytest
from PIL import Image

from shared.data import BadSample, Filtered, check_images, decode_image, probe_image


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _rgb(data: bytes, **kw) -> np.ndarray:
    img = decode_image(data, "x", **kw)
    assert img.mode == "RGB"
    return np.asarray(img)


def test_16bit_greyscale_is_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 8-bit 0, 1, 128, 255
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    data = _png(img)
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")  # what a 16-bit PNG opens as
    got = _rgb(data)
    assert got[0, :, 0].tolist() == [0, 1, 128, 255] and (got[..., 0] == got[..., 2]).all()
    # the failure this replaces: PIL's own convert clips every value above 255 to white
    assert np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[0, 2, 0] == 255


def test_32bit_int_and_float_greyscale():
    assert _rgb(_png(Image.fromarray(np.array([[0, 65535]], dtype=np.int32)), format="TIFF"))[0, :, 0].tolist() \
        == [0, 255]
    assert _rgb(_png(Image.fromarray(np.array([[0, 200]], dtype=np.int32)), format="TIFF"))[0, :, 0].tolist() \
        == [0, 200]  # values that fit in 8 bits are taken as 8-bit
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert _rgb(_png(f, format="TIFF"))[0, :, 0].tolist() == [0, 128, 255]


def test_palette_with_transparency_is_composited_on_the_background():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0, 1])
    img.info["transparency"] = 1  # index 1 (blue) is transparent
    data = _png(img, transparency=1)
    assert _rgb(data).tolist() == [[[255, 0, 0], [255, 255, 255]]]
    assert _rgb(data, background=(0, 0, 0)).tolist() == [[[255, 0, 0], [0, 0, 0]]]


def test_la_and_rgba_are_composited_by_alpha():
    la = Image.fromarray(np.array([[[100, 255], [100, 0], [100, 128]]], dtype=np.uint8), "LA")
    got = _rgb(_png(la), background=(0, 0, 0))[0, :, 0].tolist()
    assert got == [100, 0, round(100 * 128 / 255)]
    rgba = Image.fromarray(np.array([[[10, 20, 30, 255], [10, 20, 30, 0]]], dtype=np.uint8), "RGBA")
    assert _rgb(_png(rgba)).tolist() == [[[10, 20, 30], [255, 255, 255]]]
    assert _rgb(_png(rgba), background=(0, 128, 0)).tolist() == [[[10, 20, 30], [0, 128, 0]]]


def test_cmyk():
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putdata([(255, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 0)])  # cyan, black, white
    assert _rgb(_png(cmyk, format="TIFF")).tolist() == [[[0, 255, 255], [0, 0, 0], [255, 255, 255]]]


@pytest.mark.parametrize("orientation,expected_size,red_at", [(1, (3, 2), (0, 0)), (6, (2, 3), (0, 1)),
                                                              (3, (3, 2), (1, 2)), (8, (2, 3), (2, 0))])
def test_exif_orientation_is_applied(orientation, expected_size, red_at, tmp_path):
    a = np.zeros((2, 3, 3), dtype=np.uint8)
    a[0, 0] = (255, 0, 0)  # red top-left as stored
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = orientation
    data = _png(img, exif=exif.tobytes())
    out = decode_image(data, "x")
    assert out.size == expected_size
    px = np.asarray(out)
    assert tuple(px[red_at]) == (255, 0, 0) and px.sum() == 255
    (tmp_path / "o.png").write_bytes(data)
    assert probe_image(tmp_path / "o.png") == expected_size  # the probe reports the upright size too


def test_small_images_are_filtered_and_bad_files_sorted_into_reasons(tmp_path):
    tiny = _png(Image.new("RGB", (1, 1)))
    with pytest.raises(Filtered, match="too_small"):
        decode_image(tiny, "x", min_size=8)
    assert decode_image(tiny, "x").size == (1, 1)  # min_size=0 keeps it
    good = _png(Image.new("RGB", (32, 32), (1, 2, 3)))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "good.png").write_bytes(good)
    (tmp_path / "small.png").write_bytes(tiny)
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image\n")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(BadSample) as e:
        probe_image(tmp_path / "gone.png")
    assert e.value.reason == "unreadable"
    counter, why = check_images(tmp_path, ["good.png", "small.png", "cut.jpg", "empty.png", "text.png", "gone.png"],
                                min_size=8)
    assert counter.counts == {"truncated": 1, "not_an_image": 2, "unreadable": 1}
    assert counter.filtered == {"too_small": 1} and counter.seen == 6
    assert sorted(why) == ["cut.jpg", "empty.png", "gone.png", "small.png", "text.png"]
    assert why["empty.png"].startswith("not_an_image (empty file")
