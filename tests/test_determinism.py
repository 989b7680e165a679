"""Toy tables do not depend on the thread count (issue 18.1): the default target at tiny scale, run with every
step on 1 thread and with 2 threads per heavy step, gives the same tables to the last digit.

Why they can: training steps pin torch to one thread (`threads=1`, common.smk's train_threads), because a
backward pass sums in a thread-count-dependent order (~1e-7 differences that training amplifies); the data order,
the noise and the initial weights come from per-step seeded generators. Forward passes (sampling, feature
extraction) on 2 threads mostly give the 1-thread bits, but not always: in one CI run the 2-thread sampling
changed one 8-bit pixel of 18k by 1 and the FD of that row by 1.6e-5 relative (0.1244737 vs 0.1244716). So the
trained weights and every non-numeric cell must be equal, and numbers agree to REL_TOL = 1e-4 relative (well below
the 4 significant digits the Markdown tables print, far below any difference a table reads). Timing columns
(seconds per image) are the only values allowed to differ freely.
"""
import math
import csv
import json
import platform

import pytest

from shared.launch import NUMERICS_ENV

from tests.helpers.tiny_chain import tiny_chain

TIMING = {"seconds_per_image", "train_seconds"}  # wall-clock: differs between any two runs
REL_TOL = 1e-4
TABLES = ["results/tiny/tables/digits.csv", "results/tiny/sampler_compare/results.csv",
          "results/tiny/leaderboard/default/leaderboard.csv"]


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    return tiny_chain(tmp_path_factory, 1), tiny_chain(tmp_path_factory, 2)


def _close(a, b) -> bool:
    """Equal strings, or numbers within REL_TOL of each other."""
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=REL_TOL)
    except (TypeError, ValueError):
        return False


def _same(one: list, two: list) -> list:
    """The (row, key, a, b) cells that differ beyond REL_TOL (or in their keys)."""
    if len(one) != len(two):
        return [("rows", len(one), len(two))]
    return [(i, k, a.get(k), b.get(k)) for i, (a, b) in enumerate(zip(one, two))
            for k in sorted(set(a) | set(b)) if not _close(a.get(k), b.get(k))]


def test_close_refuses_what_a_table_would_show():
    assert _close("0.1244737", "0.1244716") and not _close("0.1245", "0.1246") and not _close("ddim", "euler")
    assert _same([{"fd": "1.0"}], [{"fd": "1.001"}]) == [(0, "fd", "1.0", "1.001")]


@pytest.mark.parametrize("table", TABLES)
def test_tables_equal_on_1_and_2_threads(chains, table):
    one, two = (_rows(c / table) for c in chains)
    assert one and not _same(one, two)


def test_trained_weights_equal_on_1_and_2_threads(chains):
    one, two = chains
    for rel in ["results/tiny/digits_diffusion/model/unet/diffusion_pytorch_model.safetensors"]:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_the_2_thread_chain_did_use_2_threads_for_inference_and_1_for_training(chains):
    _, two = chains
    # the training step records the thread count it trained on
    assert json.loads((two / "results/tiny/digits_diffusion/metrics.json").read_text())["threads"] == 1
    log = (two / ".chain_done").read_text()
    assert "threads: 2" in log  # Snakemake ran the heavy rules with 2 threads (OMP_NUM_THREADS=2)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pin is for x86-64 CPUs")
def test_chain_steps_computed_on_the_pinned_cpu_code_paths(chains):
    # the workflow pins every step to the AVX2 kernels (shared.launch.NUMERICS_ENV): the chain ran without them set
    for rel in ["results/tiny/digits_diffusion/run.json", "results/tiny/digits_features/run.json"]:
        run = json.loads((chains[0] / rel).read_text())
        assert run["cpu"]["torch_capability"] == "AVX2", rel
        assert {k: run["env"].get(k) for k in NUMERICS_ENV} == NUMERICS_ENV, rel


def test_evaluation_json_values_equal(chains):
    one, two = chains
    for rel in ["results/tiny/metrics/digits/real_test_vs_train.json",
                *sorted(p.relative_to(one).as_posix() for p in (one / "results/tiny/sampler_compare/eval").glob("*"))]:
        a, b = (json.loads((c / rel).read_text()) for c in (one, two))
        va, vb = [m["value"] for m in a["metrics"]], [m["value"] for m in b["metrics"]]
        assert len(va) == len(vb) and all(_close(x, y) for x, y in zip(va, vb)), (rel, va, vb)
