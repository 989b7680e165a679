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
steps, NFE, FD, prompt accuracy, CLIP score, parameters, seconds per image (from the JSON's `info`, which
shared/evaluate.py's `info=` and shared/toy/sampler_compare.py fill), training steps and seconds (summed over the
training runs that made the method: shared/leaderboard.py), plus an FD-vs-NFE scatter (`out_png`). FDs against
different references are labelled, not refused.

Spread (issue 18): rows named `<name>_seed<N>` (experiment and checkpoint; seed 0 is the bare `<name>`) are one
row of several training seeds, shown as mean ± std over the seeds with a `seeds` column (`group_seeds`,
`group_seeds()` for other callers); an entry's bootstrap interval (shared/evaluate.py `bootstrap=`) is shown in a
`<metric> 95% CI` column (for several seeds: of their mean). `claims=[[a, b], ...]` adds, for each pair of rows and
each metric, whether their difference exceeds the spread (`judge_claims`), and `out_claims` writes those verdicts
as JSON. CSV: `<metric>_std`, `num_seeds`, `<metric>_ci_low`, `<metric>_ci_high` where they apply. The leaderboard
shows such a method once, as the mean over its seeds (`merge_seed_rows`).

    python shared/tables.py inputs=[t.json,s.json,s_seed1.json,s_seed2.json] claims=[[s,t]] out_claims=c.json

Plots the table calls for (`plots=[nfe]`, `[tokens]`, `[bars]`: shared/table_plots.py) are drawn from the same JSONs
beside `out_md`, as `<out_md stem>_<metric>_vs_nfe.png`, `..._vs_tokens.png`, `..._bars.png` (+ their CSVs).
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

import numpy as np
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from shared.config import cli, option, resolve, save_resolved
from shared.io import read_json, write_text
from shared.leaderboard import training_cost

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
    group_seeds: bool = option(True, help="rows named <name>_seed<N> (experiment and checkpoint) join the row <name> "
                                          "(seed 0) as one row: mean ± std over the seeds")
    claims: Any = option(None, help="[[a, b], ...]: for each pair of rows (experiment names, without seed suffix) "
                                    "and each metric both have, whether the difference exceeds the spread")
    out_claims: str = option("", help="the claims' verdicts as JSON; '' = none")
    plots: list[str] = option(default_factory=list,
                              help="table: plots drawn from the same JSONs, beside out_md (shared/table_plots.py: "
                                   "nfe = student points vs teacher curves, tokens = rFID vs K, bars = one bar per row)")


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
    """rows {key: {metric: value}}, stds {key: {metric: std}}, column provenance {metric: {(reference_id,
    extractor_id): [files]}}, sample counts {metric: {n}}, entries {key: {metric: the JSON's entry}}."""
    rows: dict[tuple, dict[str, float]] = {}
    stds: dict[tuple, dict[str, float]] = {}
    entries: dict[tuple, dict[str, dict]] = {}
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
        rows[key], stds[key], entries[key], origin[key] = {}, {}, {}, f
        for e in d["metrics"]:
            m = e["metric"]
            rows[key][m] = e["value"]
            entries[key][m] = e
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
    return rows, stds, columns, samples, entries


# --- seeds and spread: rows of several training seeds, bootstrap intervals, claims ------------------------------
SEED_SUFFIX = re.compile(r"_seed(\d+)$")
LOWER_IS_BETTER = ("fd", "fid", "rfid", "kid")


def split_seed(name) -> tuple[str, int]:
    """'toy_sdxl_4step_seed2' -> ('toy_sdxl_4step', 2); a name without the suffix is seed 0."""
    m = SEED_SUFFIX.search(str(name))
    return (str(name)[:m.start()], int(m.group(1))) if m else (name, 0)


@dataclass
class Row:
    """One table row: a single evaluation, or the evaluations of one model trained with several seeds."""

    key: tuple  # ROW_KEYS values, seed suffix removed from experiment and checkpoint
    seeds: list[int]
    values: dict[str, float]  # the mean over the seeds
    stds: dict[str, float]  # over the seeds (ddof 1) where there are several; else the entry's own (KID subsets)
    ci: dict[str, tuple[float, float]]  # bootstrap interval over the samples; of the mean over the seeds
    se: dict[str, float]  # bootstrap standard error (of the mean over the seeds)
    seed_std: dict[str, float]  # std over the seeds only (empty for one seed)


def group_seeds(entries: dict[tuple, dict[str, dict]], enabled: bool = True) -> list[Row]:
    """Rows in order of first appearance; with `enabled`, rows whose experiment and checkpoint carry the same
    `_seed<N>` suffix are merged with the row of the bare names. For several seeds: the value is the mean, `±` the
    standard deviation over the seeds, the interval that of the mean: each bootstrap resample's values averaged
    over the seeds (every seed resampled with the same draws, shared/metrics/bootstrap.py), then the same
    bias-shifted percentiles."""
    from shared.metrics.bootstrap import summary

    groups: dict[tuple, dict[int, dict[str, dict]]] = {}
    for key, by_metric in entries.items():
        exp, seed = split_seed(key[0]) if enabled else (key[0], 0)
        ckpt, ckpt_seed = split_seed(key[1]) if enabled else (key[1], 0)
        if ckpt_seed not in (0, seed):
            raise TableError(f"row {dict(zip(ROW_KEYS, key))}: experiment and checkpoint name different seeds")
        if ckpt_seed == 0 and seed:
            ckpt = key[1]  # only the experiment carries the seed
        group = groups.setdefault((exp, ckpt, *key[2:]), {})
        if seed in group:
            raise TableError(f"row {dict(zip(ROW_KEYS, key))}: seed {seed} of '{exp}' appears twice")
        group[seed] = by_metric
    out = []
    for key, by_seed in groups.items():
        seeds = sorted(by_seed)
        metrics = list(dict.fromkeys(m for s in seeds for m in by_seed[s]))
        row = Row(key, seeds, {}, {}, {}, {}, {})
        for m in metrics:
            have = [by_seed[s][m] for s in seeds if m in by_seed[s]]
            if len(have) != len(seeds):
                raise TableError(f"row '{key[0]}': metric '{m}' is missing for some of the seeds {seeds}")
            if len(have) == 1:
                e = have[0]
                row.values[m] = e["value"]
                if e.get("std") is not None:
                    row.stds[m] = e["std"]
                if e.get("ci") is not None:
                    row.ci[m] = tuple(e["ci"])
                if e.get("bootstrap_se") is not None:
                    row.se[m] = e["bootstrap_se"]
                continue
            v = np.array([e["value"] for e in have], np.float64)
            row.values[m] = float(v.mean())
            row.stds[m] = row.seed_std[m] = float(v.std(ddof=1))
            boots = [e.get("bootstrap_values") for e in have]
            if all(b is not None for b in boots) and len({len(b) for b in boots}) == 1:
                s = summary(row.values[m], np.mean(np.array(boots, np.float64), axis=0),
                            seed=have[0].get("bootstrap_seed", 0), level=have[0].get("ci_level", 0.95))
                row.ci[m], row.se[m] = tuple(s["ci"]), s["bootstrap_se"]
        out.append(row)
    return out


def _spread(row: Row, m: str) -> float | None:
    """The row's standard deviation for a claim: training seeds and samples, sqrt(seed_std^2 + bootstrap_se^2)
    (an entry without either has none)."""
    if m not in row.seed_std and m not in row.se:
        return None
    return float(np.hypot(row.seed_std.get(m, 0.0), row.se.get(m, 0.0)))


def judge_claims(rows: list[Row], claims, metrics: list[str]) -> list[dict]:
    """For each [a, b] and each metric both rows have: the difference of their values and whether it exceeds the
    spread, |a - b| > 2 sqrt(s_a^2 + s_b^2) with s = `_spread` (about a 95% two-sided test, with the std over
    seeds of one run, not of their mean: a claim about a single training run, which errs on the cautious side)."""
    by_name: dict[str, list[Row]] = {}
    for r in rows:
        by_name.setdefault(str(r.key[0]), []).append(r)
    verdicts = []
    for pair in _plain(claims) or []:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TableError(f"claims: each claim is a pair of row names [a, b], got {pair!r}")
        found = []
        for name in pair:
            match = by_name.get(str(name), [])
            if len(match) != 1:
                raise TableError(f"claims: row '{name}' " + (f"appears {len(match)} times (several checkpoints, "
                                 f"samplers or steps)" if match else f"is not in the table ({', '.join(by_name)})"))
            found.append(match[0])
        a, b = found
        both = [m for m in metrics if m in a.values and m in b.values]
        # the metrics with a measured spread; where none has one, every metric, each saying so
        spread = [m for m in both if _spread(a, m) is not None or _spread(b, m) is not None]
        for m in spread or both:
            diff = a.values[m] - b.values[m]
            sa, sb = _spread(a, m), _spread(b, m)
            two_sigma = None if sa is None and sb is None else 2 * float(np.hypot(sa or 0.0, sb or 0.0))
            lower = m in LOWER_IS_BETTER
            better = None if diff == 0 else (pair[0] if (diff < 0) == lower else pair[1])
            verdicts.append({"a": str(pair[0]), "b": str(pair[1]), "metric": m, "a_value": a.values[m],
                             "b_value": b.values[m], "a_seeds": len(a.seeds), "b_seeds": len(b.seeds),
                             "difference": diff, "two_sigma": two_sigma, "better": better,
                             "lower_is_better": lower,
                             "exceeds_spread": None if two_sigma is None else bool(abs(diff) > two_sigma)})
    return verdicts


def claim_line(v: dict, digits: int) -> str:
    a, b, m = v["a"], v["b"], v["metric"]
    seeds = lambda n: f" ({n} seeds)" if n > 1 else ""
    head = (f"`{a}`{seeds(v['a_seeds'])} vs `{b}`{seeds(v['b_seeds'])}, {m}: {_fmt(v['a_value'], digits)} vs "
            f"{_fmt(v['b_value'], digits)} (difference {v['difference']:+.{digits}g}; "
            f"{'lower' if v['lower_is_better'] else 'higher'} is better"
            + (f", `{v['better']}` is better" if v["better"] else "") + ")")
    if v["exceeds_spread"] is None:
        return f"{head}: no spread measured (no seeds, no bootstrap)"
    return (f"{head}; spread 2σ = {_fmt(v['two_sigma'], 2)}: the difference "
            + ("**exceeds** the spread" if v["exceeds_spread"] else "does **not** exceed the spread"))


def _fmt(v, digits: int) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"


def build(cfg) -> tuple[str, str]:
    md, table_csv, _ = build_with_claims(cfg)
    return md, table_csv


def build_with_claims(cfg) -> tuple[str, str, list[dict]]:
    files = expand_inputs(cfg.inputs)
    paper = load_paper(cfg.paper)
    _, _, columns, samples, entries = collect(files, cfg.scale)
    rows = group_seeds(entries, cfg.group_seeds)
    metrics = list(cfg.metrics) or list(columns)
    metrics += [m for ms in paper.values() for m in ms if m not in metrics and not cfg.metrics]
    metrics = list(dict.fromkeys(metrics))
    with_ci = [m for m in metrics if any(m in r.ci for r in rows)]
    seeded = any(r.seeds != [0] for r in rows)
    header: list[tuple[str, str, str]] = []  # (label, metric, kind: value | paper | ci)
    for m in metrics:
        header.append((m, m, "value"))
        if m in with_ci:
            header.append((f"{m} 95% CI", m, "ci"))
        if any(m in ms for ms in paper.values()):
            header.append((f"{m} (paper)", m, "paper"))

    def value(row, metric, kind):
        return paper.get(row.key[0], {}).get(metric) if kind == "paper" else row.values.get(metric)

    def cell(row, metric, kind):
        if kind == "ci":
            ci = row.ci.get(metric)
            return "–" if ci is None else f"[{_fmt(ci[0], cfg.digits)}, {_fmt(ci[1], cfg.digits)}]"
        text = _fmt(value(row, metric, kind), cfg.digits)
        std = None if kind == "paper" else row.stds.get(metric)
        return text if std is None else f"{text} ± {_fmt(std, 2)}"

    with_std = [m for m in metrics if any(m in r.stds for r in rows)]
    toy = cfg.scale != "paper"
    caption = (f"**{cfg.title}** — scale: **{cfg.scale}**. " + (
        "Toy-scale numbers (small data, small models, toy feature extractor); they are NOT reproductions of "
        "the paper's numbers, which are shown only for orientation." if toy else
        "Paper-scale numbers, computed with the same protocol as the paper where stated."))
    keys = [*ROW_KEYS, *(["seeds"] if seeded else [])]
    md = [caption, "", "| " + " | ".join([*keys, *(h[0] for h in header)]) + " |",
          "|" + "---|" * len(keys) + "---:|" * len(header)]
    for row in rows:
        md.append("| " + " | ".join([*(str(k) for k in row.key), *([" ".join(map(str, row.seeds))] if seeded else []),
                                      *(cell(row, m, p) for _, m, p in header)]) + " |")
    md += ["", "Columns:"]
    for m in metrics:
        if m in columns:
            (ref, ext), = columns[m]
            n = sorted(samples[m])
            ref = f"`{ref}`" if ref else "none (scored against the prompts/classes)"
            md.append(f"- `{m}`: extractor `{ext}`, reference {ref}, samples "
                      f"{n[0] if len(n) == 1 else f'{n[0]}–{n[-1]}'}")
        if m in with_ci:
            e = next(e[m] for e in entries.values() if m in e and "ci" in e[m])
            md.append(f"- `{m} 95% CI`: bootstrap over the generated samples ({e.get('bootstrap_resamples')} "
                      f"resamples, seed {e.get('bootstrap_seed')}, shared/metrics/bootstrap.py): the spread of the "
                      f"number at this sample count"
                      + ("; for a row of several seeds, of their mean" if seeded else ""))
        if any(m in ms for ms in paper.values()):
            md.append(f"- `{m} (paper)`: number reported in the paper (by experiment)")
    if seeded:
        md.append("- `seeds`: the training seeds a row's numbers come from; on a row of several seeds the value is "
                  "their mean and `±` the standard deviation over them (ddof 1)")
    verdicts = judge_claims(rows, cfg.claims, [m for m in metrics if m in columns])
    if verdicts:
        md += ["", "Claims (a difference exceeds the spread when |a - b| > 2 sqrt(s_a² + s_b²), s = "
               "sqrt(std over seeds² + bootstrap standard error²)):",
               *(f"- {claim_line(v, cfg.digits)}" for v in verdicts)]
    notes = _plain(cfg.notes)
    notes = [notes] if isinstance(notes, str) else list(notes or [])
    if notes:
        md += ["", "Notes:", *(f"- {n}" for n in notes)]
    md += ["", "Sources: " + ", ".join(f"`{f}`" for f in files), ""]

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*ROW_KEYS, "scale", *(f"{m}_paper" if p == "paper" else m for _, m, p in header if p != "ci"),
                *(f"{m}_std" for m in with_std), *(["num_seeds"] if seeded else []),
                *(f"{m}_ci_{side}" for m in with_ci for side in ("low", "high"))])
    for row in rows:
        num = ([value(row, m, p) for _, m, p in header if p != "ci"] + [row.stds.get(m) for m in with_std]
               + ([len(row.seeds)] if seeded else [])
               + [row.ci[m][i] if m in row.ci else None for m in with_ci for i in (0, 1)])
        w.writerow([*row.key, cfg.scale, *("" if v is None else repr(v) if isinstance(v, int) else repr(float(v))
                                           for v in num)])
    return "\n".join(md), buf.getvalue(), verdicts


# --- the leaderboard: every method of every project in one table ------------------------------------------------
LEADERBOARD_COLUMNS = ("method", "paper", "project", "sampler", "steps", "nfe", "fd", "prompt_accuracy",
                       "clip_score", "parameters", "seconds_per_image", "train_steps", "train_seconds", "fd_reference")
# Columns a step may record under "info" in its evaluation JSON (shared/evaluate.py `info=` and the sample steps'
# samples.json, compare.py).
INFO_KEYS = ("method", "paper", "project", "nfe", "parameters", "seconds_per_image", "train_steps")
NOT_A_MODEL = "n/a"  # parameters / seconds of a row that sampled no model (checkpoint none, sampler none)


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
        # training cost: summed over the training runs that made the method (shared/leaderboard.py follows the
        # steps' recorded options from the evaluation back to them: a DMD2 student and its teacher, ...)
        cost = training_cost(f)
        row = {"method": info.get("method") or d["experiment"], "paper": info.get("paper", ""), "project": project,
               "sampler": d["sampler"], "steps": d["steps"], "nfe": info.get("nfe"),
               "fd": fd["value"] if fd else None,
               "prompt_accuracy": metrics["prompt_accuracy"]["value"] if "prompt_accuracy" in metrics else None,
               "clip_score": metrics["clip_score"]["value"] if "clip_score" in metrics else None,
               "parameters": info.get("parameters"), "seconds_per_image": info.get("seconds_per_image"),
               "train_steps": cost.steps if cost.runs else info.get("train_steps"),
               "train_seconds": round(cost.seconds, 1) if cost.runs else None, "fd_reference": label,
               "source": str(f), "train_runs": ";".join(r.run_dir for r in cost.runs)}
        if d["checkpoint"] == "none" and d["sampler"] == "none":  # real vs real, or a win rate: no model sampled
            row.update({k: row[k] if row[k] is not None else NOT_A_MODEL
                        for k in ("parameters", "seconds_per_image", "train_steps", "train_seconds")})
        rows.append(row)
    rows = merge_seed_rows(rows)
    rows.sort(key=lambda r: (r["fd_reference"], r["fd"] if r["fd"] is not None else float("inf")))
    return rows, refs


def merge_seed_rows(rows: list[dict]) -> list[dict]:
    """Leaderboard rows of one method trained with several seeds (`<method>_seed<N>`, seed 0 bare) as one row:
    the mean of the numbers, the method named '<method> (mean of k seeds)'."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (split_seed(r["method"])[0], r["paper"], r["project"], r["sampler"], r["steps"], r["fd_reference"])
        groups.setdefault(key, []).append(r)
    out = []
    for key, group in groups.items():
        if len(group) == 1 or not any(SEED_SUFFIX.search(str(r["method"])) for r in group):
            out += group
            continue
        merged = dict(min(group, key=lambda r: split_seed(r["method"])[1]))
        for c in ("fd", "prompt_accuracy", "clip_score", "seconds_per_image", "train_steps", "train_seconds"):
            vals = [r[c] for r in group if r[c] is not None]
            merged[c] = float(np.mean(vals)) if len(vals) == len(group) else merged[c]
        merged["method"] = f"{key[0]} (mean of {len(group)} seeds)"
        merged["source"] = ";".join(r["source"] for r in group)
        merged["train_runs"] = ";".join(dict.fromkeys(run for r in group for run in r["train_runs"].split(";") if run))
        out.append(merged)
    return out


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
    md = [caption, "", "| " + " | ".join(LEADERBOARD_COLUMNS) + " |", "|" + "---|" * 5 + "---:|" * 9]
    md += ["| " + " | ".join(_cell(r[c], cfg.digits) for c in LEADERBOARD_COLUMNS) + " |" for r in rows]
    md += ["", "Columns: `nfe` network evaluations per image (guidance counts twice); `fd` Frechet distance "
           "(lower is better) to the reference named in `fd_reference`; `prompt_accuracy` fraction of images "
           "classified as the digit and colour asked for (higher is better); `parameters` of the network sampled "
           "(the UNet / generator / transformer; the tokenizer's for reconstructions; not text encoders or VAEs); "
           "`seconds_per_image` sampling time (tokenizers: encode + decode) on the machine that ran it, as the sample "
           "step measured it; `train_steps` optimizer steps and `train_seconds` wall-clock seconds of training on the "
           "machine that ran it, summed over the training runs that made the method (e.g. teacher + student; the "
           "runs are in the CSV's `train_runs`); n/a = no model sampled by that "
           "evaluation (real images against real images, win rates of two sample sets); "
           "– = not recorded by that project's steps.", "",
           "FD references (only FDs with the same label are comparable):"]
    md += [f"- {label}: reference `{ref}`, extractor `{ext}`" for (ref, ext), label in refs.items()]
    md += ["", "Sources: " + ", ".join(f"`{f}`" for f in files), ""]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*LEADERBOARD_COLUMNS, "source", "train_runs"], lineterminator="\n")
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
    md, table_csv, verdicts = build_with_claims(cfg)
    out_md = Path(cfg.out_md or Path("results") / cfg.scale / "tables" / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', cfg.title)}.md")
    out_csv = Path(cfg.out_csv or out_md.with_suffix(".csv"))
    write_text(out_md, md)
    write_text(out_csv, table_csv)
    write_text(out_md.with_suffix(".html"), markdown_to_html(md))
    if cfg.out_claims:
        write_text(Path(cfg.out_claims), json.dumps(verdicts, indent=1) + "\n")
    if cfg.plots:
        from shared import table_plots

        for png in table_plots.draw(list(cfg.plots), [read_json(f) for f in expand_inputs(cfg.inputs)], out_md,
                                    f"{cfg.title} ({cfg.scale} scale)"):
            print(f"wrote {png} and {png.with_suffix('.csv')}")
    save_resolved(cfg, out_md.parent, name=f"{out_md.stem}.config.yaml")
    print(f"wrote {out_md}, {out_csv} and {out_md.with_suffix('.html')}"
          + (f", {cfg.out_claims}" if cfg.out_claims else ""))
    return md


if __name__ == "__main__":
    cli(main, Config, None, __doc__)
