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
