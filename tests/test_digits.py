"""The toy digits slice: deterministic dataset, captions, and the feature CNN's training and loading."""
import hashlib
import json

import numpy as np
import pytest
import torch

from shared.toy import features, prepare, train_features
from shared.toy.dataset import COLOUR_NAMES, caption, load_arrays, parse_caption, read_split


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in ("run.json", "config.yaml"):  # these record out_dir and time
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_prepare_is_deterministic_and_complete(digits_tiny, tmp_path):
    again = tmp_path / "again"
    prepare.main({"scale": "tiny", "out_dir": str(again)})
    assert _digest(digits_tiny) == _digest(again)
    train, test = read_split(digits_tiny / "train"), read_split(digits_tiny / "test")
    assert (len(train), len(test)) == (160, 80)
    for r in train[:20]:
        assert (digits_tiny / "train" / r.file).is_file()
        assert (digits_tiny / "train" / r.file).with_suffix(".txt").read_text().strip() == r.caption
        assert parse_caption(r.caption) == (r.digit, r.colour)
    images, digits, colours = load_arrays(digits_tiny / "test")
    assert images.shape == (80, 32, 32, 3) and images.dtype == np.uint8
    # the tint is the named colour: the brightest pixel's channel ratios follow the colour's
    i = int(np.argmax(images.reshape(80, -1).max(1)))
    px = images[i].reshape(-1, 3)[images[i].reshape(-1, 3).sum(1).argmax()].astype(float)
    from shared.toy.dataset import COLOURS
    ref = np.array(COLOURS[COLOUR_NAMES[colours[i]]], dtype=float)
    assert np.allclose(px / px.max(), ref / ref.max(), atol=0.08)


def test_train_and_test_sources_do_not_overlap():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(load_digits().target))
    tr, te = train_test_split(idx, test_size=0.2, stratify=load_digits().target, random_state=0)
    assert not set(tr) & set(te)


def test_caption_round_trip():
    for d in range(10):
        for c, name in enumerate(COLOUR_NAMES):
            assert parse_caption(caption(d, name)) == (d, c)
    assert parse_caption("A photo of a cat") is None
    assert parse_caption("A BLUE handwritten Nine, please") == (9, COLOUR_NAMES.index("blue"))


def test_broken_metadata_is_named(tmp_path):
    (tmp_path / "metadata.jsonl").write_text('{"file": "a.png"}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl:1: bad record"):
        read_split(tmp_path)
    with pytest.raises(FileNotFoundError, match="run shared/toy/prepare.py"):
        read_split(tmp_path / "missing")


def test_train_features_tiny_and_reload(digits_tiny, tmp_path):
    out = tmp_path / "feat"
    metrics = train_features.main({"scale": "tiny", "data_dir": str(digits_tiny), "out_dir": str(out)})
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["extractor_id"].startswith("digits-cnn:") and saved["num_test"] == 80
    assert 0.0 <= metrics["digit_accuracy"] <= 1.0
    model = features.load(out / "features.safetensors")
    assert model.extractor_id == saved["extractor_id"]
    x = torch.from_numpy(load_arrays(digits_tiny / "test")[0][:4]).permute(0, 3, 1, 2).float()
    assert model.features(x).shape == (4, 16)
    # the extractor resizes other resolutions itself (clean-fid passes whatever the images are)
    assert model.features(torch.nn.functional.interpolate(x, size=64)).shape == (4, 16)
    assert (out / "config.yaml").is_file() and (out / "run.json").is_file()
    with pytest.raises(ValueError, match="not a digits feature network"):
        from safetensors.torch import save_file
        save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        features.load(tmp_path / "other.safetensors")


# --- the digits diffusion model (shared/toy/train_diffusion.py, on shared.train.Trainer) ---------------------

def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(run_dir / "model" / "unet" / "diffusion_pytorch_model.safetensors")


def test_train_diffusion_exports_logs_and_resumes_exactly(digits_tiny, tmp_path):
    import shutil

    from diffusers import DDPMPipeline

    from shared.toy import train_diffusion

    cfg = {"scale": "tiny", "data_dir": str(digits_tiny), "max_steps": 6}
    straight = tmp_path / "straight"
    metrics = train_diffusion.main({**cfg, "out_dir": str(straight)})
    assert (metrics["resumed_from"], metrics["trained_steps"], metrics["threads"]) == (0, 6, 1)
    assert metrics["final_loss"] > 0
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["ckpt-00000004", "ckpt-00000006"]
    pipe = DDPMPipeline.from_pretrained(straight / "model")
    assert pipe.unet.config.num_class_embeds == 81 and pipe.unet.config.sample_size == 16
    assert pipe.scheduler.config.prediction_type == "epsilon"
    labels = json.loads((straight / "model" / "labels.json").read_text())
    assert (labels["image_size"], labels["null_label"], labels["train_step"]) == (32, 80, 6)
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "lr", "grad_norm", "skipped_steps"} <= rows[0].keys()

    # a copy "killed" after step 4: resuming must give the same weights, to the bit
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "ckpt-00000006")
    shutil.rmtree(resumed / "model")
    again = train_diffusion.main({**cfg, "out_dir": str(resumed)})
    assert (again["resumed_from"], again["trained_steps"]) == (4, 2)
    a, b = _weights(resumed), _weights(straight)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="trained with channels=.* asks for channels=\\[8, 8\\]"):
        train_diffusion.main({**cfg, "out_dir": str(resumed), "max_steps": 8, "channels": [8, 8]})


def test_train_diffusion_saves_on_ctrl_c_and_resumes_to_the_same_weights(digits_tiny, tmp_path, repo_root):
    """Ctrl-C (SIGINT) mid-run: the step saves, exits 75, and the same command ends where an uninterrupted run
    ends."""
    import signal
    import subprocess
    import sys
    import time

    from shared.toy import train_diffusion

    opts = ["scale=tiny", f"data_dir={digits_tiny}", "max_steps=40", "ckpt_every=0", "log_every=1"]
    run = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, str(repo_root / "shared/toy/train_diffusion.py"), *opts,
                             f"out_dir={run}"], cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 75, out[-2000:]
    stopped = json.loads((run / "preempted.json").read_text())
    assert stopped["signal"] == "SIGINT" and 2 <= stopped["step"] < 40
    assert not (run / "model").exists()
    again = train_diffusion.main({"scale": "tiny", "data_dir": str(digits_tiny), "max_steps": 40,
                                  "ckpt_every": 0, "out_dir": str(run)})
    assert again["resumed_from"] == stopped["step"]
    straight = train_diffusion.main({"scale": "tiny", "data_dir": str(digits_tiny), "max_steps": 40,
                                     "ckpt_every": 0, "out_dir": str(tmp_path / "straight")})
    a, b = _weights(run), _weights(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight["trained_steps"] == 40


def test_exported_unet_computes_what_the_trained_model_computes():
    from shared.config import resolve
    from shared.toy import train_diffusion

    cfg = resolve(train_diffusion.Config, {"scale": "tiny"}, train_diffusion.PRESETS)
    model = train_diffusion.build_model(cfg).eval()
    labels = torch.tensor([0, 17, 79, train_diffusion.NULL_LABEL])
    assert train_diffusion.class_label(2, 1) == 17
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([5, 500, 900, 999])
    with torch.no_grad():
        trained = model(x, t, labels)
        exported = train_diffusion.to_diffusers_unet(model, cfg)(x, t, class_labels=labels).sample
    torch.testing.assert_close(exported, trained, rtol=1e-5, atol=1e-5)


def test_min_snr_weighting_matches_its_definition():
    """The loss weights each sample's MSE by min(SNR, gamma) / SNR (Hang et al. 2023), SNR from diffusers."""
    from diffusers.training_utils import compute_snr

    from shared.config import resolve
    from shared.toy import train_diffusion

    cfg = resolve(train_diffusion.Config, {"scale": "tiny"}, train_diffusion.PRESETS)
    scheduler = train_diffusion.build_scheduler(cfg)
    alpha_bar = scheduler.alphas_cumprod
    t = torch.tensor([10, 500, 990])
    snr = compute_snr(scheduler, t)
    torch.testing.assert_close(snr, alpha_bar[t] / (1 - alpha_bar[t]))

    class Constant(torch.nn.Module):  # predicts 0, so the per-sample error is mean(noise^2)
        def forward(self, x, t, labels):
            return torch.zeros_like(x)

    x0 = torch.zeros(3, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=gen)
    times = torch.randint(0, 1000, (3,), generator=gen)
    expected = (noise.pow(2).mean(dim=(1, 2, 3)) * torch.clamp(compute_snr(scheduler, times), max=5.0)
                / compute_snr(scheduler, times)).mean()
    got = train_diffusion.diffusion_loss(Constant(), scheduler, x0, torch.zeros(3, dtype=torch.long),
                                         torch.Generator().manual_seed(0), 5.0)
    torch.testing.assert_close(got, expected)
