"""shared/metrics/bootstrap.py and its report in shared/evaluate.py: the vectorised bootstrap of FD and prompt
accuracy against a direct loop over the resampled sets, the interval around the measured number, its shrinking
with more samples, and the evaluation JSON's entries (issue 18, point 2)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.metrics import bootstrap as bs
from shared.metrics.frechet import frechet_distance

torch.set_num_threads(1)


def _gauss(n, d, seed, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    a = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)  # one shape for every set: only n differs
    return rng.normal(size=(n, d)) @ (a * scale) + shift


def _reference(d=8):
    ref = _gauss(4000, d, 1)
    return ref.mean(0), np.cov(ref, rowvar=False)


def test_resample_indices_are_seeded_draws_with_replacement():
    a, b, c = bs.resample_indices(50, 30, 0), bs.resample_indices(50, 30, 0), bs.resample_indices(50, 30, 1)
    assert a.shape == (30, 50) and a.min() >= 0 and a.max() < 50
    assert (a == b).all() and not (a == c).all()
    assert any(len(set(row)) < 50 for row in a)  # with replacement: repeats
    with pytest.raises(ValueError, match="resamples"):
        bs.resample_indices(50, 0)


def test_frechet_bootstrap_equals_a_loop_over_the_resampled_sets():
    mu, sigma = _reference()
    x = _gauss(120, 8, 2, scale=1.2, shift=0.3)
    idx = bs.resample_indices(len(x), 25, seed=3)
    fast = bs.frechet_bootstrap(x, mu, sigma, idx)
    loop = [frechet_distance(x[i].mean(0), np.cov(x[i], rowvar=False), mu, sigma) for i in idx]  # clean-fid's
    np.testing.assert_allclose(fast, loop, rtol=1e-9, atol=1e-12)
    # the identity resample (every row once) is the point estimate itself
    point = frechet_distance(x.mean(0), np.cov(x, rowvar=False), mu, sigma)
    assert bs.frechet_bootstrap(x, mu, sigma, np.arange(len(x))[None])[0] == pytest.approx(point, rel=1e-10)
    # a singular set (fewer samples than dimensions) still matches clean-fid's regularised number
    few = _gauss(6, 8, 4)
    i6 = bs.resample_indices(6, 5, seed=0)
    ref6 = [frechet_distance(few[i].mean(0), np.cov(few[i], rowvar=False), mu, sigma) for i in i6]
    np.testing.assert_allclose(bs.frechet_bootstrap(few, mu, sigma, i6), ref6, rtol=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        bs.frechet_bootstrap(x[:, :4], mu, sigma, idx)


def test_the_same_digits_at_one_and_two_blas_threads():
    """The table's CSV writes every digit: the resampled values must not depend on the BLAS thread count."""
    import os
    import subprocess
    import sys

    # the module alone (numpy only): the package's __init__ would import torch in each interpreter. At 1000 x 64-d
    # the unlimited products differ in the last digits between 1 and 2 threads (measured on this machine).
    code = ("import importlib.util, numpy as np; "
            f"spec = importlib.util.spec_from_file_location('bs', {str(Path(bs.__file__))!r}); "
            "bs = importlib.util.module_from_spec(spec); spec.loader.exec_module(bs); "
            "r = np.random.default_rng(0); a = r.normal(size=(64, 64)) / 8; x = r.normal(size=(1000, 64)) @ a; "
            "ref = r.normal(size=(3000, 64)) @ a * 1.1; i = bs.resample_indices(1000, 50, 0); "
            "print(repr(bs.frechet_bootstrap(x, ref.mean(0), np.cov(ref, rowvar=False), i).tolist()), "
            "repr(bs.mean_bootstrap((x[:, 0] > 0).astype(float), i).tolist()))")
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": n, "OMP_NUM_THREADS": n}).stdout
           for n in ("1", "2")]
    assert out[0] == out[1] and len(out[0]) > 1000


def test_mean_bootstrap_equals_a_loop():
    hits = (np.random.default_rng(0).random(77) < 0.8).astype(int)
    idx = bs.resample_indices(77, 40, seed=5)
    np.testing.assert_allclose(bs.mean_bootstrap(hits, idx), [hits[i].mean() for i in idx], rtol=0, atol=1e-15)


def test_interval_contains_the_point_and_shrinks_with_more_samples():
    mu, sigma = _reference()
    widths, acc_widths = [], []
    for n in (200, 3200):
        x = _gauss(n, 8, 10 + n, scale=1.2, shift=0.1)
        point = frechet_distance(x.mean(0), np.cov(x, rowvar=False), mu, sigma)
        idx = bs.resample_indices(n, 200, seed=0)
        s = bs.summary(point, bs.frechet_bootstrap(x, mu, sigma, idx), seed=0)
        lo, hi = s["ci"]
        assert lo < point < hi, (n, point, s["ci"])
        assert s["bootstrap_resamples"] == len(s["bootstrap_values"]) == 200 and s["ci_level"] == 0.95
        # resampling with replacement inflates FD; the interval is moved back onto the measured number
        assert s["bootstrap_bias"] > 0
        assert np.mean(s["bootstrap_values"]) - s["bootstrap_bias"] == pytest.approx(point, rel=1e-9)
        widths.append(hi - lo)
        hits = (np.random.default_rng(n).random(n) < 0.7).astype(float)
        a = bs.summary(hits.mean(), bs.mean_bootstrap(hits, idx), seed=0)
        assert a["ci"][0] < hits.mean() < a["ci"][1]
        acc_widths.append(a["ci"][1] - a["ci"][0])
    # 16x the samples: about 1/4 of the width (1/sqrt(n)); at least halved
    assert widths[1] < widths[0] / 2 and acc_widths[1] < acc_widths[0] / 2
    # and the prompt-accuracy interval is the binomial one: se = sqrt(p (1 - p) / n) within 15 %
    assert acc_widths[1] / (2 * 1.96) == pytest.approx(np.sqrt(0.7 * 0.3 / 3200), rel=0.15)


@pytest.fixture(scope="module")
def digits_net(digits_tiny, tmp_path_factory):
    """A digits network trained for 30 steps (~1 s): features with spread, a prompt accuracy between 0 and 1."""
    import torch.nn.functional as F

    from shared.toy import features
    from shared.toy.dataset import load_arrays

    torch.manual_seed(0)
    x, d, c = load_arrays(digits_tiny / "train")
    x, d, c = torch.from_numpy(x).permute(0, 3, 1, 2).float(), torch.from_numpy(d), torch.from_numpy(c)
    net = features.DigitsNet(width=8, feature_dim=16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        idx = torch.randint(0, len(x), (32,))
        ld, lc = net(x[idx])
        loss = F.cross_entropy(ld, d[idx]) + F.cross_entropy(lc, c[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("net") / "features.safetensors"
    features.save(net.eval(), path)
    return path


def test_evaluate_reports_the_intervals_beside_fd_and_prompt_accuracy(digits_tiny, digits_net, tmp_path):
    from shared import evaluate
    from shared.metrics.extractors import build_extractor
    from shared.metrics.images import image_files, read_image
    from shared.metrics.stats import ReferenceStats

    cfg = {"experiment": "t", "scale": "tiny", "images": str(digits_tiny / "test"),
           "reference": str(digits_tiny / "train"), "extractor": f"digits:{digits_net}",
           "metrics": ["fd", "prompt_accuracy"], "reference_stats": str(tmp_path / "ref.npz"),
           "bootstrap": 50, "bootstrap_seed": 7, "out": str(tmp_path / "out.json")}
    r = evaluate.main(cfg)
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(r))
    by = {e["metric"]: e for e in r["metrics"]}
    fd, acc = by["fd"], by["prompt_accuracy"]
    for e in (fd, acc):
        assert e["bootstrap_resamples"] == 50 and e["bootstrap_seed"] == 7 and len(e["bootstrap_values"]) == 50
        assert e["ci"][0] <= e["value"] <= e["ci"][1] and e["bootstrap_se"] > 0
    assert 0 < acc["value"] < 1
    # the digit and colour accuracies have their own intervals (a claim on one of them needs its noise), drawn
    # with the same resamples: each resampled joint accuracy is at most the digit's and the colour's
    dig, col = by["prompt_accuracy_digit"], by["prompt_accuracy_colour"]
    for e in (dig, col):
        assert e["ci"][0] <= e["value"] <= e["ci"][1] and len(e["bootstrap_values"]) == 50
    assert all(j <= min(d, c) + 1e-12 for j, d, c in
               zip(acc["bootstrap_values"], dig["bootstrap_values"], col["bootstrap_values"]))
    assert dig["value"] >= acc["value"] and col["value"] >= acc["value"]

    # the JSON's resampled FDs, recomputed by hand: the extractor's features of the 80 images, resampled with
    # the same draws, each set's statistics through clean-fid's frechet_distance
    ext = build_extractor(f"digits:{digits_net}")
    files = image_files(digits_tiny / "test")
    feats = ext.outputs(ext.batch_tensor([read_image(f) for f in files]))["features"].numpy().astype(np.float64)
    ref = ReferenceStats.load(tmp_path / "ref.npz")
    idx = bs.resample_indices(len(feats), 50, seed=7)
    loop = [frechet_distance(feats[i].mean(0), np.cov(feats[i], rowvar=False), ref.mu, ref.sigma) for i in idx]
    # rtol 1e-5: evaluate extracts the float32 features in its own batches, the loop in one (1.2e-6 seen on FDs ~0.1)
    np.testing.assert_allclose(fd["bootstrap_values"], loop, rtol=1e-5)

    # bootstrap=0: the entries carry no interval, the values are unchanged
    r0 = evaluate.main({**cfg, "bootstrap": 0, "out": str(tmp_path / "out0.json")})
    by0 = {e["metric"]: e for e in r0["metrics"]}
    assert "ci" not in by0["fd"] and "ci" not in by0["prompt_accuracy"]
    assert by0["fd"]["value"] == fd["value"] and by0["prompt_accuracy"]["value"] == acc["value"]
