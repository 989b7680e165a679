"""Collect evaluation JSONs (shared/evaluate.py) into a paper-style table: Markdown + CSV.

Writes `<out_md>.html` too (the same table as a page, what `snakemake --report` shows inline).
Rows are (experiment, checkpoint, sampler, steps); columns are metrics, each followed by the paper's number
in its own column where `paper` gives one (a metric's std over subsets/splits, e.g. KID's or IS's, is shown
as "value ± std" and in a `<metric>_std` CSV column) ({experiment: {metric: value}}, inline or a YAML/JSON file). The
caption states the scale, so a toy number is never read as a reproduction. Numbers measured with different
extractors or against different reference sets are refused in one column (the error names the files), and
so are inputs of another scale than `scale`.

    python shared/tables.py inputs='results/toy/eval/*/*.json' title="Real vs real" scale=toy
    python shared/tables.py inputs=[a.json,b.json] paper='{glide: {fid: 12.24}}' out_md=t.md out_csv=t.csv
    python shared/tables.py kind=leaderboard inputs='results/toy/**/eval/**/*.json' scale=toy

The leaderboard (`kind=leaderboard`) puts every evaluation JSON in one table, one row per method: method, paper,
steps, NFE, FD, prompt accuracy, CLIP score, parameters, seconds per image, training steps (the last five from
the JSON's `info`, which shared/evaluate.py's `info=` and shared/toy/sampler_compare.py fill), plus an FD-vs-NFE
scatter (`out_png`). FDs against different references are labelled, not refused.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from shared.config import cli, option, resolve, save_resolved
from shared.io import read_json, write_text

ROW_KEYS = ("experiment", "checkpoint", "sampler", "steps")


@dataclass
class Config:
    inputs: Any = option(None, help="evaluation JSONs and/or globs: a list, or one string")
    title: str = option("Results", help="table title (in the caption)")
    scale: str = option("toy", help="tiny | toy | paper: stated in the caption; inputs of another scale are refused")
    out_md: str = option("", help="Markdown output; '' = results/<scale>/tables/<title>.md")
    out_csv: str = option("", help="CSV output; '' = beside out_md")
    paper: Any = option(None, help="{experiment: {metric: value}} or a YAML/JSON file of it")
    notes: Any = option(None, help="a string or list of strings printed under the table")
    metrics: list[str] = option(default_factory=list, help="column order/selection; empty = all, as they first appear")
    digits: int = option(4, help="significant digits in the Markdown")
    kind: str = option("table",
                       help="table | leaderboard (one row per method over all projects, + a quality-vs-NFE plot)")
    out_png: str = option("", help="leaderboard: the FD-vs-NFE scatter (+ its .csv: not out_csv's name); '' = "
                               "<out_md stem>_fd_vs_nfe.png")


class TableError(ValueError):
    """Inputs that must not share a table or a column."""


def _plain(x):
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, (DictConfig, ListConfig)) else x


def _is_evaluation(path: Path) -> bool:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "metrics" in d and all(k in d for k in ROW_KEYS)


def expand_inputs(inputs) -> list[Path]:
    """Files named outright must be evaluation JSONs; a glob's matches that are not (e.g. the *.run.json
    provenance files beside them) are skipped."""
    items = _plain(inputs)
    items = [items] if isinstance(items, str) else list(items or [])
    files: list[Path] = []
    for item in items:
        if glob.has_magic(str(item)):
            matches = [Path(m) for m in sorted(glob.glob(str(item), recursive=True))]
            matches = [p for p in matches if p.is_file() and _is_evaluation(p)]
            if not matches:
                raise TableError(f"inputs: '{item}' matches no evaluation JSON")
        else:
            matches = [Path(item)]
            if not matches[0].is_file():
                raise TableError(f"inputs: {item}: file not found")
        files += [p for p in matches if p not in files]
    if not files:
        raise TableError("inputs: no evaluation JSON files given")
    return files


def load_paper(paper) -> dict[str, dict[str, float]]:
    paper = _plain(paper)
    if not paper:
        return {}
    if isinstance(paper, str):
        path = Path(paper)
        if not path.is_file():
            raise TableError(f"paper: {path}: file not found (give a file or {{experiment: {{metric: value}}}})")
        paper = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    if not isinstance(paper, dict) or not all(isinstance(v, dict) for v in paper.values()):
        raise TableError("paper: expected {experiment: {metric: value}}")
    return {str(e): {str(m): float(v) for m, v in ms.items()} for e, ms in paper.items()}


def collect(files: list[Path], scale: str):
    """rows {key: {metric: value}}, column provenance {metric: {(reference_id, extractor_id): [files]}}."""
    rows: dict[tuple, dict[str, float]] = {}
    stds: dict[tuple, dict[str, float]] = {}
    origin: dict[tuple, Path] = {}
    columns: dict[str, dict[tuple, list[str]]] = {}
    samples: dict[str, set[int]] = {}
    for f in files:
        d = read_json(f)
        missing = [k for k in (*ROW_KEYS, "scale", "metrics") if k not in d]
        if missing:
            raise TableError(f"{f}: not an evaluation JSON (missing {missing})")
        if d["scale"] != scale:
            raise TableError(f"{f}: scale '{d['scale']}' in a '{scale}' table; toy and paper-scale numbers "
                             f"never share a table")
        key = tuple(d[k] for k in ROW_KEYS)
        if key in rows:
            raise TableError(f"{f} and {origin[key]}: both hold {dict(zip(ROW_KEYS, key))}")
        rows[key], stds[key], origin[key] = {}, {}, f
        for e in d["metrics"]:
            m = e["metric"]
            rows[key][m] = e["value"]
            if e.get("std") is not None:
                stds[key][m] = e["std"]
            columns.setdefault(m, {}).setdefault((e.get("reference_id"), e.get("extractor_id")), []).append(str(f))
            samples.setdefault(m, set()).add(int(e.get("num_samples", 0)))
    for m, prov in columns.items():
        if len(prov) > 1:
            detail = "; ".join(f"reference_id={r!r}, extractor_id={x!r} in {', '.join(fs)}"
                               for (r, x), fs in prov.items())
            raise TableError(f"column '{m}' mixes numbers that are not comparable: {detail}. "
                             f"Make one table per reference set and extractor.")
    return rows, stds, columns, samples


def _fmt(v, digits: int) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"


def build(cfg) -> tuple[str, str]:
    files = expand_inputs(cfg.inputs)
    paper = load_paper(cfg.paper)
    rows, stds, columns, samples = collect(files, cfg.scale)
    metrics = list(cfg.metrics) or list(columns)
    metrics += [m for ms in paper.values() for m in ms if m not in metrics and not cfg.metrics]
    metrics = list(dict.fromkeys(metrics))
    header: list[tuple[str, str, bool]] = []  # (label, metric, is_paper)
    for m in metrics:
        header.append((m, m, False))
        if any(m in ms for ms in paper.values()):
            header.append((f"{m} (paper)", m, True))

    def value(key, metric, is_paper):
        return paper.get(key[0], {}).get(metric) if is_paper else rows[key].get(metric)

    def cell(key, metric, is_paper):
        text = _fmt(value(key, metric, is_paper), cfg.digits)
        std = None if is_paper else stds[key].get(metric)
        return text if std is None else f"{text} ± {_fmt(std, 2)}"

    with_std = [m for m in metrics if any(m in st for st in stds.values())]
    toy = cfg.scale != "paper"
    caption = (f"**{cfg.title}** — scale: **{cfg.scale}**. " + (
        "Toy-scale numbers (small data, small models, toy feature extractor); they are NOT reproductions of "
        "the paper's numbers, which are shown only for orientation." if toy else
        "Paper-scale numbers, computed with the same protocol as the paper where stated."))
    md = [caption, "", "| " + " | ".join([*ROW_KEYS, *(h[0] for h in header)]) + " |",
          "|" + "---|" * len(ROW_KEYS) + "---:|" * len(header)]
    for key in rows:
        md.append("| " + " | ".join([*(str(k) for k in key),
                                      *(cell(key, m, p) for _, m, p in header)]) + " |")
    md += ["", "Columns:"]
    for m in metrics:
        if m in columns:
            (ref, ext), = columns[m]
            n = sorted(samples[m])
            ref = f"`{ref}`" if ref else "none (scored against the prompts/classes)"
            md.append(f"- `{m}`: extractor `{ext}`, reference {ref}, samples "
                      f"{n[0] if len(n) == 1 else f'{n[0]}–{n[-1]}'}")
        if any(m in ms for ms in paper.values()):
            md.append(f"- `{m} (paper)`: number reported in the paper (by experiment)")
    notes = _plain(cfg.notes)
    notes = [notes] if isinstance(notes, str) else list(notes or [])
    if notes:
        md += ["", "Notes:", *(f"- {n}" for n in notes)]
    md += ["", "Sources: " + ", ".join(f"`{f}`" for f in files), ""]

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*ROW_KEYS, "scale", *(f"{m}_paper" if p else m for _, m, p in header),
                *(f"{m}_std" for m in with_std)])
    for key in rows:
        num = [value(key, m, p) for _, m, p in header] + [stds[key].get(m) for m in with_std]
        w.writerow([*key, cfg.scale, *("" if v is None else repr(float(v)) for v in num)])
    return "\n".join(md), buf.getvalue()


# --- the leaderboard: every method of every project in one table ------------------------------------------------
LEADERBOARD_COLUMNS = ("method", "paper", "project", "sampler", "steps", "nfe", "fd", "prompt_accuracy",
                       "clip_score", "parameters", "seconds_per_image", "train_steps", "fd_reference")
# Columns a step may record under "info" in its evaluation JSON (shared/evaluate.py `info=`, compare.py).
INFO_KEYS = ("method", "paper", "project", "nfe", "parameters", "seconds_per_image", "train_steps")


def leaderboard_rows(files: list[Path], scale: str) -> tuple[list[dict], dict[tuple, str]]:
    """One row per evaluation JSON; FD columns of different (reference, extractor) pairs are labelled R1, R2, ...
    (returned as {(reference_id, extractor_id): label}) instead of refused: the leaderboard shows all methods, and
    says which FDs may be compared."""
    rows, refs = [], {}
    for f in files:
        d = read_json(f)
        if d.get("scale") != scale:
            raise TableError(f"{f}: scale '{d.get('scale')}' in a '{scale}' leaderboard")
        metrics = {e["metric"]: e for e in d.get("metrics", [])}
        info = d.get("info") or {}
        fd = metrics.get("fd") or metrics.get("fid")
        label = ""
        if fd is not None:
            label = refs.setdefault((fd.get("reference_id"), fd.get("extractor_id")), f"R{len(refs) + 1}")
        project = info.get("project") or (f.parts[f.parts.index(scale) + 1] if scale in f.parts[:-1] else "")
        row = {"method": info.get("method") or d["experiment"], "paper": info.get("paper", ""), "project": project,
               "sampler": d["sampler"], "steps": d["steps"], "nfe": info.get("nfe"),
               "fd": fd["value"] if fd else None,
               "prompt_accuracy": metrics["prompt_accuracy"]["value"] if "prompt_accuracy" in metrics else None,
               "clip_score": metrics["clip_score"]["value"] if "clip_score" in metrics else None,
               "parameters": info.get("parameters"), "seconds_per_image": info.get("seconds_per_image"),
               "train_steps": info.get("train_steps"), "fd_reference": label, "source": str(f)}
        rows.append(row)
    rows.sort(key=lambda r: (r["fd_reference"], r["fd"] if r["fd"] is not None else float("inf")))
    return rows, refs


def html_table(title: str, header: list[str], body: list[list[str]], notes: list[str] = ()) -> str:
    """A self-contained HTML page of one table (what `snakemake --report` shows inline; CSVs it only links)."""
    from html import escape

    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in body)
    extra = "".join(f"<p>{escape(n)}</p>" for n in notes)
    style = ("body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}"
             "td:first-child,th:first-child{text-align:left}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}"
            f"</style></head><body><h3>{escape(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{rows}"
            f"</tbody></table>{extra}</body></html>\n")


def markdown_to_html(md: str) -> str:
    """The HTML page of a table Markdown written by this module (caption, one table, notes)."""
    lines = md.splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    notes = [line.lstrip("- ").replace("*", "").replace("`", "") for line in lines
             if line.strip() and not line.startswith("|")]
    return html_table(notes[0] if notes else "", header, body, notes[1:])


def _cell(v, digits: int) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) and abs(v) >= 10000:
        return f"{v / 1e6:.2f}M" if abs(v) >= 1e6 else f"{v / 1e3:.0f}k"
    return _fmt(float(v), digits) if isinstance(v, float) else str(v)


def build_leaderboard(cfg) -> tuple[str, str, list[dict]]:
    files = expand_inputs(cfg.inputs)
    rows, refs = leaderboard_rows(files, cfg.scale)
    caption = (f"**{cfg.title}** — scale: **{cfg.scale}**, {len(rows)} evaluations. "
               + ("Toy-scale numbers on the toy digits with the digits feature CNN: comparable with each other "
                  "(same FD reference), NOT with the papers' numbers." if cfg.scale != "paper" else
                  "Paper-scale numbers."))
    md = [caption, "", "| " + " | ".join(LEADERBOARD_COLUMNS) + " |", "|" + "---|" * 5 + "---:|" * 8]
    md += ["| " + " | ".join(_cell(r[c], cfg.digits) for c in LEADERBOARD_COLUMNS) + " |" for r in rows]
    md += ["", "Columns: `nfe` network evaluations per image (guidance counts twice); `fd` Frechet distance "
           "(lower is better) to the reference named in `fd_reference`; `prompt_accuracy` fraction of images "
           "classified as the digit and colour asked for (higher is better); `seconds_per_image` sampling time "
           "on the machine that ran it; `train_steps` optimizer steps of the model sampled; – = not recorded by "
           "that project's steps.", "", "FD references (only FDs with the same label are comparable):"]
    md += [f"- {label}: reference `{ref}`, extractor `{ext}`" for (ref, ext), label in refs.items()]
    md += ["", "Sources: " + ", ".join(f"`{f}`" for f in files), ""]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*LEADERBOARD_COLUMNS, "source"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return "\n".join(md), buf.getvalue(), rows


def leaderboard_plot(rows: list[dict], out_png: Path, title: str) -> Path | None:
    """FD against NFE, one point per method (of the largest FD reference group); None if nothing to draw."""
    from shared import plots

    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["fd"] is not None and (r["nfe"] or r["steps"]):
            groups.setdefault(r["fd_reference"], []).append(r)
    if not groups:
        return None
    label, chosen = max(groups.items(), key=lambda kv: len(kv[1]))
    points = [{"label": f"{r['method']} ({r['steps']} steps)" if r["steps"] else r["method"],
               "x": r["nfe"] or r["steps"], "y": r["fd"], "group": r["project"]} for r in chosen]
    return plots.scatter(points, out_png, xlabel="NFE (network evaluations per image; steps where not recorded)",
                         ylabel=f"FD to reference {label}", better="lower", logx=True, title=title)


def main(cfg=None):
    cfg = resolve(Config, cfg)
    if cfg.kind not in ("table", "leaderboard"):
        raise ValueError(f"kind={cfg.kind!r}: use table or leaderboard")
    if cfg.kind == "leaderboard":
        md, table_csv, rows = build_leaderboard(cfg)
        out_md = Path(cfg.out_md or Path("results") / cfg.scale / "leaderboard" / "leaderboard.md")
        out_csv = Path(cfg.out_csv or out_md.with_suffix(".csv"))
        write_text(out_md, md)
        write_text(out_csv, table_csv)
        write_text(out_md.with_suffix(".html"), markdown_to_html(md))
        png = leaderboard_plot(rows, Path(cfg.out_png or out_md.with_name(f"{out_md.stem}_fd_vs_nfe.png")),
                               f"{cfg.title} ({cfg.scale} scale)")
        save_resolved(cfg, out_md.parent, name=f"{out_md.stem}.config.yaml")
        print(f"wrote {out_md}, {out_csv}" + (f", {png}" if png else ""))
        return md
    md, table_csv = build(cfg)
    out_md = Path(cfg.out_md or Path("results") / cfg.scale / "tables" / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', cfg.title)}.md")
    out_csv = Path(cfg.out_csv or out_md.with_suffix(".csv"))
    write_text(out_md, md)
    write_text(out_csv, table_csv)
    write_text(out_md.with_suffix(".html"), markdown_to_html(md))
    save_resolved(cfg, out_md.parent, name=f"{out_md.stem}.config.yaml")
    print(f"wrote {out_md}, {out_csv} and {out_md.with_suffix('.html')}")
    return md


if __name__ == "__main__":
    cli(main, Config, None, __doc__)
