"""shared/table_plots.py through shared/tables.py plots=[...]: DMD2 student vs teacher over NFE, TiTok rFID vs
K, the RAR order ablation as bars; each PNG with the CSV of exactly its points, from fixture evaluation JSONs."""
from __future__ import annotations

import csv
import io
import json

import pytest
from PIL import Image

from shared import plots, table_plots, tables


def _eval(path, experiment, sampler, steps, metrics, nfe=None, checkpoint=None):
    d = {"experiment": experiment, "checkpoint": checkpoint or experiment, "sampler": sampler, "steps": steps,
         "scale": "toy", "metrics": [{"metric": m, "value": v, "num_samples": 80, "reference_id": "train:1:a",
                                      "extractor_id": "digits-cnn:x"} for m, v in metrics.items()],
         "info": {"nfe": nfe} if nfe is not None else {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))
    return str(path)


def _points(png):
    assert Image.open(png).size[0] > 100  # a real image
    return list(csv.DictReader(io.StringIO(png.with_suffix(".csv").read_text())))


def test_dmd2_student_points_and_teacher_curves(tmp_path):
    ev = tmp_path / "eval"
    inputs = [_eval(ev / "t1.json", "teacher_edm_euler_1", "edm_euler", 1, {"fd": 9.0, "prompt_accuracy": 0.2}),
              _eval(ev / "t4.json", "teacher_edm_euler_4", "edm_euler", 4, {"fd": 3.0, "prompt_accuracy": 0.8}),
              _eval(ev / "t2.json", "teacher_edm_euler_2", "edm_euler", 2, {"fd": 5.0, "prompt_accuracy": 0.5}),
              # guided teacher: the recorded NFE (4 steps x 2), not the steps, is its x
              _eval(ev / "d4.json", "teacher_edm_dpm_4", "dpm++", 4, {"fd": 2.5, "prompt_accuracy": 0.9}, nfe=8),
              # a student of two training seeds: one point at their mean
              _eval(ev / "s.json", "digits_1step_gan", "dmd2", 1, {"fd": 2.0, "prompt_accuracy": 0.9}, nfe=1),
              _eval(ev / "s1.json", "digits_1step_gan_seed1", "dmd2", 1, {"fd": 3.0, "prompt_accuracy": 0.8}, nfe=1)]
    tables.main({"inputs": inputs, "scale": "toy", "title": "DMD2 imagenet64 analogue", "plots": ["nfe"],
                 "out_md": str(tmp_path / "tables/dmd2_imagenet64.md")})
    fd = _points(tmp_path / "tables/dmd2_imagenet64_fd_vs_nfe.png")
    assert [(p["series"], float(p["x"]), float(p["y"])) for p in fd] == [
        ("teacher, edm_euler", 1.0, 9.0), ("teacher, edm_euler", 2.0, 5.0), ("teacher, edm_euler", 4.0, 3.0),
        ("teacher, dpm++", 8.0, 2.5), ("DMD2 digits_1step_gan", 1.0, 2.5)]
    acc = _points(tmp_path / "tables/dmd2_imagenet64_prompt_accuracy_vs_nfe.png")
    assert [float(p["y"]) for p in acc if p["series"].startswith("DMD2")] == [pytest.approx(0.85)]
    assert (tmp_path / "tables/dmd2_imagenet64.md").is_file()  # the table itself as before


def test_titok_rfid_and_psnr_against_tokens(tmp_path):
    ev = tmp_path / "eval"
    inputs = [_eval(ev / f"k{k}.json", f"k{k}_stage2", "reconstruction", 0,
                    {"rfid": 40.0 / k, "psnr": 10 + k / 4, "tokens_per_image": k}) for k in (32, 8, 16)]
    tables.main({"inputs": inputs, "scale": "toy", "title": "TiTok rFID vs K", "plots": ["tokens"],
                 "out_md": str(tmp_path / "titok_tokens.md")})
    rfid = _points(tmp_path / "titok_tokens_rfid_vs_tokens.png")
    assert [(float(p["x"]), float(p["y"])) for p in rfid] == [(8.0, 5.0), (16.0, 2.5), (32.0, 1.25)]  # sorted by K
    assert [float(p["y"]) for p in _points(tmp_path / "titok_tokens_psnr_vs_tokens.png")] == [12.0, 14.0, 18.0]
    assert not (tmp_path / "titok_tokens_prompt_accuracy_vs_tokens.png").exists()


def test_rar_order_ablation_bars(tmp_path):
    ev = tmp_path / "eval"
    inputs = [_eval(ev / "a.json", "rar_raster", "default", 0, {"fd": 2.4, "prompt_accuracy": 0.7}),
              _eval(ev / "b.json", "rar_random", "default", 0, {"fd": 3.1, "prompt_accuracy": 0.6}),
              _eval(ev / "c.json", "rar_annealed", "default", 0, {"fd": 2.0, "prompt_accuracy": 0.8}),
              _eval(ev / "c1.json", "rar_annealed_seed1", "default", 0, {"fd": 2.2, "prompt_accuracy": 0.8})]
    tables.main({"inputs": inputs, "scale": "toy", "title": "RAR order ablation", "plots": ["bars"],
                 "out_md": str(tmp_path / "rar_order.md")})
    fd = _points(tmp_path / "rar_order_fd_bars.png")
    assert [(p["label"], float(p["value"])) for p in fd] == [("rar_raster", 2.4), ("rar_random", 3.1),
                                                              ("rar_annealed", pytest.approx(2.1))]
    assert [p["error"] for p in fd][:2] == ["", ""] and float(fd[2]["error"]) == pytest.approx(0.1414, abs=1e-4)
    assert [float(p["value"]) for p in _points(tmp_path / "rar_order_prompt_accuracy_bars.png")] == \
        [0.7, 0.6, pytest.approx(0.8)]


def test_axes_say_which_way_is_better_and_bad_names_are_refused(tmp_path):
    assert table_plots.METRIC_AXES["fd"][1] == "lower" and table_plots.METRIC_AXES["rfid"][1] == "lower"
    assert table_plots.METRIC_AXES["prompt_accuracy"][1] == "higher"
    assert plots._ylabel("FD", "lower").endswith("(lower is better)")
    with pytest.raises(ValueError, match="unknown \\['nope'\\]; known: nfe, tokens, bars"):
        tables.main({"inputs": [_eval(tmp_path / "a.json", "x", "dmd2", 1, {"fd": 1.0})], "scale": "toy",
                     "plots": ["nope"], "out_md": str(tmp_path / "t.md")})
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.bars({"a": float("nan")}, tmp_path / "b.png", ylabel="FD")
