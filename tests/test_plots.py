"""shared/plots.py: every plot is a real PNG with the CSV of what it draws, axes say what is better."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from shared import plots


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_lines_writes_png_and_the_points_behind_it(tmp_path):
    out = plots.lines({"ddim": [(10, 1.2), (5, 3.1)], "dpm++": [(5, 1.9), (10, float("nan"))]},
                      tmp_path / "q.png", xlabel="NFE", ylabel="FD", better="lower", logx=True,
                      reference={"ddpm x250": 0.6})
    im = Image.open(out)
    assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    rows = _csv(tmp_path / "q.csv")
    # sorted by x, non-finite points dropped, the reference line kept as its own row
    assert [(r["series"], float(r["x"]), float(r["y"])) for r in rows[:3]] == \
        [("ddim", 5.0, 3.1), ("ddim", 10.0, 1.2), ("dpm++", 5.0, 1.9)]
    assert rows[3]["series"] == "reference: ddpm x250" and float(rows[3]["y"]) == 0.6
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.lines({"a": [(1, float("inf"))]}, tmp_path / "empty.png", xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="better="):
        plots.lines({"a": [(1, 1)]}, tmp_path / "b.png", xlabel="x", ylabel="y", better="smaller")


def test_axis_labels_say_which_way_is_better():
    assert plots._ylabel("FD", "lower") == "FD (lower is better)"
    assert plots._ylabel("accuracy", "higher") == "accuracy (higher is better)"
    assert plots._ylabel("lr", None) == "lr"


def test_scatter_groups_and_labels(tmp_path):
    pts = [{"label": "DMD2 1-step", "x": 1, "y": 0.9, "group": "dmd2"},
           {"label": "teacher 25", "x": 50, "y": 0.8, "group": "sd"}, {"label": "no fd", "x": 4, "y": None}]
    plots.scatter(pts, tmp_path / "s.png", xlabel="NFE", ylabel="FD", better="lower", logx=True)
    assert [(r["label"], r["group"]) for r in _csv(tmp_path / "s.csv")] == [("DMD2 1-step", "dmd2"),
                                                                          ("teacher 25", "sd")]


def test_training_curves_from_metrics_jsonl(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-3, "grad_norm": 0.5 + s, "skipped_steps": 0,
                         "time": 100.0 + s}) for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 6, "loss": 0.1')  # last line cut by a kill
    out = plots.training_curves(run / "metrics.jsonl", tmp_path / "curves.png")
    rows = _csv(tmp_path / "curves.csv")
    keys = list(dict.fromkeys(r["key"] for r in rows))
    assert keys == ["loss", "grad_norm"]  # constant lr/skipped_steps and time are not curves; loss first
    assert [int(r["step"]) for r in rows if r["key"] == "loss"] == [1, 2, 3, 4, 5]
    assert Image.open(out).size[0] > 300
    # two runs in one figure, chosen keys
    plots.training_curves({"a": run / "metrics.jsonl", "b": run / "metrics.jsonl"}, tmp_path / "two.png",
                          keys=["loss", "lr"])
    assert {(r["run"], r["key"]) for r in _csv(tmp_path / "two.csv")} == {("a", "loss"), ("b", "loss"),
                                                                          ("a", "lr"), ("b", "lr")}
    assert plots.main([str(run / "metrics.jsonl"), f"out={tmp_path / 'cli.png'}"]).is_file()
    with pytest.raises(SystemExit):
        plots.main([str(run / "metrics.jsonl"), "outt=x.png"])


def test_compare_reference_row_grid_and_sample_choice():
    """shared/toy/sampler_compare.py's pieces that need no model: the many-step reference option, which samples a
    grid cell shows, and the grid with the reference row below."""
    import torch

    from shared.toy import sampler_compare as compare

    assert compare.parse_reference("ddpm:250") == ("ddpm", 250) and compare.parse_reference("") is None
    for bad in ("ddpm", "ddpm:0", "ddpm:x"):
        with pytest.raises(ValueError, match="expected sampler:steps"):
            compare.parse_reference(bad)
    with pytest.raises(ValueError, match="unknown sampler"):
        compare.parse_reference("nope:10")
    labels = [lab for lab in range(80)]  # one sample per class, label = digit * 8 + colour
    assert compare.grid_samples(labels, 8, 4) == [0, 9, 18, 27]  # digit i in colour i
    assert compare.grid_samples([5, 5, 7], 8, 2) == [0, 1]  # those labels absent: the first samples
    cells = {(s, n): torch.full((2, 3, 32, 32), 100, dtype=torch.uint8) for s in ("ddim", "dpm++") for n in (5, 10)}
    grid = compare.draw_grid(cells, ["ddim", "dpm++"], [5, 10], [("ddpm x250", torch.zeros(2, 3, 32, 32,
                                                                                          dtype=torch.uint8))])
    assert grid.size == compare.grid_size(3, 2, 2, 32)
    y = compare.HEADER_HEIGHT + compare.PAD + 2 * (32 + compare.PAD) + 16  # the reference row, first column
    assert grid.getpixel((compare.LABEL_WIDTH + compare.PAD + 5, y)) == (0, 0, 0)
    assert grid.getpixel((compare.LABEL_WIDTH + compare.PAD + 2 * 32 + compare.PAD + 5, y)) == (32, 32, 32)


def test_image_grid_places_each_image_with_padding():
    rng = np.random.default_rng(0)
    ims = rng.integers(0, 256, (5, 3, 4, 3), dtype=np.uint8)
    g = np.asarray(plots.image_grid(ims, cols=2, pad=2))
    assert g.shape == (3 * 5 + 2, 2 * 6 + 2, 3)                    # 3 rows of (h + pad) + pad, 2 cols of (w + pad) + pad
    np.testing.assert_array_equal(g[2 + 5:2 + 5 + 3, 2 + 6:2 + 6 + 4], ims[3])   # row 1, col 1
    assert g[:2].max() == 0 and g[2 + 10:, 2 + 6:].max() == 0          # border and the empty last cell stay black
    # a list of PIL images without padding: each image pasted at (col * w, row * h), as the dmd2 grids were
    pil = [Image.fromarray(a) for a in ims]
    flat = plots.image_grid(pil, cols=3)
    ref = Image.new("RGB", (3 * 4, 2 * 3))
    for i, im in enumerate(pil):
        ref.paste(im, ((i % 3) * 4, (i // 3) * 3))
    np.testing.assert_array_equal(np.asarray(flat), np.asarray(ref))
    with pytest.raises(ValueError, match="uint8"):
        plots.image_grid(ims.astype(np.float32), cols=2)
