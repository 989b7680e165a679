"""shared/tables.py: paper-style Markdown/CSV from evaluation JSONs, and its refusals."""
from __future__ import annotations

import csv
import io
import json

import pytest

from shared import tables


def _write(path, experiment, checkpoint="none", metrics=None, scale="toy", ref="train:1:a", ext="digits-cnn:x",
           std=None):
    metrics = metrics or {"fd": 12.5, "kid": 0.01}
    d = {"experiment": experiment, "checkpoint": checkpoint, "sampler": "ddim", "steps": 50, "scale": scale,
         "metrics": [{"metric": m, "value": v, "num_samples": 100, "reference_id": ref, "extractor_id": ext,
                      **({"std": std[m]} if std and m in std else {})} for m, v in metrics.items()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))
    return path


def test_table_layout(tmp_path):
    a = _write(tmp_path / "ev" / "a" / "x.json", "glide", "ckpt1", {"fd": 12.3456, "kid": 0.0123}, std={"kid": 0.002})
    _write(tmp_path / "ev" / "b" / "x.json", "dmd2", "ckpt2", {"fd": 8.0})
    (tmp_path / "ev" / "a" / "x.run.json").write_text(json.dumps({"time": "now"}))  # provenance: skipped by glob
    md = tables.main({"inputs": str(tmp_path / "ev" / "*" / "*.json"), "title": "T1", "scale": "toy",
                      "out_md": str(tmp_path / "t.md"), "out_csv": str(tmp_path / "t.csv"),
                      "paper": {"glide": {"fd": 12.24}}, "notes": ["n1"]})
    assert md == (tmp_path / "t.md").read_text()
    assert "scale: **toy**" in md and "NOT reproductions" in md and "- n1" in md
    header = [h.strip() for h in md.splitlines()[2].strip("|").split("|")]
    assert header == ["experiment", "checkpoint", "sampler", "steps", "fd", "fd (paper)", "kid"]
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in md.splitlines()[4:6]}
    assert rows["glide"][4:] == ["12.35", "12.24", "0.0123 ± 0.002"]
    assert rows["dmd2"][4:] == ["8", "–", "–"]
    got = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert got[0]["fd"] == "12.3456" and got[0]["fd_paper"] == "12.24" and got[0]["scale"] == "toy"
    assert got[1]["kid"] == "" and got[0]["kid_std"] == "0.002" and str(a) in md


def test_refuses_mixed_reference_or_extractor(tmp_path):
    a = _write(tmp_path / "a.json", "e1", ref="train:1:a")
    b = _write(tmp_path / "b.json", "e2", ref="train:2:b")
    with pytest.raises(tables.TableError, match="column 'fd'.*train:1:a.*a.json.*train:2:b.*b.json"):
        tables.main({"inputs": [str(a), str(b)], "out_md": str(tmp_path / "t.md")})
    c = _write(tmp_path / "c.json", "e3", ext="inception-v3-cleanfid:y", ref="train:1:a")
    with pytest.raises(tables.TableError, match="inception-v3-cleanfid"):
        tables.main({"inputs": [str(a), str(c)], "out_md": str(tmp_path / "t.md")})


def test_refuses_other_scale_and_duplicates(tmp_path):
    a = _write(tmp_path / "a.json", "e1")
    p = _write(tmp_path / "p.json", "e2", scale="paper")
    with pytest.raises(tables.TableError, match="p.json: scale 'paper' in a 'toy' table"):
        tables.main({"inputs": [str(a), str(p)], "out_md": str(tmp_path / "t.md")})
    d = _write(tmp_path / "d.json", "e1")
    with pytest.raises(tables.TableError, match="d.json and .*a.json"):
        tables.main({"inputs": [str(a), str(d)], "out_md": str(tmp_path / "t.md")})
    with pytest.raises(tables.TableError, match="matches no evaluation JSON"):
        tables.main({"inputs": str(tmp_path / "nothing" / "*.json"), "out_md": str(tmp_path / "t.md")})


def test_paper_numbers_from_file_and_paper_scale_caption(tmp_path):
    a = _write(tmp_path / "a.json", "glide", scale="paper", metrics={"fid": 13.0})
    (tmp_path / "paper.yaml").write_text("glide:\n  fid: 12.24\n  clip_score: 0.3\n")
    md = tables.main({"inputs": [str(a)], "scale": "paper", "paper": str(tmp_path / "paper.yaml"),
                      "out_md": str(tmp_path / "t.md")})
    assert "scale: **paper**" in md and "NOT" not in md
    assert "| glide | none | ddim | 50 | 13 | 12.24 | – | 0.3 |" in md
    assert (tmp_path / "t.csv").is_file()


def test_every_table_has_its_html_page(tmp_path):
    _write(tmp_path / "a.json", "glide", "ckpt1", {"fd": 12.3456})
    tables.main({"inputs": [str(tmp_path / "a.json")], "title": "T", "scale": "toy", "out_md": str(tmp_path / "t.md")})
    page = (tmp_path / "t.html").read_text()
    assert "<th>experiment</th>" in page and "<td>glide</td>" in page and "<td>12.35</td>" in page
    assert "<h3>T — scale: toy." in page


def _info(path, **info):
    d = json.loads(path.read_text())
    d["info"] = info
    path.write_text(json.dumps(d))
    return path


def test_leaderboard_one_row_per_method_with_info_columns_and_labelled_references(tmp_path):
    a = _info(_write(tmp_path / "results/toy/dmd2/eval/s.json", "student", metrics={"fd": 1.3, "prompt_accuracy":
                                                                                    0.99}),
              method="DMD2 1-step", paper="Yin et al. 2024", nfe=1, parameters=1_250_000, seconds_per_image=0.01,
              train_steps=600)
    b = _info(_write(tmp_path / "results/toy/sampler_compare/eval/d.json", "digits_diffusion",
                     metrics={"fd": 1.6}), method="DDPM UNet + dpm++", project="samplers", nfe=25)
    c = _write(tmp_path / "results/toy/metrics/digits/r.json", "real", metrics={"fd": 0.7}, ref="train:9:z")
    md = tables.main({"kind": "leaderboard", "inputs": [str(a), str(b), str(c)], "scale": "toy", "title": "LB",
                      "out_md": str(tmp_path / "lb.md")})
    rows = list(csv.DictReader(io.StringIO((tmp_path / "lb.csv").read_text())))
    assert [r["method"] for r in rows] == ["DMD2 1-step", "DDPM UNet + dpm++", "real"]  # by reference, then FD
    assert [r["fd_reference"] for r in rows] == ["R1", "R1", "R2"]
    assert rows[0]["project"] == "dmd2" and rows[1]["project"] == "samplers"  # from the path, or from info
    assert (rows[0]["nfe"], rows[0]["parameters"], rows[0]["train_steps"], rows[0]["prompt_accuracy"]) == \
        ("1", "1250000", "600", "0.99")
    assert rows[2]["nfe"] == "" and "| real | – |" in md and "1.25M" in md
    assert "- R2: reference `train:9:z`" in md and "not recorded" in md
    points = list(csv.DictReader(io.StringIO((tmp_path / "lb_fd_vs_nfe.csv").read_text())))
    assert [(p["label"], float(p["x"]), float(p["y"])) for p in points] == [("DMD2 1-step (50 steps)", 1.0, 1.3),
                                                                          ("DDPM UNet + dpm++ (50 steps)", 25.0, 1.6)]
    assert "<td>DMD2 1-step</td>" in (tmp_path / "lb.html").read_text()
    with pytest.raises(tables.TableError, match="scale 'paper' in a 'toy' leaderboard"):
        tables.main({"kind": "leaderboard", "inputs": [str(_write(tmp_path / "p.json", "x", scale="paper"))],
                     "scale": "toy", "out_md": str(tmp_path / "bad.md")})


def test_evaluate_info_comes_from_files_and_options(tmp_path):
    from omegaconf import OmegaConf

    from shared import evaluate

    (tmp_path / "samples.json").write_text(json.dumps({"nfe": 4, "seconds_per_image": 0.5, "other": 1}))
    (tmp_path / "metrics.json").write_text(json.dumps({"train_steps": 900, "parameters": 1000}))
    cfg = OmegaConf.create({"info": [str(tmp_path / "samples.json"), str(tmp_path / "metrics.json")],
                            "method": "m", "paper": "", "project": "p"})
    assert evaluate.collect_info(cfg) == {"nfe": 4, "seconds_per_image": 0.5, "train_steps": 900,
                                          "parameters": 1000, "method": "m", "project": "p"}
    cfg.info = [str(tmp_path / "missing.json")]
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        evaluate.collect_info(cfg)
