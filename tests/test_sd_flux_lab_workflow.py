"""sd_flux_lab's toy chain plans the blue fine-tune once per training seed and the base's samples once per sampling
seed (config.yaml sd_flux_lab_seeds, issue 18), and each table joins them as one row per model with a claim."""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dry_run(*args):
    with tempfile.TemporaryDirectory() as work:
        r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--snakefile", str(REPO / "Snakefile"),
                            "--directory", work, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_toy_plan_trains_and_samples_every_seed():
    out = dry_run("sd_flux_lab", "--config", "scale=toy")
    # three fine-tunes from the one base, each with its own seed and run folder
    runs = re.findall(r"train_sd\.py scale=toy base=results/toy/sd_flux_lab/base_sd15 .*? "
                      r"run_dir=results/toy/sd_flux_lab/(\S+) seed=(\d)", out)
    assert sorted(runs) == [("finetune_blue", "0"), ("finetune_blue_seed1", "1"), ("finetune_blue_seed2", "2")]
    # the base is trained once; its seed replicas sample it with disjoint noise, the fine-tunes with seed 0's
    assert len(re.findall(r"train_sd\.py scale=toy base=preset arch=sd15", out)) == 1
    for split in ("subset", "rest"):
        for seed in (0, 1, 2):
            base = "base_sd15" + (f"_seed{seed}" if seed else "")
            ft = "finetune_blue" + (f"_seed{seed}" if seed else "")
            assert re.search(rf"pipeline=results/toy/sd_flux_lab/base_sd15 \S+ .*seed_offset={seed * 1000000} "
                             rf"save_images=true out_dir=results/toy/sd_flux_lab/samples/{base}_{split} ", out)
            assert re.search(rf"pipeline=results/toy/sd_flux_lab/{ft} \S+ .*seed_offset=0 "
                             rf"save_images=true out_dir=results/toy/sd_flux_lab/samples/{ft}_{split} ", out)
            label = "after (fine-tuned on blue)" + (f"_seed{seed}" if seed else "")
            assert f"experiment='{label}' checkpoint={split}" in out
        table = re.search(rf"tables\.py scale=toy inputs=\[(\S+)\] claims='(.*?)' .*out_claims=results/toy/tables/"
                          rf"sd_flux_lab_{split}\.claims\.json", out)
        assert table, split
        assert len(table.group(1).split(",")) == 6
        assert table.group(2) == "[[after (fine-tuned on blue),before (SD1.5 base)]]"


def test_tiny_scale_stays_one_run():
    out = dry_run("results/tiny/tables/sd_flux_lab_subset.md", "--config", "scale=tiny")
    assert "finetune_blue_seed" not in out and "base_sd15_seed" not in out
