"""shared.metrics and shared/evaluate.py: streaming statistics, Frechet distance / KID / IS against
clean-fid and torchmetrics, reference caching and refusals, the evaluate step end to end."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.metrics import (FeatureStats, InceptionScore, ReferenceStats, StatsMismatch, check_compatible,
                            frechet_distance, kernel_distance, require_samples)

torch.set_num_threads(1)


def _feats(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ a + shift).astype(np.float32)


# ---------------------------------------------------------------- statistics and distances

def test_streaming_stats_match_numpy():
    x = _feats(1000, 16, 0, shift=1000.0)  # a large offset tests the conditioning of the running sums
    s = FeatureStats()
    for i in range(0, len(x), 37):
        s.update(torch.from_numpy(x[i:i + 37]))
    x64 = x.astype(np.float64)
    assert s.count == 1000
    np.testing.assert_allclose(s.mean, x64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.cov, np.cov(x64, rowvar=False), rtol=1e-9, atol=1e-9)


def test_reservoir_keeps_a_uniform_subset():
    s = FeatureStats(keep=100, seed=0)
    x = np.arange(10000, dtype=np.float32)[:, None].repeat(2, 1)
    for i in range(0, len(x), 64):
        s.update(x[i:i + 64])
    assert s.kept.shape == (100, 2) and len(np.unique(s.kept[:, 0])) == 100
    assert 3000 < s.kept[:, 0].mean() < 7000  # not just the first rows


def test_frechet_matches_cleanfid_and_torchmetrics():
    from cleanfid.fid import frechet_distance as cf_fd
    from torchmetrics.image.fid import _compute_fid

    f1, f2 = _feats(500, 32, 1), _feats(400, 32, 2, shift=0.3)
    mu1, s1 = f1.mean(0, dtype=np.float64), np.cov(f1, rowvar=False)
    mu2, s2 = f2.mean(0, dtype=np.float64), np.cov(f2, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(cf_fd(mu1, s1, mu2, s2), rel=1e-6)
    tm = _compute_fid(torch.from_numpy(mu1), torch.from_numpy(s1), torch.from_numpy(mu2), torch.from_numpy(s2))
    assert ours == pytest.approx(float(tm), rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)


def test_kid_matches_cleanfid():
    from cleanfid.fid import kernel_distance as cf_kid

    f1, f2 = _feats(60, 8, 3).astype(np.float64), _feats(60, 8, 4, shift=0.5).astype(np.float64)
    # subsets of all samples: every draw is a permutation, so the estimate is exact and draw-independent
    assert kernel_distance(f1, f2, num_subsets=3)[0] == pytest.approx(cf_kid(f1, f2, num_subsets=3), rel=1e-9)
    # random subsets: same RandomState stream as clean-fid's global np.random
    f3 = _feats(90, 8, 5).astype(np.float64)
    np.random.seed(7)
    ref = cf_kid(f3, f2, num_subsets=20, max_subset_size=30)
    assert kernel_distance(f3, f2, 20, 30, rng=np.random.RandomState(7))[0] == pytest.approx(ref, rel=1e-9)
    # one subset's MMD^2 is torchmetrics' estimator on the same draws (feats2's subset first, then feats1's)
    from torchmetrics.image.kid import poly_mmd

    rs = np.random.RandomState(7)
    ix, iy = rs.choice(len(f2), 30, replace=False), rs.choice(len(f3), 30, replace=False)
    tm = float(poly_mmd(torch.from_numpy(f3[iy]), torch.from_numpy(f2[ix]), degree=3, coef=1.0))
    assert kernel_distance(f3, f2, 1, 30, rng=np.random.RandomState(7))[0] == pytest.approx(tm, rel=1e-9)


def test_inception_score_matches_torchmetrics():
    from torchmetrics.image.inception import InceptionScore as TMIS

    torch.manual_seed(0)
    class Tiny(torch.nn.Module):  # a random tiny "classifier" standing in for Inception-v3
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 8 * 8, 12)

        def forward(self, x):
            return self.fc(x.float().flatten(1) / 64)

    net = Tiny()
    imgs = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    tm = TMIS(feature=net, splits=1)
    tm.update(imgs)
    tm_mean, _ = tm.compute()
    ours = InceptionScore(splits=1)
    with torch.no_grad():
        for i in range(0, 40, 16):  # streamed in uneven batches
            ours.update(net(imgs[i:i + 16]))
    assert ours.compute()[0] == pytest.approx(float(tm_mean), rel=1e-5)
    # several splits: round robin over samples, each split's IS by the textbook formula
    ours10 = InceptionScore(splits=4)
    with torch.no_grad():
        logits = net(imgs).double()
    ours10.update(logits)
    p = logits.softmax(1).numpy()
    scores = [np.exp(np.mean(np.sum(q * (np.log(q) - np.log(q.mean(0))), 1))) for q in (p[k::4] for k in range(4))]
    assert ours10.compute()[0] == pytest.approx(np.mean(scores), rel=1e-9)


def test_reference_stats_roundtrip_and_refusals(tmp_path):
    s = FeatureStats(keep=50)
    s.update(_feats(200, 8, 6))
    ref = ReferenceStats.from_stats(s, "digits-cnn:abc", "32x32", "train:200:xyz", "data/x")
    path = ref.save(tmp_path / "ref.npz")
    back = ReferenceStats.load(path)
    np.testing.assert_array_equal(back.mu, ref.mu)
    np.testing.assert_array_equal(back.sigma, ref.sigma)
    assert (back.count, back.extractor_id, back.resolution, back.reference_id) == (200, "digits-cnn:abc", "32x32",
                                                                                  "train:200:xyz")
    assert back.features.shape == (50, 8)
    check_compatible(back, "digits-cnn:abc", "32x32")
    with pytest.raises(StatsMismatch, match="extractor 'digits-cnn:abc'.*'inception"):
        check_compatible(back, "inception-v3-cleanfid:1", "32x32")
    with pytest.raises(StatsMismatch, match="32x32.*64x64"):
        check_compatible(back, "digits-cnn:abc", "64x64")
    check_compatible(back, "digits-cnn:abc", "64x64", check_resolution=False)
    with pytest.raises(StatsMismatch, match="30 samples for 64-d"):
        require_samples(30, 64, "images")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(StatsMismatch, match="bad.npz"):
        ReferenceStats.load(tmp_path / "bad.npz")


# ---------------------------------------------------------------- extractors and the evaluate step

@pytest.fixture(scope="module")
def digits_net(digits_tiny, tmp_path_factory):
    """A small digits network trained for a few steps (~1 s): features with real spread for the cross-checks."""
    import torch.nn.functional as F

    from shared.toy import features
    from shared.toy.dataset import load_arrays

    torch.manual_seed(0)
    x, d, c = load_arrays(digits_tiny / "train")
    x, d, c = torch.from_numpy(x).permute(0, 3, 1, 2).float(), torch.from_numpy(d), torch.from_numpy(c)
    net = features.DigitsNet(width=8, feature_dim=16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(30):
        idx = torch.randint(0, len(x), (32,))
        ld, lc = net(x[idx])
        loss = F.cross_entropy(ld, d[idx]) + F.cross_entropy(lc, c[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("net") / "features.safetensors"
    features.save(net.eval(), path)
    return path


def _eval(tmp_path, **kw):
    from shared import evaluate

    cfg = {"experiment": "t", "scale": "tiny", "out": str(tmp_path / "out.json"), "batch_size": 32,
           "reference_stats": str(tmp_path / "ref.npz"), **kw}
    return evaluate.main(cfg)


def test_evaluate_real_vs_real(digits_tiny, digits_net, tmp_path):
    r = _eval(tmp_path, images=str(digits_tiny / "test"), reference=str(digits_tiny / "train"),
              extractor=f"digits:{digits_net}", metrics=["fd", "kid", "prompt_accuracy"],
              checkpoint="none", sampler="none", steps=0)
    on_disk = json.loads((tmp_path / "out.json").read_text())
    assert on_disk == json.loads(json.dumps(r))
    assert {k: r[k] for k in ("experiment", "checkpoint", "sampler", "steps", "scale")} == \
        {"experiment": "t", "checkpoint": "none", "sampler": "none", "steps": 0, "scale": "tiny"}
    by = {e["metric"]: e for e in r["metrics"]}
    assert set(by) == {"fd", "kid", "prompt_accuracy", "prompt_accuracy_digit", "prompt_accuracy_colour"}
    for e in r["metrics"]:
        assert set(e) >= {"metric", "value", "num_samples", "reference_id", "extractor_id"}
        assert e["extractor_id"].startswith("digits-cnn:") and e["num_samples"] == 80
    assert by["fd"]["value"] > 0 and by["fd"]["reference_id"].startswith("train:160:")
    assert 0 <= by["prompt_accuracy"]["value"] <= min(by["prompt_accuracy_digit"]["value"],
                                                      by["prompt_accuracy_colour"]["value"])
    assert (tmp_path / "ref.npz").is_file() and (tmp_path / "out.config.yaml").is_file()
    # the cached statistics are reused, and a .npz reference gives the same numbers
    r2 = _eval(tmp_path, images=str(digits_tiny / "test"), reference=str(tmp_path / "ref.npz"),
               extractor=f"digits:{digits_net}", metrics=["fd"], out=str(tmp_path / "out2.json"))
    assert r2["metrics"][0]["value"] == pytest.approx(by["fd"]["value"], rel=1e-12)
    assert r2["metrics"][0]["reference_id"] == by["fd"]["reference_id"]


def test_evaluate_fd_equals_cleanfid_compute_fid(digits_tiny, digits_net, tmp_path):
    from cleanfid import fid as cf

    from shared.toy import features

    net = features.load(digits_net)
    r = _eval(tmp_path, images=str(digits_tiny / "test"), reference=str(digits_tiny / "train"),
              extractor=f"digits:{digits_net}", metrics=["fd"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = cf.compute_fid(str(digits_tiny / "test"), str(digits_tiny / "train"), mode="clean",
                             custom_feat_extractor=lambda x: net.features(x), custom_fn_resize=lambda x: x,
                             device=torch.device("cpu"), num_workers=0, verbose=False, use_dataparallel=False)
    assert r["metrics"][0]["value"] == pytest.approx(ref, rel=1e-5)


def test_unreadable_images_are_skipped_and_counted(digits_tiny, digits_net, tmp_path):
    images = tmp_path / "imgs"
    shutil.copytree(digits_tiny / "test", images)
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    (images / "broken.txt").write_text("a red handwritten one")
    (images / "empty.jpg").write_bytes(b"")
    r = _eval(tmp_path, images=str(images), reference=str(digits_tiny / "train"),
              extractor=f"digits:{digits_net}", metrics=["fd", "prompt_accuracy"])
    assert (r["num_images_found"], r["num_images_read"], r["num_unreadable"]) == (82, 80, 2)
    assert sorted(u.split(":")[0] for u in r["unreadable"]) == ["broken.png", "empty.jpg"]
    assert all(e["num_samples"] == 80 for e in r["metrics"])


def test_evaluate_refuses_mismatched_reference(digits_tiny, digits_net, tmp_path):
    from shared.toy import features

    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    features.save(features.DigitsNet(width=8, feature_dim=16).eval(), other)
    _eval(tmp_path, images=str(digits_tiny / "test"), reference=str(digits_tiny / "train"),
          extractor=f"digits:{digits_net}", metrics=["fd"])
    with pytest.raises(StatsMismatch, match="computed with extractor"):
        _eval(tmp_path, images=str(digits_tiny / "test"), reference=str(tmp_path / "ref.npz"),
              extractor=f"digits:{other}", metrics=["fd"])
    with pytest.raises(ValueError, match="unknown metric"):
        _eval(tmp_path, images=str(digits_tiny / "test"), reference=str(tmp_path / "ref.npz"),
              extractor=f"digits:{digits_net}", metrics=["fdd"])


def test_prompt_accuracy_counts():
    from shared.toy.prompt_accuracy import PromptAccuracy

    acc = PromptAccuracy()
    d = np.eye(10)[[7, 1, 3]]
    c = np.eye(8)[[0, 2, 0]]  # red, blue, red
    acc.update(d, c, ["a red handwritten seven", "a green handwritten one", "a red handwritten four"])
    acc.update(d[:1], c[:1], ["no digit here"])
    assert acc.compute() == {"digit": pytest.approx(2 / 3), "colour": pytest.approx(2 / 3),
                             "joint": pytest.approx(1 / 3)}
    assert acc.unparsed == 1


def test_cli_runs_as_module(digits_tiny, digits_net, tmp_path, repo_root):
    import subprocess
    import sys

    out = tmp_path / "cli.json"
    cmd = [sys.executable, "-m", "shared.evaluate", f"images={digits_tiny / 'test'}",
           f"reference={digits_tiny / 'train'}", f"extractor=digits:{digits_net}", "metrics=[fd,prompt_accuracy]",
           "experiment=real_test_vs_train", "checkpoint=none", "sampler=none", "steps=0", f"out={out}",
           f"reference_stats={tmp_path / 'cli_ref.npz'}"]
    p = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(out.read_text())["metrics"][0]["metric"] == "fd"


# ---------------------------------------------------------------- Inception-v3 (clean-fid's TorchScript), offline

class _FakeInceptionLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 13, stride=13)
        self.fc = torch.nn.Linear(8, 2048)

    def forward(self, x):
        return torch.relu(self.fc(self.conv(x).mean((2, 3))))[:, :, None, None]


class _FakeInception(torch.nn.Module):
    """Same interface as clean-fid's inception-2015-12-05.pt (`layers`, `output`), random tiny weights."""

    def __init__(self):
        super().__init__()
        self.layers = _FakeInceptionLayers()
        self.output = torch.nn.Linear(2048, 1008)

    def forward(self, img, return_features: bool = False):
        f = self.layers((img - 128) / 128).reshape(-1, 2048)
        return f if return_features else self.output(f)


@pytest.fixture(scope="module")
def fake_inception(tmp_path_factory):
    d = tmp_path_factory.mktemp("inception")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(_FakeInception()).save(str(d / "inception-2015-12-05.pt"))
    return d


@pytest.fixture(scope="module")
def small_folder(digits_tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("small") / "imgs"
    d.mkdir()
    for p in sorted((digits_tiny / "test").glob("*.png"))[:12]:
        shutil.copy(p, d / p.name)
        shutil.copy(p.with_suffix(".txt"), d / p.with_suffix(".txt").name)
    return d


def test_inception_extractor_matches_cleanfid(fake_inception, small_folder):
    from cleanfid import fid as cf
    from cleanfid.inception_torchscript import InceptionV3W

    from shared.metrics.extractors import build_extractor
    from shared.metrics.images import image_files, read_image

    ext = build_extractor(f"inception:{fake_inception / 'inception-2015-12-05.pt'}")
    assert ext.id.startswith("inception-v3-cleanfid:") and ext.id.endswith(":clean") and ext.dim == 2048
    files = image_files(small_folder)[:6]
    out = ext.outputs(ext.batch_tensor([read_image(f) for f in files]), logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = InceptionV3W(str(fake_inception), download=False).eval()
    ref = cf.get_files_features(files, model=lambda x: model(x), num_workers=0, batch_size=4,
                                device=torch.device("cpu"), mode="clean", verbose=False)
    np.testing.assert_allclose(out["features"].numpy(), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["logits"].numpy(), ref @ model.base.output.weight.detach().numpy().T,
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        build_extractor(f"inception:{small_folder}")
    with pytest.raises(ValueError, match="expected '<name>:<path>'"):
        build_extractor("resnet:x")


def test_inception_inside_extractor_feeds_images_as_they_are(fake_inception, small_folder):
    """StyleGAN/EDM protocol: the images go into the network unresized (it resizes inside its graph)."""
    from cleanfid.inception_torchscript import InceptionV3W

    from shared.metrics.extractors import build_extractor, inception_inside_id
    from shared.metrics.images import image_files, read_image

    ext = build_extractor(f"inception_inside:{fake_inception}")
    assert ext.id == inception_inside_id(fake_inception) and ext.id.endswith(":inside")
    images = [read_image(f) for f in image_files(small_folder)[:4]]
    x = ext.batch_tensor(images)
    assert x.shape[-2:] == images[0].shape[:2]  # no resize outside the network
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = InceptionV3W(str(fake_inception), download=False, resize_inside=True).eval()
    want = model(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float())
    np.testing.assert_allclose(ext.outputs(x)["features"].numpy(), want.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_inception_score_and_too_few_samples_through_evaluate(fake_inception, small_folder, tmp_path):
    r = _eval(tmp_path, images=str(small_folder), extractor=f"inception:{fake_inception}",
              metrics=["inception_score"], is_splits=2)
    e = r["metrics"][0]
    assert e["metric"] == "inception_score" and 1.0 <= e["value"] <= 1008 and e["num_samples"] == 12
    with pytest.raises(StatsMismatch, match="12 samples for 2048-d"):
        _eval(tmp_path, images=str(small_folder), reference=str(small_folder),
              extractor=f"inception:{fake_inception}", metrics=["fid"])


def test_toy_inception_score_on_digits(digits_tiny, digits_net, tmp_path):
    r = _eval(tmp_path, images=str(digits_tiny / "test"), extractor=f"digits:{digits_net}",
              metrics=["inception_score"])
    e = r["metrics"][0]
    assert 1.0 <= e["value"] <= 10.0 and e["splits"] == 2 and e["extractor_id"].startswith("digits-cnn:")


# ---------------------------------------------------------------- CLIP score with a tiny local CLIP

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random tiny CLIP in transformers format with a word-level tokenizer over the captions' words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              PreTrainedTokenizerFast)

    from shared.toy.dataset import COLOUR_NAMES, DIGIT_WORDS

    specials = ["<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>"]
    words = ["a", "photo", "depicts", "handwritten", *COLOUR_NAMES, *DIGIT_WORDS]
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<|startoftext|> $A <|endoftext|>",
                                                       special_tokens=[("<|startoftext|>", 2), ("<|endoftext|>", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                        pad_token="<|pad|>", unk_token="<|unk|>")
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=2, eos_token_id=3,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(cfg).save_pretrained(d)
    processor = CLIPProcessor(tokenizer=tokenizer, image_processor=CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
    processor.save_pretrained(d)
    return d


def test_clip_score_matches_clip_logits_and_torchmetrics(tiny_clip, small_folder):
    from torchmetrics.multimodal.clip_score import CLIPScore

    from shared.metrics.clip_score import ClipScorer
    from shared.metrics.images import image_files, read_image

    cs = ClipScorer(tiny_clip, prefix="A photo depicts ")
    assert len(cs.processor.tokenizer) == 4 + 4 + 8 + 10  # a real vocabulary, not a silent 3-token one
    files = image_files(small_folder)[:4]
    images = [read_image(f) for f in files]
    texts = [f.with_suffix(".txt").read_text().strip() for f in files]
    cos = cs.cosine(images, texts)
    # independent path: CLIPModel's own logits are logit_scale * cosine
    inputs = cs.processor(text=["A photo depicts " + t for t in texts], images=images, return_tensors="pt",
                          padding=True)
    with torch.no_grad():
        out = cs.model(**inputs)
    np.testing.assert_allclose(cos, (out.logits_per_image.diagonal() / cs.model.logit_scale.exp()).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(cos, ClipScorer(tiny_clip).cosine(images, texts))  # the prefix is used

    class Adapter(torch.nn.Module):  # torchmetrics 1.9 expects tensors from get_*_features (transformers 5)
        def __init__(self, m):
            super().__init__()
            self.m, self.config = m, m.config

        def get_image_features(self, *a, **k):
            return self.m.get_image_features(*a, **k).pooler_output

        def get_text_features(self, *a, **k):
            return self.m.get_text_features(*a, **k).pooler_output

    tm = CLIPScore(model_name_or_path=lambda: (Adapter(cs.model), cs.processor))
    tm.update([torch.from_numpy(im).permute(2, 0, 1) for im in images], ["A photo depicts " + t for t in texts])
    assert float(tm.compute()) == pytest.approx(max(100 * cos.mean(), 0.0), rel=1e-5, abs=1e-5)


def test_clip_score_through_evaluate(tiny_clip, small_folder, tmp_path):
    r = _eval(tmp_path, images=str(small_folder), metrics=["clip_score"], clip=str(tiny_clip),
              clip_prefix="A photo depicts ")
    by = {e["metric"]: e for e in r["metrics"]}
    assert set(by) == {"clip_score", "clip_score_x100"}
    assert -1 <= by["clip_score"]["value"] <= 1 and by["clip_score"]["num_samples"] == 12
    assert by["clip_score_x100"]["value"] == pytest.approx(max(100 * by["clip_score"]["value"], 0))
    assert by["clip_score"]["extractor_id"].startswith("clip:tiny-clip:")


# ---------------------------------------------------------------- reconstruction metrics

def test_psnr_ssim_match_torchmetrics():
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    from shared.metrics.recon import psnr, ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 40, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    ta, tb = (torch.from_numpy(x).permute(2, 0, 1)[None].double() for x in (a, b))
    assert psnr(b, a) == pytest.approx(float(PeakSignalNoiseRatio(data_range=255.0)(tb, ta)), rel=1e-6)
    tm_ssim = StructuralSimilarityIndexMeasure(data_range=255.0, return_full_image=True)
    tm_value, tm_map = tm_ssim(tb, ta)
    assert ssim(b, a, border="reflect") == pytest.approx(float(tm_value), rel=1e-6)
    # "valid" = the same SSIM map without the 5-pixel reflect-padded border (skimage's cropping)
    assert ssim(b, a) == pytest.approx(float(tm_map[..., 5:-5, 5:-5].mean()), rel=1e-6)
    assert ssim(a, a) == pytest.approx(1.0) and psnr(a, a) > 100


def test_codebook_stats():
    from shared.metrics.recon import codebook_stats

    s = codebook_stats(np.array([[0, 1], [2, 3]]), 8)
    assert s["usage"] == 0.5 and s["perplexity"] == pytest.approx(4.0) and s["num_tokens"] == 4
    assert codebook_stats(np.zeros(10, int), 4)["perplexity"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outside 0..3"):
        codebook_stats(np.array([4]), 4)


def test_reconstruction_metrics_through_evaluate(digits_tiny, digits_net, tmp_path):
    from PIL import Image

    recon = tmp_path / "recon"
    recon.mkdir()
    rng = np.random.default_rng(0)
    for p in sorted((digits_tiny / "test").glob("*.png"))[:40]:  # "reconstructions": noisy originals
        x = np.asarray(Image.open(p)).astype(np.float64)
        Image.fromarray(np.clip(x + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8)).save(recon / p.name)
    np.save(tmp_path / "codes.npy", rng.integers(0, 16, (40, 8, 8)))
    r = _eval(tmp_path, images=str(recon), reference=str(digits_tiny / "test"), extractor=f"digits:{digits_net}",
              metrics=["rfid", "psnr", "ssim", "ssim_reflect", "codebook_usage", "codebook_perplexity"],
              codes=str(tmp_path / "codes.npy"), codebook_size=32, reference_stats=str(tmp_path / "orig.npz"))
    by = {e["metric"]: e for e in r["metrics"]}
    assert by["rfid"]["value"] > 0 and by["rfid"]["reference_id"].startswith("test:80:")
    assert 25 < by["psnr"]["value"] < 40 and 0 < by["ssim"]["value"] < 1 and 0 < by["ssim_reflect"]["value"] < 1
    assert by["psnr"]["num_samples"] == 40 and by["psnr"]["unpaired"] == 0
    assert by["codebook_usage"]["value"] == 0.5 and 14 < by["codebook_perplexity"]["value"] <= 16
