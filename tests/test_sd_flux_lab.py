"""sd_flux_lab at tiny scale: pipeline presets, folder prompts, train_sd (SD1.5 + SDXL, resume, options),
train_vae, train_transformer, base.py, make_samples, crop_images. Step mains run in-process (one thread)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from projects.sd_flux_lab import base, crop_images, make_samples, models, prepare, train_sd, train_transformer, \
    train_vae
from projects.sd_flux_lab.data import BucketBatches, BucketedImages, make_buckets, nearest_bucket
from projects.sd_flux_lab.loss import EpsilonLoss, FlowMatchingLoss, VPredictionLoss
from shared.data import list_images

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # a busy 2-core machine: more threads spin instead of working


@pytest.fixture(scope="module")
def lab(digits_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("sfl") / "lab"
    prepare.main({"scale": "tiny", "digits_dir": str(digits_tiny), "out_dir": str(out), "caption_files": True,
                  "cap_every": 7})
    return out


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipes")
    for arch in models.ARCHS:
        base.main({"scale": "tiny", "arch": arch, "out_dir": str(root / f"base_{arch}")})
    return {arch: root / f"base_{arch}" / "pipeline" for arch in models.ARCHS}


def test_clip_tokenizer_is_real_clip():
    import open_clip

    tok = models.clip_tokenizer()
    assert len(tok) == models.CLIP_VOCAB_SIZE
    for text in ["a blue handwritten seven", "Hello, WORLD!! 123 naïve café"]:
        ids = tok(text).input_ids  # open_clip pads with 0, SD's tokenizer with <|endoftext|>: compare unpadded
        reference = [i for i in open_clip.tokenize([text])[0].tolist() if i != 0]
        assert ids == reference and len(ids) > 4


def test_presets_build_save_load(pipelines):
    for arch, folder in pipelines.items():
        assert models.arch_of(folder) == arch
        pipe = models.load_pipeline(folder)
        assert type(pipe).__name__ == models.PIPELINE_CLASSES[arch].__name__
        assert len(pipe.tokenizer) == models.CLIP_VOCAB_SIZE
        if arch == "sdxl":
            assert pipe.unet.config.addition_embed_type == "text_time" and pipe.text_encoder_2 is not None
        ref = models.build_pipeline(arch, "tiny")  # same seed -> same weights as the saved one
        a = ref.unet.state_dict()
        assert all(torch.equal(a[k], v) for k, v in pipe.unet.state_dict().items())
    with pytest.raises(ValueError, match="no pipeline preset"):
        models.get_preset("sd15", "huge")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        models.load_pipeline(REPO / "projects")


def test_controlnet_matches_vae(pipelines):
    from diffusers import StableDiffusionControlNetPipeline

    pipe = models.load_pipeline(pipelines["sd15"])
    cn = models.build_controlnet(pipe.unet, pipe.vae)
    assert len(cn.config.conditioning_embedding_out_channels) == len(pipe.vae.config.block_out_channels)
    cpipe = StableDiffusionControlNetPipeline(**pipe.components, controlnet=cn)
    cpipe.set_progress_bar_config(disable=True)
    out = cpipe("a red handwritten one", image=Image.new("RGB", (32, 32)), num_inference_steps=1,
                output_type="np", height=32, width=32).images
    assert out.shape == (1, 32, 32, 3)


def test_prepare_folder_prompts_and_cap_override(lab):
    listing = list_images(lab / "train")
    counts = json.loads((lab / "counts.json").read_text())
    assert counts["train"]["images"] == len(listing.items) == 160
    by_source = listing.counts["by_source"]
    assert by_source["folder"] > 0 and by_source["cap"] > 0  # prepare wrote .cap files for every 7th image
    for item in listing.items:
        colour, word = item.path.split("/")[:2]
        assert item.prompt == word.replace("_", " ") and colour.lstrip("_") in item.prompt
    blue = list_images(lab / "train" / "_blue")
    assert blue.items and all(i.prompt.startswith("a blue handwritten") for i in blue.items)
    assert len(list(( lab / "reference" / "subset").glob("*.png"))) == len(blue.items)
    # an override wins over the folder name, `__` folders are skipped
    (lab / "extra" / "__skip").mkdir(parents=True)
    (lab / "extra" / "a_cat").mkdir()
    Image.new("RGB", (8, 8)).save(lab / "extra" / "__skip" / "x.png")
    Image.new("RGB", (8, 8)).save(lab / "extra" / "a_cat" / "y.png")
    Image.new("RGB", (8, 8)).save(lab / "extra" / "a_cat" / "z.png")
    (lab / "extra" / "a_cat" / "z.cap").write_text("# comment\na dog\n")
    extra = list_images(lab / "extra")
    assert [(i.path, i.prompt) for i in extra.items] == [("a_cat/y.png", "a cat"), ("a_cat/z.png", "a dog")]


def test_train_sd_list(lab, capsys):
    from projects.sd_flux_lab.data import list_flag
    from shared.config import cli

    counts = cli(train_sd.main, train_sd.Config, train_sd.PRESETS,
                 argv=list_flag(["--list", "scale=tiny", f"data_dir={lab / 'train' / '_blue'}"]))
    lines = capsys.readouterr().out.strip().splitlines()
    n = len(list_images(lab / "train" / "_blue").items)
    assert counts["images"] == n and sum("\ta blue handwritten " in line for line in lines) == n
    assert lines[-1].startswith(f"{n} images under")


def test_train_sd_sd15_resume_and_single_file(lab, pipelines, tmp_path):
    run = tmp_path / "ft"
    cfg = {"scale": "tiny", "base": str(pipelines["sd15"]), "data_dir": str(lab / "train" / "_blue"),
           "run_dir": str(run), "progress": False, "ema_decay": 0.9, "t_max": 700, "noise_offset": 0.05,
           "caption_dropout": 0.5, "cache_latents": True}
    train_sd.main(dict(cfg, max_steps=2))
    first = (run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    train_sd.main(dict(cfg, max_steps=4))  # resumes from step 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2, 3, 4]
    assert (run / "checkpoints" / "ckpt-00000004").is_dir() and (run / "samples" / "step_0000004.png").is_file()
    assert (run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() != first
    pipe = models.load_pipeline(run / "pipeline")
    assert isinstance(pipe, models.PIPELINE_CLASSES["sd15"])

    # the UNet from an original-format single file (our converter's output) replaces the base's
    from projects.sd_flux_lab import convert
    single = tmp_path / "ft.safetensors"
    convert.main({"pipeline": str(run), "out": str(single)})
    run2 = tmp_path / "from_single"
    train_sd.main(dict(cfg, base=str(pipelines["sd15"]), unet_single_file=str(single), max_steps=0,
                       run_dir=str(run2), ema_decay=0.0))
    a, b = pipe.unet.state_dict(), models.load_pipeline(run2).unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_sd_sdxl_from_preset_vpred_buckets(tmp_path):
    # a folder of non-square images: buckets group them by aspect ratio
    root = tmp_path / "pics"
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(48, 32)] * 4 + [(32, 48)] * 4 + [(40, 40)] * 2):
        d = root / ("wide_thing" if w > h else "tall_thing" if h > w else "square_thing")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.png")
    run = tmp_path / "xl"
    out = train_sd.main({"scale": "tiny", "base": "preset", "arch": "sdxl", "data_dir": str(root),
                         "run_dir": str(run), "progress": False, "buckets": True, "resolution": 32,
                         "batch_size": 2, "prediction_type": "v_prediction", "snr_gamma": 5.0, "crop": "random",
                         "hflip": 0.5, "max_steps": 3, "cache_latents": True})
    assert out["arch"] == "sdxl"
    pipe = models.load_pipeline(run / "pipeline")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert isinstance(pipe, models.PIPELINE_CLASSES["sdxl"])


def test_latent_cache_with_several_buckets(tmp_path):
    from projects.sd_flux_lab.data import cache_latents

    root = tmp_path / "pics"
    rng = np.random.default_rng(1)
    for i, (w, h) in enumerate([(48, 32), (32, 48), (40, 40), (48, 32), (32, 48)]):
        (root / "thing").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "thing" / f"{i}.png")
    images = BucketedImages(list_images(root), 32, buckets=True, multiple=8)
    vae = models.build_pipeline("sd15", "tiny").vae
    cached = cache_latents(images, vae, tmp_path / "latents.safetensors", batch_size=1)
    assert len(set(images.item_bucket)) == 3
    with torch.no_grad():
        for i in range(len(images)):
            want = vae.encode(images[i]["pixels"][None]).latent_dist
            got = cached[i]
            assert got["latent_mean"].shape == want.mean.shape[1:]  # each bucket keeps its own latent shape
            assert torch.allclose(got["latent_mean"], want.mean[0], atol=1e-5)
            assert torch.allclose(got["latent_std"], want.std[0], atol=1e-5)
            assert got["bucket"] == images.item_bucket[i] and torch.equal(got["sizes"], images[i]["sizes"])

    def no_encoding(*a, **k):
        raise AssertionError("the cache should have been reused")

    vae.encode = no_encoding
    again = cache_latents(images, vae, tmp_path / "latents.safetensors")
    assert torch.equal(again[4]["latent_mean"], cached[4]["latent_mean"])


def test_buckets_and_batches(lab):
    buckets = make_buckets(32, 8)
    assert (32, 32) in buckets and all(h % 8 == 0 and w % 8 == 0 for h, w in buckets)
    assert buckets[nearest_bucket(buckets, 100, 200)][1] > buckets[nearest_bucket(buckets, 100, 200)][0]
    ds = BucketedImages(list_images(lab / "train"), 32)
    loader = BucketBatches(ds, 8, seed=1)
    it = iter(loader)
    first = [next(it)["key"] for _ in range(3)]
    state = loader.state_dict()
    rest = [b["key"] for b in it]
    again = BucketBatches(ds, 8, seed=1)
    again.load_state_dict(state)
    assert [b["key"] for b in again] == rest and len(first + rest) == len(loader)
    with pytest.raises(ValueError, match="lower batch_size"):
        BucketBatches(ds, 1000)


def test_losses():
    sched = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    seen = []

    def zero(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    x0 = torch.randn(16, 4, 4, 4)
    g = torch.Generator().manual_seed(0)
    eps = EpsilonLoss(sched, t_min=0, t_max=700)(zero, x0, g)
    assert all(int(t.max()) < 700 for t in seen) and abs(float(eps) - 1) < 0.2  # E[noise^2] = 1
    loss = EpsilonLoss(sched, snr_gamma=5.0)
    snr = loss.snr[[10, 500, 990]]
    assert torch.allclose(loss.snr_weight(snr), torch.clamp(snr, max=5.0) / snr)
    v = VPredictionLoss(sched, snr_gamma=5.0)
    assert torch.allclose(v.snr_weight(snr), torch.clamp(snr, max=5.0) / (snr + 1))
    with pytest.raises(ValueError, match="timestep range"):
        EpsilonLoss(sched, t_min=800, t_max=700)
    # flow matching: the exact velocity (noise - x0) gives zero loss
    fm = FlowMatchingLoss("uniform")
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    noise = torch.randn(x0.shape, generator=g2)
    s = fm.sample_s(16, g2, "cpu").view(-1, 1, 1, 1)
    assert float(fm(lambda x, t: noise - x0, x0, g1)) < 1e-10
    assert float(fm(lambda x, t: torch.zeros_like(x), x0, torch.Generator().manual_seed(3))) > 0.5
    assert s.min() >= 0 and s.max() <= 1


def test_train_vae_with_gan(lab, tmp_path):
    m = train_vae.main({"scale": "tiny", "data_dir": str(lab / "train" / "_blue"), "run_dir": str(tmp_path / "v"),
                        "progress": False, "gan_weight": 0.1, "gan_start": 1})
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(tmp_path / "v" / "vae")
    assert vae.config.scaling_factor == pytest.approx(m["scaling_factor"]) and m["scaling_factor"] > 0
    rows = [json.loads(line) for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    assert any("d_loss" in r for r in rows)


def test_perceptual_distances(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    from projects.sd_flux_lab.loss import build_perceptual
    from shared.toy import features

    torch.manual_seed(0)
    vgg = torchvision.models.vgg16().features
    save_file({f"features.{k}": v.contiguous() for k, v in vgg.state_dict().items()}, str(tmp_path / "vgg.safetensors"))
    features.save(features.DigitsNet(), tmp_path / "digits.safetensors")
    a = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    b = torch.rand(2, 3, 32, 32) * 2 - 1
    for spec in (f"vgg16:{tmp_path / 'vgg.safetensors'}", f"digits:{tmp_path / 'digits.safetensors'}"):
        dist = build_perceptual(spec)
        assert float(dist(b, b)) == pytest.approx(0.0, abs=1e-10)
        d = dist(a, b)
        d.backward()
        assert float(d.detach()) > 0 and a.grad.abs().sum() > 0 and not any(p.requires_grad for p in dist.parameters())
        a.grad = None
    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a torchvision VGG16 state dict"):
        build_perceptual(f"vgg16:{tmp_path / 'other.safetensors'}")
    with pytest.raises(ValueError, match="expected '<name>:<weights path>'"):
        build_perceptual("lpips")


def test_train_vae_with_perceptual_term(lab, tmp_path):
    from shared.toy import features

    features.save(features.DigitsNet(), tmp_path / "digits.safetensors")
    train_vae.main({"scale": "tiny", "data_dir": str(lab / "train" / "_blue"), "run_dir": str(tmp_path / "v"),
                    "progress": False, "perceptual": f"digits:{tmp_path / 'digits.safetensors'}",
                    "perceptual_weight": 0.5})
    rows = [json.loads(line) for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["perceptual"] > 0 for r in rows if "loss" in r)
    with pytest.raises(ValueError, match="needs perceptual="):
        train_vae.main({"scale": "tiny", "data_dir": str(lab / "train" / "_blue"), "run_dir": str(tmp_path / "w"),
                        "perceptual_weight": 0.5})


def test_train_transformer_resumes(lab, tmp_path):
    cfg = {"scale": "tiny", "data_dir": str(lab / "train" / "_blue"), "run_dir": str(tmp_path / "f"),
           "progress": False}
    train_transformer.main(dict(cfg, max_steps=2))
    train_transformer.main(dict(cfg, max_steps=3))
    rows = [json.loads(line) for line in (tmp_path / "f" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    from diffusers import FluxTransformer2DModel
    assert FluxTransformer2DModel.from_pretrained(tmp_path / "f" / "transformer").config.num_layers == 1
    assert (tmp_path / "f" / "samples" / "step_0000003.png").is_file()


def test_pack_unpack_roundtrip():
    x = torch.randn(2, 4, 8, 6)
    assert torch.equal(train_transformer.unpack(train_transformer.pack(x), 4, 8, 6), x)


def test_make_samples_and_base_link(lab, pipelines, tmp_path):
    out = tmp_path / "s"
    make_samples.main({"scale": "tiny", "pipeline": str(pipelines["sdxl"]), "prompts_from": str(lab / "test"),
                       "exclude": "blue", "per_prompt": 1, "save_images": True, "out_dir": str(out)})
    caps = [p.read_text().strip() for p in (out / "images").glob("*.txt")]
    assert caps and not any("blue" in c for c in caps)
    assert len(list((out / "images").glob("*.png"))) == len(caps) and (out / "grid.png").is_file()
    # the same seed gives the same image whatever else is in the batch (up to float rounding of batched maths)
    first = (out / "images" / "00000.txt").read_text().strip()
    one = make_samples.main({"scale": "tiny", "pipeline": str(pipelines["sdxl"]), "prompts": [first],
                             "seeds": [0], "save_images": True, "out_dir": str(tmp_path / "one")})
    assert one["images"] == 1
    a = np.asarray(Image.open(tmp_path / "one" / "images" / "00000.png")).astype(int)
    b = np.asarray(Image.open(out / "images" / "00000.png")).astype(int)
    other = np.asarray(Image.open(out / "images" / "00001.png")).astype(int)
    assert np.abs(a - b).max() <= 2 < np.abs(a - other).max()
    linked = base.main({"scale": "toy", "arch": "sdxl", "source": str(pipelines["sdxl"].parent),
                        "out_dir": str(tmp_path / "b")})
    assert (linked / "model_index.json").is_file()
    with pytest.raises(ValueError, match="holds a sdxl pipeline"):
        base.main({"scale": "toy", "arch": "sd15", "source": str(pipelines["sdxl"]), "out_dir": str(tmp_path / "c")})


def test_crop_images_keeps_prompts(tmp_path):
    src = tmp_path / "in" / "a_red_car"
    src.mkdir(parents=True)
    Image.new("RGB", (64, 40), "red").save(src / "a.png")
    Image.new("RGB", (30, 60), "red").save(src / "b.png")
    (src / "b.cap").write_text("a red bus\n")
    (src / "c.png").write_bytes(b"not an image")
    for mode in crop_images.MODES:
        out = tmp_path / mode
        r = crop_images.main({"scale": "tiny", "in_dir": str(tmp_path / "in"), "out_dir": str(out), "mode": mode})
        assert r == {"images": 2, "skipped": 1, "skip_reasons": {"not_an_image": 1}}
        listing = list_images(out)
        assert [i.prompt for i in listing.items] == ["a red car", "a red bus"]
        sizes = [Image.open(out / i.path).size for i in listing.items]
        if mode != "bucket":
            assert sizes == [(32, 32), (32, 32)]
        else:
            assert sizes[0][0] > sizes[0][1] and sizes[1][1] > sizes[1][0]
