"""The Snakemake HTML report of a finished run, read back: `build_report(work, target)` runs `snakemake --report`
in that workflow directory, `report_categories(html)` returns what the page lists, {category: {subcategory:
[result paths]}} (the page's own `var categories = {...}` data, the index its menus are built from).

SMOKE_REPORT is what the report of a finished tiny `smoke` run must list per project: each project's category
with its subcategories and, for some, result files that must be in them (paths under results/tiny/). Training
holds each training run's curves.png + curves.csv (workflow/rules/common.smk `curves(...)`).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SMOKE_REPORT = {
    "Digits (toy data)": {"Tables": ["tables/digits.html"], "Training": ["digits_features/curves.png"],
                          "Provenance": ["digits_features/run.json"]},
    "Samplers": {"Tables": ["sampler_compare/results.html"], "Samples": ["sampler_compare/grid.png"],
                 "Plots": ["sampler_compare/fd_vs_nfe.png"],
                 "Training": ["digits_diffusion/curves.png", "digits_diffusion/curves.csv"],
                 "Provenance": ["digits_diffusion/config.yaml"]},
    "sd_flux_lab (SD1.5, SDXL, FLUX.2)": {"Samples": ["sd_flux_lab/generate/flux2_edit/"],
                                          "Training": ["sd_flux_lab/finetune_blue/curves.png"],
                                          "Provenance": ["sd_flux_lab/finetune_blue/config.yaml",
                                                         "sd_flux_lab/finetune_blue/run.json"]},
    "DMD2": {"Tables": ["tables/dmd2_imagenet64.html", "tables/dmd2_sdxl.html", "tables/dmd2_sd15.html"],
             "Samples": ["dmd2/grids/imagenet64.png"], "Plots": ["tables/dmd2_imagenet64_fd_vs_nfe.png"],
             "Training": ["dmd2/teacher/curves.png", "dmd2/runs/toy_sd15_1step/curves.png"], "Provenance": []},
    "GLIDE": {"Tables": ["tables/glide_chain.html", "tables/glide_extras.html", "tables/glide_inpaint.html",
                         "tables/glide_upscale.html"],
              "Training": ["glide/runs/base/curves.png", "glide/clip/curves.png"], "Provenance": ["glide/runs/base/config.yaml",
                                                                   "glide/runs/upsample/run.json"]},
    "TiTok / RAR": {"Tables": ["tables/titok_tokens.html", "tables/titok_rar_gen_smoke.html"],
                    "Tokenizer reconstructions": ["titok_rar/eval/k8_stage2_grid.png"],
                    "Generator samples": ["titok_rar/gen/grids/smoke.png"],
                    "Plots": ["tables/titok_rar_gen_smoke_fd_bars.png"],
                    "Training": ["titok_rar/vqgan/curves.png", "titok_rar/gen/runs/rar_annealed/curves.png"],
                    "Provenance": ["titok_rar/k8/stage2/config.yaml", "titok_rar/gen/runs/rar_annealed/run.json"]},
}


def build_report(work: Path, target: str, scale: str = "tiny", timeout: int = 600) -> Path:
    """`snakemake --report <work>/report.html <target>` over the finished run in `work` (the README's command)."""
    out = work / "report.html"
    r = subprocess.run([sys.executable, "-m", "snakemake", "--report", str(out), target, "--directory", str(work),
                        "--snakefile", str(REPO / "Snakefile"), "--config", f"scale={scale}"],
                       cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def report_categories(html: Path) -> dict[str, dict[str, list[str]]]:
    m = re.search(r"var categories = (\{.*?\});\s*$", html.read_text(), flags=re.M)
    assert m, f"{html}: no `var categories = {{...}}` (has Snakemake's report template changed?)"
    return json.loads(m.group(1))


def check_report(categories: dict[str, dict[str, list[str]]], expected: dict[str, dict[str, list[str]]],
                 scale: str = "tiny") -> None:
    """Every expected category and subcategory is there, holding (at least) the expected result files."""
    missing = sorted(set(expected) - set(categories))
    assert not missing, f"report categories missing: {missing}; has {sorted(categories)}"
    for cat, subcats in expected.items():
        for sub, files in subcats.items():
            assert sub in categories[cat], f"{cat}: no subcategory {sub!r}; has {sorted(categories[cat])}"
            listed = categories[cat][sub]
            assert listed, f"{cat} / {sub} is empty"
            for f in files:
                assert any(p.startswith(f"results/{scale}/{f}") for p in listed), (cat, sub, f, listed)
