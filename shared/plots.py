"""Plots written by the steps that own the data: a PNG and, beside it, the CSV of exactly what is drawn.

Four functions cover every plot of the workflow; each returns the PNG path and writes `<name>.csv` next to it
(long format, one row per point), so a reader can re-plot or check a number without parsing the image.
Matplotlib runs headless (Agg). Say on the axis what is better: `better="lower"` appends "(lower is better)" to
the y label, `better="higher"` "(higher is better)"; give units in the labels ("seconds per image", "NFE").

    from shared import plots

    # lines: {series label: [(x, y), ...]}   e.g. FD against NFE, one line per sampler
    plots.lines({"ddim": [(5, 3.1), (10, 1.2)], "dpm++": [(5, 1.9), (10, 0.8)]}, "out/fd_vs_nfe.png",
                xlabel="NFE (network evaluations per image)", ylabel="FD (digits features)", better="lower",
                title="Quality vs NFE", logx=True, reference={"ddpm x250": 0.6})

    # points: [{"label", "x", "y", "group"?}]   e.g. one point per method on the leaderboard
    plots.scatter([{"label": "DMD2 1-step", "x": 1, "y": 0.9, "group": "dmd2"}], "out/leaderboard.png",
                  xlabel="NFE", ylabel="FD", better="lower", logx=True)

    # bars: {label: value}   e.g. FD per RAR order mode (+ optional errors={label: std})
    plots.bars({"raster": 2.1, "random": 2.6, "annealed": 1.9}, "out/fd_per_order.png", ylabel="FD", better="lower")

    # training curves from a run's metrics.jsonl (shared.train's StepLogger): one panel per logged quantity
    plots.training_curves("runs/x/metrics.jsonl", "runs/x/curves.png", title="digits diffusion")
    plots.training_curves({"teacher": "a/metrics.jsonl", "student": "b/metrics.jsonl"}, "curves.png")

    python -m shared.plots runs/x/metrics.jsonl [more.jsonl ...] out=curves.png title="my run"   # the same, CLI

    # image_grid: sample images tiled `cols` per row (validation grids of the training steps; no labels, no CSV)
    plots.image_grid(uint8_array_nhw3_or_pil_list, cols=4, pad=2).save("grid.png")

For the projects: call these from the step that writes the numbers (the evaluate/compare/table step), put the PNG
beside its table, and wrap it in the rule's outputs with `report(...)` (see workflow/report/README.md) to have it
in `snakemake --report`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from shared.io import atomic_path, write_text

BETTER = {"lower": " (lower is better)", "higher": " (higher is better)", None: "", "": ""}
# Metrics rows that are not curves: bookkeeping of the logger, or constant per run.
_NOT_CURVES = {"step", "time", "epoch"}
# How a StepLogger key reads on an axis, and which way is better.
CURVE_LABELS = {
    "loss": ("training loss", "lower"),
    "lr": ("learning rate", None),
    "grad_norm": ("gradient norm (before clipping)", None),
    "skipped_steps": ("skipped updates (non-finite, cumulative)", "lower"),
    "loss_scale": ("fp16 loss scale", None),
    "steps_per_sec": ("optimizer steps per second", "higher"),
}


# Training curves: series of at most this many points get markers; a loss spanning at least this ratio (a decade)
# gets a log y axis.
MARKERS_UP_TO = 30
LOG_SCALE_RATIO = 10.0


def _is_loss(key: str) -> bool:
    return "loss" in key and key != "loss_scale"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ylabel(label: str, better: str | None) -> str:
    if better not in BETTER:
        raise ValueError(f"better={better!r}: use 'lower', 'higher' or None")
    return label + BETTER[better]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _save(fig, out_png: Path, rows: list[dict], columns: Sequence[str]) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_png.with_suffix(".csv"), buf.getvalue())
    return out_png


def lines(series: Mapping[str, Iterable[tuple[float, float]]], out_png: str | Path, *, xlabel: str, ylabel: str,
          better: str | None = None, title: str = "", logx: bool = False, logy: bool = False,
          reference: Mapping[str, float] | None = None) -> Path:
    """One line (with markers) per series; `reference` draws labelled horizontal lines (e.g. a many-step
    baseline). CSV columns: series, x, y."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = []
    for name, points in series.items():
        pts = sorted((float(x), float(y)) for x, y in points if _finite(x) and _finite(y))
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=str(name))
        rows += [{"series": name, "x": x, "y": y} for x, y in pts]
    for name, y in (reference or {}).items():
        if _finite(y):
            ax.axhline(float(y), linestyle="--", color="grey", linewidth=1)
            ax.annotate(str(name), xy=(0.99, float(y)), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=8, color="dimgrey")
            rows.append({"series": f"reference: {name}", "x": "", "y": float(y)})
    if not rows:
        raise ValueError(f"{out_png}: nothing to plot (no finite points)")
    _axes(ax, xlabel, _ylabel(ylabel, better), title, logx, logy, [r["x"] for r in rows if r["x"] != ""])
    ax.legend(fontsize=8)
    return _save(fig, Path(out_png), rows, ("series", "x", "y"))


def scatter(points: Sequence[Mapping[str, Any]], out_png: str | Path, *, xlabel: str, ylabel: str,
            better: str | None = None, title: str = "", logx: bool = False, logy: bool = False) -> Path:
    """Labelled points, coloured by `group`. CSV columns: label, group, x, y."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.8))
    rows = [{"label": p["label"], "group": p.get("group", ""), "x": float(p["x"]), "y": float(p["y"])}
            for p in points if _finite(p.get("x")) and _finite(p.get("y"))]
    if not rows:
        raise ValueError(f"{out_png}: nothing to plot (no point with finite x and y)")
    groups = list(dict.fromkeys(r["group"] for r in rows))
    for g in groups:
        mine = [r for r in rows if r["group"] == g]
        ax.scatter([r["x"] for r in mine], [r["y"] for r in mine], label=g or None, s=30)
    for r in rows:
        ax.annotate(r["label"], (r["x"], r["y"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    _axes(ax, xlabel, _ylabel(ylabel, better), title, logx, logy, [r["x"] for r in rows])
    if any(groups):
        ax.legend(fontsize=8)
    return _save(fig, Path(out_png), rows, ("label", "group", "x", "y"))


def bars(values: Mapping[str, float], out_png: str | Path, *, ylabel: str, better: str | None = None,
         title: str = "", errors: Mapping[str, float] | None = None, xlabel: str = "") -> Path:
    """One bar per label, in the given order, its value written on it; `errors` draws +-error whiskers (e.g. the
    std over seeds). CSV columns: label, value, error."""
    plt = _pyplot()
    rows = [{"label": str(k), "value": float(v), "error": float((errors or {}).get(k, "nan"))}
            for k, v in values.items() if _finite(v)]
    if not rows:
        raise ValueError(f"{out_png}: nothing to plot (no finite value)")
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(rows) + 1.5), 4.2))
    err = [r["error"] if math.isfinite(r["error"]) else 0.0 for r in rows]
    drawn = ax.bar(range(len(rows)), [r["value"] for r in rows], yerr=err if any(err) else None, capsize=4,
                   color="tab:blue", alpha=0.8)
    ax.bar_label(drawn, labels=[f"{r['value']:.3g}" for r in rows], fontsize=8, padding=2)
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_ylabel(ylabel, better))
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    for r in rows:
        r["error"] = "" if not math.isfinite(r["error"]) else r["error"]
    return _save(fig, Path(out_png), rows, ("label", "value", "error"))


def _axes(ax, xlabel, ylabel, title, logx, logy, xs=()) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if logx:
        ax.set_xscale("log")
        ticks = sorted(set(xs))
        if 0 < len(ticks) <= 12:  # NFE-like axes: label the values that occur, as plain numbers
            ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl; a line cut short (a killed run) is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def training_curves(runs: str | Path | Mapping[str, str | Path], out_png: str | Path, *, title: str = "",
                    keys: Sequence[str] | None = None) -> Path:
    """One panel per logged quantity (loss terms, lr, grad norm, skipped updates, EMA/loss-scale...) against the
    optimizer step, one line per run. `keys`: the quantities to draw (default: every numeric key that changes in
    some run, except time). CSV columns: run, key, step, value."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    if isinstance(runs, (str, Path)):
        runs = {Path(runs).parent.name or "run": runs}
    data = {name: read_metrics(path) for name, path in runs.items()}
    if keys is None:
        found: dict[str, set] = {}
        for rows in data.values():
            for r in rows:
                for k, v in r.items():
                    if k not in _NOT_CURVES and _finite(v):
                        found.setdefault(k, set()).add(v)
        # a quantity that changes is a curve; loss terms are drawn even when a tiny run logged them once
        keys = sorted((k for k, vs in found.items() if len(vs) > 1 or _is_loss(k)),
                      key=lambda k: ("loss" not in k or k == "loss_scale", list(CURVE_LABELS).index(k)
                                     if k in CURVE_LABELS else len(CURVE_LABELS), k))
    keys = list(keys)
    if not keys:
        raise ValueError(f"{out_png}: no numeric metrics to plot in {', '.join(str(p) for p in runs.values())}")
    cols = min(3, len(keys))
    nrows = -(-len(keys) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    out_rows = []
    for ax, key in zip(axes.flat, keys):
        label, better = CURVE_LABELS.get(key, (key, "lower" if "loss" in key else None))
        for name, rows in data.items():
            pts = [(r["step"], r[key]) for r in rows if _finite(r.get(key))]
            if pts:
                # a short run's few rows are points, not a line: markers show where the logged values are
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, linewidth=1.2,
                        marker="o" if len(pts) <= MARKERS_UP_TO else None, markersize=4)
                out_rows += [{"run": name, "key": key, "step": s, "value": v} for s, v in pts]
        if _is_loss(key):
            values = [r["value"] for r in out_rows if r["key"] == key]
            if values and min(values) > 0 and max(values) / min(values) >= LOG_SCALE_RATIO:
                ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        # steps are whole numbers: no ticks at 1.2, 1.4, ...; a short run's few steps are the ticks themselves
        steps = sorted({r["step"] for r in out_rows if r["key"] == key})
        if len(steps) <= 12:
            ax.set_xticks(steps)
            if len(steps) == 1:
                ax.set_xlim(steps[0] - 1, steps[0] + 1)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(_ylabel(label, better), fontsize=8)
        ax.grid(True, alpha=0.3)
        if len(data) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(out_png), out_rows, ("run", "key", "step", "value"))


def image_grid(images: Any, cols: int, pad: int = 0):
    """uint8 (N, H, W, 3) array or a list of same-size PIL images -> one PIL image, `cols` per row, `pad` black
    pixels around and between (a short last row is left black). For a grid with row/column labels see
    shared.toy.sampler_compare.draw_grid."""
    import numpy as np
    from PIL import Image

    arr = np.stack([np.asarray(im.convert("RGB")) for im in images]) if isinstance(images, (list, tuple)) \
        else np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0 or cols < 1:
        raise ValueError(f"image_grid: expected uint8 (N, H, W, 3) with N >= 1 and cols >= 1, got {arr.dtype} "
                         f"{arr.shape}, cols={cols}")
    n, h, w, _ = arr.shape
    rows = -(-n // cols)
    canvas = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.uint8)
    for i, im in enumerate(arr):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = im
    return Image.fromarray(canvas)


def main(argv: Sequence[str] | None = None) -> Path:
    """CLI: `python -m shared.plots a/metrics.jsonl [b/metrics.jsonl ...] out=curves.png [title=...]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    inputs = [a for a in argv if "=" not in a]
    unknown = set(opts) - {"out", "title"}
    if unknown or "out" not in opts or not inputs:
        raise SystemExit(f"usage: python -m shared.plots METRICS.jsonl [...] out=PNG [title=TEXT]"
                         + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
    runs = {Path(p).parent.name or p: p for p in inputs}
    out = training_curves(runs, opts["out"], title=opts.get("title", ""))
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return out


if __name__ == "__main__":
    main()
