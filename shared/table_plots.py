"""The plots a table calls for, drawn by the table step (shared/tables.py `plots=[...]`) from the same evaluation
JSONs it tabulates, with shared.plots (PNG + the CSV of its points, units on the axes, which way is better).

    python shared/tables.py inputs=[...] out_md=results/toy/tables/dmd2_sdxl.md plots=[nfe]
        -> dmd2_sdxl_fd_vs_nfe.png, dmd2_sdxl_prompt_accuracy_vs_nfe.png (+ .csv)   (DMD2 student vs teacher)
    python shared/tables.py inputs=[...] out_md=results/toy/tables/titok_tokens.md plots=[tokens]
        -> titok_tokens_rfid_vs_tokens.png, titok_tokens_psnr_vs_tokens.png        (TiTok: quality vs K)
    python shared/tables.py inputs=[...] out_md=results/toy/tables/titok_rar_gen_rar_order.md plots=[bars]
        -> titok_rar_gen_rar_order_fd_bars.png, ..._prompt_accuracy_bars.png         (RAR order ablation)

TABLE_PLOTS maps each name to a function (evaluations, out_stem, title) -> [PNG paths]; an evaluation is the
JSON of shared/evaluate.py (rows, metrics, info). Rows of several training seeds (`<name>_seed<N>`) are one point
at their mean, as the table shows them (shared.tables.group_seeds); bars carry the std over seeds as whiskers.
A plot whose metric no row has is not drawn (a table without prompt accuracy gets no accuracy plot).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from shared import plots

# how a metric reads on an axis, and which way is better
METRIC_AXES = {
    "fd": ("FD to the reference (digits features)", "lower"),
    "fid": ("FID (Inception features)", "lower"),
    "rfid": ("rFID: reconstructions vs originals (FD)", "lower"),
    "prompt_accuracy": ("prompt accuracy (fraction of images of the asked digit and colour)", "higher"),
    "psnr": ("PSNR of the reconstructions (dB)", "higher"),
    "precision": ("precision (k=3 manifold of the reference)", "higher"),
    "recall": ("recall (k=3 manifold of the samples)", "higher"),
}


def _rows(evaluations: list[dict]):
    """(Row, evaluation of its first seed) per table row, seeds merged as in the table."""
    from shared.tables import ROW_KEYS, group_seeds, split_seed

    entries, first = {}, {}
    for d in evaluations:
        key = tuple(d[k] for k in ROW_KEYS)
        entries[key] = {e["metric"]: e for e in d["metrics"]}
        first.setdefault((split_seed(d["experiment"])[0], d["sampler"], d["steps"]), d)
    rows = group_seeds(entries)
    return [(r, first[(r.key[0], r.key[2], r.key[3])]) for r in rows]


def _nfe(row, d) -> float:
    """The row's NFE as the sample step counted it (samples.json via shared/evaluate.py), else its steps."""
    nfe = (d.get("info") or {}).get("nfe")
    return float(nfe) if nfe else float(row.key[3])


def _axis(metric: str) -> tuple[str, str | None]:
    return METRIC_AXES.get(metric, (metric, None))


def quality_vs_nfe(evaluations: list[dict], out_stem: Path, title: str) -> list[Path]:
    """DMD2 student vs teacher: the teacher's rows (any sampler but `dmd2`) as one curve per sampler over NFE,
    every distilled generator (sampler `dmd2`) as its own point; FD and prompt accuracy, one PNG each."""
    rows = _rows(evaluations)
    out = []
    for metric in ("fd", "fid", "prompt_accuracy"):
        series: dict[str, list[tuple[float, float]]] = {}
        for row, d in rows:
            if metric not in row.values:
                continue
            name = f"DMD2 {row.key[0]}" if row.key[2] == "dmd2" else f"teacher, {row.key[2]}"
            series.setdefault(name, []).append((_nfe(row, d), row.values[metric]))
        if not series:
            continue
        label, better = _axis(metric)
        out.append(plots.lines(series, out_stem.with_name(f"{out_stem.name}_{metric}_vs_nfe.png"),
                               xlabel="NFE (network evaluations per image; guidance counts twice)", ylabel=label,
                               better=better, title=f"{title}: student points, teacher curves", logx=True))
    return out


def quality_vs_tokens(evaluations: list[dict], out_stem: Path, title: str) -> list[Path]:
    """TiTok: rFID (and PSNR) against the number of latent tokens K (the `tokens_per_image` entry)."""
    rows = [(r, d) for r, d in _rows(evaluations) if "tokens_per_image" in r.values]
    out = []
    for metric in ("rfid", "psnr"):
        pts = [(row.values["tokens_per_image"], row.values[metric]) for row, _ in rows if metric in row.values]
        if not pts:
            continue
        label, better = _axis(metric)
        out.append(plots.lines({"TiTok": pts}, out_stem.with_name(f"{out_stem.name}_{metric}_vs_tokens.png"),
                               xlabel="K, latent tokens per image", ylabel=label, better=better, title=title,
                               logx=True))
    return out


def quality_bars(evaluations: list[dict], out_stem: Path, title: str) -> list[Path]:
    """One bar per row (e.g. the RAR order modes), for FD and prompt accuracy; whiskers: std over seeds."""
    rows = _rows(evaluations)
    out = []
    for metric in ("fd", "fid", "prompt_accuracy"):
        have = [row for row, _ in rows if metric in row.values]
        if not have:
            continue
        names = [row.key[0] for row in have]
        if len(set(names)) < len(names):  # the same experiment under several samplers/steps: say which
            names = [f"{row.key[0]} ({row.key[2]}, {row.key[3]})" for row in have]
        label, better = _axis(metric)
        out.append(plots.bars({n: row.values[metric] for n, row in zip(names, have)},
                              out_stem.with_name(f"{out_stem.name}_{metric}_bars.png"), ylabel=label,
                              better=better, title=title,
                              errors={n: row.seed_std[metric] for n, row in zip(names, have)
                                      if metric in row.seed_std}))
    return out


TABLE_PLOTS: dict[str, Callable[[list[dict], Path, str], list[Path]]] = {
    "nfe": quality_vs_nfe,
    "tokens": quality_vs_tokens,
    "bars": quality_bars,
}


def draw(names, evaluations: list[dict], out_md: Path, title: str) -> list[Path]:
    """The plots `names` of a table written to `out_md`: PNGs `<out_md stem>_<metric>_<kind>.png` beside it."""
    unknown = [n for n in names if n not in TABLE_PLOTS]
    if unknown:
        raise ValueError(f"plots: unknown {unknown}; known: {', '.join(TABLE_PLOTS)}")
    stem = Path(out_md).with_suffix("")
    return [p for n in names for p in TABLE_PLOTS[n](evaluations, stem, title)]
