"""README numbers are generated, not copied: the results sections of README.md and projects/*/README.md.

For each README in `READMES` (the default target's in README.md, one per project), the workflow's result tables
(`results/<scale>/tables/*.csv`, the sampler comparison's CSVs, ...) are copied into a committed folder beside the
project (`projects/<name>/results/<scale>/<table>.csv`, the default target's in `shared/toy/results/<scale>/`),
each with `<table>.provenance.json`: the commit and command of the step that wrote the table (from its run.json,
shared.config.provenance), the file it came from and its SHA-256; a table's claim verdicts (shared/tables.py's
`out_claims`, `<table>.claims.json` beside it) come along and are listed under it. The README's section between

    <!-- results:begin -->
    <!-- results:end -->

is then written from the committed CSVs alone, so anyone can check it against them (`mode=check`, what
tests/test_results_md.py does for every README). A table that was never collected says "not run yet at <scale>"
and names the target that writes it. Readings (what the numbers mean) stay hand-written outside the markers.

    python -m shared.results_md                                  # collect every table present, rewrite every section
    python -m shared.results_md readme=dmd2 scale=toy            # one README, one scale
    python -m shared.results_md readme=dmd2 tables=[dmd2_sdxl]   # one table; missing -> error naming the file
    python -m shared.results_md results_dir=/work/toyrun/results # tables from another checkout or --directory
    python -m shared.results_md mode=render                      # rewrite sections from the committed CSVs only
    python -m shared.results_md mode=check                       # exit 1 if a section differs from its CSVs

Collecting keeps a committed table whose source is absent (a target not re-run keeps its last numbers); naming
the table in `tables=` makes its absence an error. The Snakemake targets `readme_<target>` (e.g. `readme` for the
default target, `readme_eval_sdxl`) run the target's chain, then this (workflow/rules/results.smk).

Why in shared/: the default target and all four projects use it, and it reads what shared/tables.py writes.
Cells: `digits` significant digits as shared/tables.py's Markdown (values >= 10**digits as integers), integers as
integers, "–" for an empty cell, "v ± s" where a `<column>_std` column exists, `<m>_ci_low`/`_high` as one
"<m> 95% CI" column "[lo, hi]", `<m>_paper` headed "<m> (paper)" (as shared/tables.py's own Markdown).
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from shared.config import ConfigError, cli, option, provenance, resolve
from shared.io import write_bytes, write_json, write_text

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SCALES = ("toy", "paper")  # tiny numbers check plumbing only: never in a README
HIDDEN = ("checkpoint", "scale")  # in every shared/tables.py CSV; the row key says the same


class ResultsError(ConfigError):
    """A missing or malformed result file, or a README without its markers: the message names the file."""


@dataclass(frozen=True)
class Table:
    """One result table: `source` under `<results_dir>/<scale>/`, committed as `<folder>/<scale>/<name>.csv`."""
    name: str
    source: str
    title: str
    target: str  # the Snakemake target that writes it ("all" = the default target)
    scales: tuple[str, ...] = ("toy",)
    columns: tuple[str, ...] = ()  # shown, in order; () = all but HIDDEN and *_std, dropping all-empty ones
    labels: dict[str, str] = field(default_factory=dict)  # column -> header
    after: str = ""  # the declared workflow output whose rule writes `source` (a plot's CSV); "" = source itself


@dataclass(frozen=True)
class Readme:
    readme: str  # relative to the repository
    folder: str  # committed CSVs: <folder>/<scale>/
    tables: tuple[Table, ...]

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise ResultsError(f"tables: '{name}' is not a table of {self.readme}; expected one of "
                           f"{[t.name for t in self.tables]}")


def _tables(prefix: str, names, target: str, scales=("toy",), titles=None) -> tuple[Table, ...]:
    return tuple(Table(f"{prefix}{n}", f"tables/{prefix}{n}.csv", (titles or {}).get(n, n), target, scales)
                 for n in names)


_GUIDANCE = {"series": "sampler", "x": "guidance_scale"}
READMES: dict[str, Readme] = {
    "default": Readme("README.md", "shared/toy/results", (
        Table("digits", "tables/digits.csv", "Real test split vs train split: the floor of every FD", "all"),
        Table("sampler_compare", "sampler_compare/results.csv", "Samplers x steps on the digits diffusion model",
              "all"),
        Table("accuracy_vs_guidance", "sampler_compare/accuracy_vs_guidance.csv",
              "Guidance sweep: prompt accuracy", "all", labels={**_GUIDANCE, "y": "label_accuracy"},
              after="sampler_compare/accuracy_vs_guidance.png"),
        Table("fd_vs_guidance", "sampler_compare/fd_vs_guidance.csv", "Guidance sweep: FD", "all",
              labels={**_GUIDANCE, "y": "fd"}, after="sampler_compare/fd_vs_guidance.png"),
    )),
    "dmd2": Readme("projects/dmd2/README.md", "projects/dmd2/results", (
        Table("dmd2_imagenet64", "tables/dmd2_imagenet64.csv", "ImageNet-64 analogue", "eval_imagenet64",
              ("toy", "paper")),
        Table("dmd2_sdxl", "tables/dmd2_sdxl.csv", "SDXL analogue (4-step student)", "eval_sdxl", ("toy", "paper")),
        Table("dmd2_sd15", "tables/dmd2_sd15.csv", "SD1.5 analogue (1-step student)", "eval_sd15", ("toy", "paper")),
    )),
    "sd_flux_lab": Readme("projects/sd_flux_lab/README.md", "projects/sd_flux_lab/results", _tables(
        "sd_flux_lab_", ("subset", "rest"), "sd_flux_lab", ("toy", "paper"),
        {"subset": "Fine-tuned on blue: blue prompts", "rest": "Fine-tuned on blue: the other colours"})),
    "glide_finetune": Readme("projects/glide_finetune/README.md", "projects/glide_finetune/results", (
        *_tables("glide_", ("guidance", "finetune", "drift", "upsampler", "upsampler_heldout", "uncond", "clip"),
                 "glide",
                 titles={
            "guidance": "Guidance scale sweep", "finetune": "Fine-tune on magenta (a colour the base never saw)",
            "drift": "Fine-tune on magenta: drift on the base's colours",
            "upsampler": "Upsampler vs bicubic: the base's samples",
            "upsampler_heldout": "Upsampler vs bicubic: held-out test images",
            "uncond": "What classifier-free guidance needs",
            "clip": "Noised-CLIP guidance vs classifier-free guidance"}),
        *_tables("glide_", ("coco30k",), "glide", ("paper",), {"coco30k": "Zero-shot MS-COCO 30k"}),
        Table("glide_compare", "glide/compare/results.csv", "compare_samplers.py: samplers x steps in one process "
              "(wall time per image on 1 thread, FD with its 95% bootstrap interval, FD minus the first row's with the "
              "paired interval of that difference)", "glide",
              after="glide/compare/grid.png"),
    )),
    "titok_rar": Readme("projects/titok_rar/README.md", "projects/titok_rar/results", (
        *_tables("titok_", ("tokens", "stages", "quantizer", "vqgan", "tatitok"), "titok", titles={
            "tokens": "rFID vs number of tokens K", "stages": "Stage 1 only vs stage 1 + 2",
            "quantizer": "VQ vs VAE", "vqgan": "The VQGAN beside TiTok",
            "tatitok": "TA-TiTok (text-aware) vs single-stage VQ TiTok"}),
        *_tables("titok_", ("rfid",), "titok", ("paper",), {"rfid": "Released tokenizers, ImageNet val"}),
        *_tables("titok_rar_gen_", ("rar_order", "kv_cache", "cfg_sweep"), "eval_rar", titles={
            "rar_order": "RAR order ablation", "kv_cache": "KV cache", "cfg_sweep": "Guidance sweep"}),
        *_tables("titok_rar_gen_", ("rar_vs_maskgit",), "eval_maskgit", titles={"rar_vs_maskgit": "RAR vs MaskGIT"}),
        *_tables("titok_rar_gen_", ("maskgen",), "eval_maskgen", titles={"maskgen": "MaskGen text-to-image"}),
        *_tables("titok_rar_gen_", ("rar",), "eval_rar", ("paper",), {"rar": "Released RAR generators"}),
        *_tables("titok_rar_gen_", ("maskgit",), "eval_maskgit", ("paper",), {"maskgit": "Released MaskGIT"}),
    )),
}


@dataclass
class Config:
    readme: str = option("all", help="a key of READMES (default, dmd2, sd_flux_lab, glide_finetune, titok_rar) "
                                     "or all")
    scale: str = option("all", choices=("all", *SCALES), help="the scale to collect; all = toy and paper")
    tables: list[str] = option(default_factory=list, help="collect only these tables (each must exist); "
                                                          "empty = every table present")
    mode: str = option("collect", choices=("collect", "render", "check"),
                       help="collect: copy the tables, then render; render: rewrite the sections from the "
                            "committed CSVs; check: exit 1 where a section differs from them")
    results_dir: str = option("results", help="where the workflow wrote results/<scale>/ (relative to the cwd)")
    repo: str = option(str(REPO), help="the repository whose READMEs and committed folders are written")
    digits: int = option(4, min=1, max=10, help="significant digits of a cell")


# --- reading the committed files -------------------------------------------------------------------------------
def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ResultsError(f"{path}: file not found") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ResultsError(f"{path}: no header row (expected a CSV table with a header)")
    rows = list(reader)
    bad = [i + 2 for i, r in enumerate(rows) if None in r or any(v is None for v in r.values())]
    if bad:
        raise ResultsError(f"{path}: line(s) {bad} do not have the header's {len(reader.fieldnames)} fields")
    return list(reader.fieldnames), rows


def fmt(value: str, digits: int = 4) -> str:
    """A CSV cell as the README shows it (see the module docstring)."""
    s = value.strip()
    if s == "":
        return "–"
    try:
        return str(int(s))
    except ValueError:
        pass
    try:
        v = float(s)
    except ValueError:
        return s.replace("|", "\\|")
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"


def markdown(path: Path, table: Table, digits: int = 4) -> str:
    """The committed CSV at `path` as a Markdown table."""
    header, rows = read_csv(path)
    ci = {c[:-7] for c in header if c.endswith("_ci_low") and f"{c[:-7]}_ci_high" in header}
    if table.columns:
        missing = [c for c in table.columns if c not in header]
        if missing:
            raise ResultsError(f"{path}: no column(s) {missing}; it has {header}")
        shown = list(table.columns)
    else:
        merged = {f"{m}_std" for m in header} | {f"{m}_ci_{side}" for m in ci for side in ("low", "high")}
        shown = [c for c in header if c not in HIDDEN and c not in merged]
        shown = [c for c in shown if any(r[c].strip() for r in rows)]
        # a metric's bootstrap interval (shared/tables.py's <m>_ci_low/_high) in one column right after it
        shown = [x for c in shown for x in ((c, f"{c} 95% CI") if c in ci else (c,))]

    def cell(row, c):
        if c.endswith(" 95% CI"):
            lo, hi = (row[f"{c[:-7]}_ci_{side}"].strip() for side in ("low", "high"))
            return f"[{fmt(lo, digits)}, {fmt(hi, digits)}]" if lo and hi else "–"
        text = fmt(row[c], digits)
        std = row.get(f"{c}_std", "").strip()
        return f"{text} ± {fmt(std, 2)}" if std else text

    def head(c):
        return table.labels.get(c) or (f"{c[:-6]} (paper)" if c.endswith("_paper") else c)

    numeric = [c.endswith(" 95% CI") or all(fmt(r[c]) == "–" or _is_number(r[c]) for r in rows) for c in shown]
    lines = ["| " + " | ".join(head(c) for c in shown) + " |",
             "|" + "".join("---:|" if n else "---|" for n in numeric)]
    lines += ["| " + " | ".join(cell(r, c) for c in shown) + " |" for r in rows]
    return "\n".join(lines)


def claims_markdown(path: Path, digits: int = 4) -> list[str]:
    """The verdicts of a table's claims (shared/tables.py `out_claims`) as Markdown bullets, in tables.py's words."""
    from shared.tables import claim_line

    try:
        verdicts = json.loads(path.read_text())
        return [f"- {claim_line(v, digits)}" for v in verdicts]
    except (ValueError, TypeError, KeyError) as e:
        raise ResultsError(f"{path}: not a list of claim verdicts as shared/tables.py writes them ({e!r})") from None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_provenance(path: Path, csv_path: Path) -> dict:
    try:
        prov = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: file not found (every committed table has its provenance beside it; "
                           f"collect it again with `python -m shared.results_md`)") from None
    except ValueError as e:
        raise ResultsError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in ("source", "sha256", "step") if k not in prov]
    if missing:
        raise ResultsError(f"{path}: missing key(s) {missing}")
    for f, key in ((csv_path, "sha256"), (_claims_path(csv_path), "claims_sha256")):
        if key not in prov:
            if f.is_file():
                raise ResultsError(f"{f}: {path} records no SHA-256 for it; collect the table again")
            continue
        if not f.is_file():
            raise ResultsError(f"{f}: file not found ({path} records it)")
        if prov[key] != _sha256(f):
            raise ResultsError(f"{f}: its SHA-256 is not the one {path} recorded: the committed file was "
                               f"edited by hand; collect it again from the workflow's results")
    return prov


def _claims_path(table_csv: Path) -> Path:
    """shared/tables.py's verdicts beside a table: <stem>.claims.json (the rules' out_claims)."""
    return table_csv.with_name(f"{table_csv.stem}.claims.json")


def command_of(target: str, scale: str) -> str:
    if scale == "paper":
        return f"snakemake --profile slurm {target}"
    return "snakemake --cores 2" + ("" if target == "all" else f" {target}")


def readme_rule(target: str) -> str:
    """The Snakemake target that runs `target`, then collects its tables (workflow/rules/results.smk)."""
    return "readme" if target == "all" else f"readme_{target}"


def section(entry: Readme, repo: Path, digits: int = 4) -> str:
    """The generated section of one README, markers included, from its committed CSVs only."""
    key = next((k for k, e in READMES.items() if e is entry), None)
    lines = [BEGIN, "<!-- generated: do not edit between these markers; the readings go outside them -->", "",
             f"*Generated by `python -m shared.results_md{f' readme={key}' if key else ''}` from the committed "
             f"tables in `{entry.folder}/<scale>/`,*",
             "*each with the commit and command that made it in `<table>.provenance.json`. "
             "`snakemake --cores 2 <rule>` runs a target, then this:*",
             "*" + ", ".join(f"`{readme_rule(t)}`" for t in dict.fromkeys(t.target for t in entry.tables)) + ".*"]
    for scale in SCALES:
        tables = [t for t in entry.tables if scale in t.scales]
        if not tables:
            continue
        head = len(lines)
        missing = []
        for t in tables:
            csv_path = repo / entry.folder / scale / f"{t.name}.csv"
            run = f"`{command_of(t.target, scale)}`"
            if not csv_path.is_file():
                missing.append(f"- {t.title} (`{t.name}`): {run} writes `results/{scale}/{t.source}`")
                continue
            prov = read_provenance(csv_path.with_suffix(".provenance.json"), csv_path)
            step = prov["step"]
            commit = (step.get("git_commit") or "unknown")[:12]
            when = (step.get("time") or "unknown time")[:10]
            lines += ["", f"**{t.title}** (`{t.name}`): {run}, table written at commit `{commit}` on {when} "
                          f"from `{prov['source']}`", "", markdown(csv_path, t, digits)]
            if _claims_path(csv_path).is_file():
                lines += ["", "Claims (|difference| against 2σ of the spread, shared/tables.py):", "",
                          *claims_markdown(_claims_path(csv_path), digits)]
        if len(lines) == head:
            lines += ["", f"Not run yet at {scale} (committed copies go in `{entry.folder}/{scale}/`):", "", *missing]
            continue
        lines[head:head] = ["", f"Scale **{scale}** (committed copies in `{entry.folder}/{scale}/`):"]
        if missing:
            lines += ["", f"Not run yet at {scale}:", "", *missing]
    lines += ["", END]
    return "\n".join(lines)


def replace_section(text: str, new: str, readme: Path) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ResultsError(f"{readme}: expected one '{BEGIN}' line, then one '{END}' line, where the generated "
                           f"results go (found {text.count(BEGIN)} and {text.count(END)})")
    a, b = text.index(BEGIN), text.index(END) + len(END)
    return text[:a] + new + text[b:]


def current_section(readme: Path) -> str:
    text = readme.read_text()
    replace_section(text, "", readme)  # checks the markers
    return text[text.index(BEGIN):text.index(END) + len(END)]


# --- collecting from the workflow's outputs -----------------------------------------------------------------------
def step_provenance(source: Path) -> tuple[Path, dict]:
    """The run.json of the step that wrote `source`: shared/tables.py writes <stem>.config.run.json beside its
    table, a step folder (sampler comparison) has run.json."""
    for cand in (source.with_name(f"{source.stem}.config.run.json"), source.with_name("run.json")):
        if cand.is_file():
            return cand, json.loads(cand.read_text())
    raise ResultsError(f"{source}: no provenance beside it (expected {source.stem}.config.run.json or run.json "
                       f"in {source.parent}, written by the step's shared.config.save_resolved)")


def collect_table(entry: Readme, table: Table, scale: str, results_dir: Path, repo: Path) -> Path:
    source = results_dir / scale / table.source
    if not source.is_file():
        raise ResultsError(f"{source}: file not found (`{command_of(table.target, scale)}` writes it)")
    markdown(source, table)  # refuse a malformed table (bad rows, a missing column) before it is committed
    claims = _claims_path(source)
    if claims.is_file():
        claims_markdown(claims)
    header, rows = read_csv(source)
    other = sorted({r["scale"] for r in rows if r.get("scale", scale) != scale}) if "scale" in header else []
    if other:
        raise ResultsError(f"{source}: rows of scale {other} in the {scale} results (toy and paper numbers never "
                           f"share a README table)")
    run_json, step = step_provenance(source)
    out, prov_path = repo / entry.folder / scale / f"{table.name}.csv", \
        repo / entry.folder / scale / f"{table.name}.provenance.json"
    prov = {"source": f"results/{scale}/{table.source}", "sha256": _sha256(source),
            "target": command_of(table.target, scale),
            "step": {k: step.get(k) for k in ("git_commit", "time", "host", "argv", "packages")},
            "step_provenance": str(run_json.relative_to(results_dir.parent)) if results_dir.parent in
            run_json.parents else str(run_json),
            **({"claims_sha256": _sha256(claims)} if claims.is_file() else {})}
    try:
        old = json.loads(prov_path.read_text())
    except (OSError, ValueError):
        old = {}
    same = out.is_file() and _sha256(out) == prov["sha256"] and set(old) - {"collected"} == set(prov) \
        and all(old[k] == v for k, v in prov.items())
    if same and (not claims.is_file() or (_claims_path(out).is_file()
                                          and _sha256(_claims_path(out)) == prov["claims_sha256"])):
        return out  # the same table from the same step: leave the committed files (and their history) alone
    # byte for byte: the sha256 in the provenance is the source's (csv.writer ends lines with \r\n, which a text
    # round trip would turn into \n)
    write_bytes(out, source.read_bytes())
    if claims.is_file():
        write_bytes(_claims_path(out), claims.read_bytes())
    elif _claims_path(out).is_file():
        _claims_path(out).unlink()  # the verdicts of an older table
    write_json(prov_path, {**prov, "collected": {k: v for k, v in provenance().items()
                                                 if k in ("git_commit", "time", "argv")}})
    return out


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Two workflow jobs may write one README (eval_sdxl and eval_sd15 both write dmd2's): one at a time."""
    # the lock file lives outside the checkout (a file beside the README would show in `git status`)
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"results_md.{key}.lock"
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def entries(name: str) -> dict[str, Readme]:
    if name == "all":
        return READMES
    if name not in READMES:
        raise ResultsError(f"readme={name!r}: expected all or one of {list(READMES)}")
    return {name: READMES[name]}


def main(cfg=None):
    cfg = resolve(Config, cfg)
    repo, results_dir = Path(cfg.repo), Path(cfg.results_dir).resolve()
    scales = SCALES if cfg.scale == "all" else (cfg.scale,)
    chosen = entries(cfg.readme)
    if cfg.tables and len(chosen) != 1:
        raise ResultsError("tables=: name one readme= (the table names are per README)")
    stale = []
    for key, entry in chosen.items():
        readme = repo / entry.readme
        if cfg.mode == "collect":
            wanted = [entry.table(n) for n in cfg.tables] if cfg.tables else list(entry.tables)
            for t in wanted:
                for scale in (s for s in scales if s in t.scales):
                    source = results_dir / scale / t.source
                    if not cfg.tables and not source.is_file():
                        print(f"{key}: {t.name} at {scale}: {source} not found; "
                              + ("keeping the committed copy" if (repo / entry.folder / scale / f"{t.name}.csv")
                                 .is_file() else "the section says 'not run yet'"))
                        continue
                    print(f"{key}: {collect_table(entry, t, scale, results_dir, repo)} <- {source}")
        with locked(readme):
            new = section(entry, repo, cfg.digits)
            if cfg.mode == "check":
                if current_section(readme) != new:
                    stale.append(str(readme))
                continue
            text = readme.read_text()
            updated = replace_section(text, new, readme)
            if updated != text:
                write_text(readme, updated)
                print(f"{key}: wrote the results section of {readme}")
    if stale:
        print("results sections that differ from their committed CSVs (run `python -m shared.results_md "
              "mode=render`):\n  " + "\n  ".join(stale), file=sys.stderr)
        raise SystemExit(1)
    return stale


if __name__ == "__main__":
    cli(main, Config, None, __doc__)
