"""shared.metrics.precision_recall: k-NN precision/recall (Kynkaanniemi et al. 2019, ADM's evaluator) against a
brute-force numpy computation and sklearn's nearest neighbours, the known cases, the memory-bounded blocks, and
the `precision_recall` metric through shared/evaluate.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.metrics.precision_recall import manifold_radii, precision_recall

torch.set_num_threads(1)


def _brute_force(real: np.ndarray, fake: np.ndarray, k: int):
    """The definition, written out: full distance matrices, k-th other neighbour from a sort."""
    real, fake = real.astype(np.float64), fake.astype(np.float64)

    def sqdist(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    r_real = np.sort(sqdist(real, real), axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(sqdist(fake, fake), axis=1)[:, k]
    d = sqdist(fake, real)
    precision = np.mean((d <= r_real[None, :]).any(1))
    recall = np.mean((d <= r_fake[:, None]).any(0))
    return precision, recall, r_real


def _sets(seed=0, n_real=300, n_fake=200, d=12, shift=0.6, scale=1.3):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n_real, d)).astype(np.float32)
    fake = (rng.normal(size=(n_fake, d)) * scale + shift).astype(np.float32)
    return real, fake


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_brute_force(k):
    real, fake = _sets()
    p, r = precision_recall(real, fake, k)
    bp, br, radii = _brute_force(real, fake, k)
    assert (p, r) == (pytest.approx(bp, abs=0), pytest.approx(br, abs=0))
    assert 0.05 < p < 0.95 and 0.05 < r < 0.95  # a case where both are informative, not 0 or 1
    np.testing.assert_allclose(manifold_radii(real, k), radii, rtol=1e-10, atol=1e-12)


def test_radii_match_sklearn_neighbours():
    from sklearn.neighbors import NearestNeighbors

    real, _ = _sets(1)
    dist, _ = NearestNeighbors(n_neighbors=4).fit(real.astype(np.float64)).kneighbors(real.astype(np.float64))
    np.testing.assert_allclose(np.sqrt(manifold_radii(real, 3)), dist[:, 3], rtol=1e-9)


def test_blocks_bound_memory_and_give_the_same_numbers():
    real, fake = _sets(2, n_real=257, n_fake=131)
    whole = precision_recall(real, fake, 3, max_block_bytes=2 ** 30)
    for limit in (8 * 40, 8 * 1000):
        assert precision_recall(real, fake, 3, max_block_bytes=limit) == whole
    # 1 byte: one row (radii) / one distance (pairs) at a time
    assert precision_recall(real[:40], fake[:30], 3, max_block_bytes=1) == \
        precision_recall(real[:40], fake[:30], 3, max_block_bytes=2 ** 30)
    # (matmul blocks of another shape may round the last bit differently)
    np.testing.assert_allclose(manifold_radii(real, 3, max_block_bytes=8 * 300),
                               manifold_radii(real, 3, max_block_bytes=2 ** 30), rtol=1e-13)
    # float32 (the GPU path) agrees on these features
    assert precision_recall(real, fake, 3, dtype=torch.float32) == pytest.approx(whole, abs=2 / 131)


def test_known_cases():
    real, _ = _sets(3)
    assert precision_recall(real, real.copy(), 3) == (1.0, 1.0)  # identical sets
    far = real + 1000.0  # disjoint and far apart
    assert precision_recall(real, far, 3) == (0.0, 0.0)
    # samples collapsed onto a few reference points: every sample is real-looking, little of the reference covered
    collapsed = np.repeat(real[:5], 20, axis=0)
    p, r = precision_recall(real, collapsed, 3)
    assert p == 1.0 and r < 0.2
    # radii reused across evaluations give the same result
    radii = manifold_radii(real, 3)
    assert precision_recall(real, collapsed, 3, reference_radii=radii) == (p, r)


def test_refusals():
    real, fake = _sets(4)
    with pytest.raises(ValueError, match="same extractor"):
        precision_recall(real, fake[:, :5], 3)
    with pytest.raises(ValueError, match="3 points cannot give a 3-th"):
        precision_recall(real, fake[:3], 3)
    with pytest.raises(ValueError, match=r"must be \(N, D\)"):
        precision_recall(real, fake[0], 3)
    with pytest.raises(ValueError, match="radii"):
        precision_recall(real, fake, 3, reference_radii=np.ones(3))


@pytest.fixture(scope="module")
def digits_net(tmp_path_factory):
    """An untrained digits CNN (seeded): 16-d features with spread, enough for an exact cross-check."""
    from shared.toy import features

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("net") / "features.safetensors"
    features.save(features.DigitsNet(width=8, feature_dim=16).eval(), path)
    return path


def test_through_evaluate(digits_tiny, digits_net, tmp_path):
    from shared import evaluate
    from shared.metrics.stats import ReferenceStats
    from shared.metrics.images import image_files, read_image
    from shared.metrics.extractors import build_extractor

    def run(images, reference, out, **kw):
        return evaluate.main({"experiment": "t", "scale": "tiny", "out": str(tmp_path / out), "batch_size": 32,
                              "reference_stats": str(tmp_path / "ref.npz"), "images": str(images),
                              "reference": str(reference), "extractor": f"digits:{digits_net}",
                              "metrics": ["fd", "precision_recall"], **kw})

    r = run(digits_tiny / "test", digits_tiny / "train", "a.json")
    by = {e["metric"]: e for e in r["metrics"]}
    assert set(by) == {"fd", "precision", "recall"}
    assert by["precision"]["num_samples"] == 80 and by["precision"]["num_reference"] == 160
    assert by["precision"]["k"] == 3 and by["recall"]["reference_id"] == by["fd"]["reference_id"]
    # the same numbers from the features directly
    ext = build_extractor(f"digits:{digits_net}", "cpu")

    def feats(folder):
        ims = [read_image(p) for p in image_files(folder)]
        return ext.outputs(ext.batch_tensor(ims))["features"].numpy()

    bp, br, _ = _brute_force(feats(digits_tiny / "train"), feats(digits_tiny / "test"), 3)
    assert by["precision"]["value"] == pytest.approx(bp, abs=1e-12)
    assert by["recall"]["value"] == pytest.approx(br, abs=1e-12)
    assert 0 < by["precision"]["value"] <= 1 and 0 < by["recall"]["value"] <= 1
    # the reference set against itself: 1 / 1
    same = run(digits_tiny / "train", tmp_path / "ref.npz", "b.json")
    assert {e["metric"]: e["value"] for e in same["metrics"]}["precision"] == 1.0
    assert {e["metric"]: e["value"] for e in same["metrics"]}["recall"] == 1.0
    # a reference that holds only mu/sigma (e.g. ADM's imported batch) is refused with what to do
    ref = ReferenceStats.load(tmp_path / "ref.npz")
    ref.features = np.zeros((0, ref.dim), np.float32)
    ref.save(tmp_path / "musigma.npz")
    with pytest.raises(ValueError, match="hold 0 feature samples"):
        run(digits_tiny / "test", tmp_path / "musigma.npz", "c.json")


def test_generator_eval_reports_precision_recall_beside_fd(digits_tiny, digits_net, tmp_path):
    import json
    import shutil

    from projects.titok_rar import generator_eval
    from shared.metrics.stats import ReferenceStats

    samples = tmp_path / "samples"
    shutil.copytree(digits_tiny / "test", samples)
    (samples / "samples.json").write_text(json.dumps({"nfe": 8, "images_per_sec": 12.5, "sampling": {"k": 1}}))
    base = {"experiment": "rar_x", "scale": "tiny", "images": str(samples), "extractor": f"digits:{digits_net}",
            "metrics": ["fd"], "batch_size": 40, "reference_stats": str(tmp_path / "ref.npz")}
    r = generator_eval.main({**base, "reference": str(digits_tiny / "train"), "out": str(tmp_path / "a.json")})
    by = {e["metric"]: e["value"] for e in r["metrics"]}
    assert set(by) == {"fd", "precision", "recall", "nfe", "images_per_sec"}
    assert 0 < by["precision"] <= 1 and 0 < by["recall"] <= 1 and by["nfe"] == 8
    assert json.loads((tmp_path / "a.json").read_text())["metrics"] == r["metrics"]
    # a reference of mu/sigma only (ADM's imported batch): FD alone, no precision/recall asked for
    ref = ReferenceStats.load(tmp_path / "ref.npz")
    ref.features = np.zeros((0, ref.dim), np.float32)
    ref.save(tmp_path / "musigma.npz")
    r = generator_eval.main({**base, "reference": str(tmp_path / "musigma.npz"), "out": str(tmp_path / "b.json")})
    assert {e["metric"] for e in r["metrics"]} == {"fd", "nfe", "images_per_sec"}
    assert r["metrics"][0]["value"] == pytest.approx(by["fd"], rel=1e-12)
