"""GLIDE train.py / sample.py / load_model at tiny scale: outputs, resume, what is trained, text cache, glide-finetune
option names, variant recognition, sharded sampling, data filters and layouts."""
import io
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from projects.glide_finetune import sample as sample_step
from projects.glide_finetune import train as train_step
from projects.glide_finetune.data import GlideFilter, make_loader, make_source
from projects.glide_finetune.glide_util import load_model, read_state_dict, sample as api_sample
from projects.glide_finetune.tokenizer import main as tokenizer_main
from shared.config import ConfigError, parse_argv, resolve
from shared.data import Filtered, write_shards


@pytest.fixture(autouse=True)
def keep_threads():
    """The tiny presets set torch to 1 thread in this process; give later tests back what they had."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_tiny):
    root = tmp_path_factory.mktemp("glide")
    threads = torch.get_num_threads()
    tokenizer_main({"scale": "tiny", "captions": str(digits_tiny / "train"), "out_dir": str(root / "tok")})
    base = dict(scale="tiny", data_dir=str(digits_tiny / "train"), tokenizer=str(root / "tok"))
    train_step.main({**base, "run_dir": str(root / "base")})
    torch.set_num_threads(threads)  # module-scoped: set up before the per-test thread guard
    return root, base, digits_tiny


def test_base_run_outputs_and_resume(setup):
    root, base, _ = setup
    run = root / "base"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = rows[-2]
    for key in ("loss", "mse", "grad_norm", "skipped_steps", "peak_mem_mb", "lr"):
        assert key in logged, key
    assert logged["step"] == 3 and logged["skipped_steps"] == 0
    info = json.loads((run / "glide.json").read_text())
    assert info["variant"] == "base" and info["options"]["n_vocab"] == 300 and info["step"] == 3
    assert (run / "samples" / "step_0000003.png").is_file()
    model, diffusion, opts = load_model(path=run)
    assert model.found.kind == "fine-tuned" and model.found.variant == "base" and diffusion.num_timesteps == 1000
    assert "train.py run (step 3)" in model.found.message and model.tokenizer.n_vocab == 300
    # starting the same command again with more steps resumes from the step-2 checkpoint... and goes on to 4
    summary = train_step.main({**base, "run_dir": str(run), "max_steps": 4})
    assert summary["steps"] == 4
    assert json.loads((run / "glide.json").read_text())["step"] == 4


def test_unet_only_fine_tune_with_text_cache(setup):
    root, base, _ = setup
    init = load_file(str(root / "base" / "model.safetensors"))
    summary = train_step.main({**base, "run_dir": str(root / "ft"), "train": "unet", "init": str(root / "base"),
                               "max_steps": 2, "batch_size": 8})
    # counts are per distinct caption of a batch; the second batch finds the repeats (the empty prompt at least)
    assert summary["text_cache_misses"] > 0 and summary["text_cache_hits"] >= 1
    after = load_file(str(root / "ft" / "model.safetensors"))
    text = [k for k in init if k.startswith(("transformer.", "token_embedding", "positional", "padding", "final_ln",
                                             "transformer_proj"))]
    assert text and all(torch.equal(init[k], after[k]) for k in text)  # the text side is frozen
    assert not torch.equal(init["input_blocks.0.0.weight"], after["input_blocks.0.0.weight"])
    found = json.loads((root / "ft" / "glide.json").read_text())
    assert found["train"] == "unet" and found["init"].endswith("model.safetensors")


def test_upsampler_run_and_ema_export(setup):
    root, base, _ = setup
    train_step.main({**base, "run_dir": str(root / "up"), "train_upsample": True, "uncond_p": 0.0, "max_steps": 1,
                     "ema_decay": 0.9, "test_steps": "2"})
    sd, meta = read_state_dict(root / "up" / "model.safetensors")
    assert meta["ema"] == "true" and sd["input_blocks.0.0.weight"].shape[1] == 6
    up, _, up_opts = load_model(path=root / "up", model_type="upsample")
    assert up.found.kind == "ema" and up.super_res and up_opts["image_size"] == 32
    with pytest.raises(ValueError, match="model_type='base-inpaint' but"):
        load_model(path=root / "up", model_type="base-inpaint")
    low = torch.rand(1, 3, 8, 8) * 2 - 1
    x = api_sample(up, up_opts, 32, 32, prompt="a red handwritten seven", image_to_upsample=low,
                   prediction_respacing="2", sampler="glide")
    assert x.shape == (1, 3, 32, 32)


def test_glide_finetune_command_line(tmp_path):
    argv = ["--data_dir", "pics", "--train_upsample", "False", "--batch_size", "4", "--learning_rate", "1e-4",
            "--side_x", "64", "--side_y", "64", "--uncond_p", "0.2", "--checkpoints_dir", str(tmp_path / "ck"),
            "--use_webdataset", "--wds_caption_key", "txt", "--wds_image_key", "jpg", "--wds_dataset_name", "laion",
            "--freeze_transformer", "--use_fp16", "--resume_ckpt", "x.pt", "--test_prompt", "a cat",
            "--test_batch_size", "3", "--log_frequency", "7"]
    cfg = resolve(train_step.Config, parse_argv(argv, train_step.Config, train_step.ALIASES), train_step.PRESETS)
    assert cfg.data_dir == "pics" and cfg.train_upsample is False and cfg.batch_size == 4
    assert cfg.learning_rate == 1e-4 and cfg.side_x == cfg.side_y == 64 and cfg.uncond_p == 0.2
    assert cfg.run_dir == str(tmp_path / "ck") and cfg.use_webdataset and cfg.wds_dataset_name == "laion"
    assert cfg.train == "unet" and cfg.mixed_precision == "fp16" and cfg.init == "x.pt"
    assert list(cfg.test_prompts) == ["a cat"] and list(cfg.test_seeds) == [0, 1, 2] and cfg.log_every == 7
    up = resolve(train_step.Config, parse_argv(["--train_upsample", "True", "--uncond_p", "0.0", "--upscale_factor",
                                                "4"], train_step.Config, train_step.ALIASES), train_step.PRESETS)
    assert up.train_upsample and up.uncond_p == 0.0 and up.upscale_factor == 4
    with pytest.raises(ConfigError, match="--device has no meaning here"):
        parse_argv(["--device", "cuda"], train_step.Config, train_step.ALIASES)


def test_bad_inputs_name_what_is_wrong(setup, tmp_path):
    root, base, _ = setup
    with pytest.raises(ConfigError, match="side_x=8, side_y=16"):
        train_step.main({**base, "run_dir": str(tmp_path / "a"), "side_y": 16})
    with pytest.raises(ConfigError, match="train_upsample=True but init .* is a GLIDE base"):
        train_step.main({**base, "run_dir": str(tmp_path / "b"), "train": "all", "init": str(root / "base"),
                         "train_upsample": True})
    with pytest.raises(FileNotFoundError, match="downloads/glide/base/base.pt: not downloaded"):
        load_model(model_type="base")
    with pytest.raises(ValueError, match="not a GLIDE UNet state dict"):
        torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
        load_model(path=tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="data_dir=.*nope: not a folder"):
        make_source(str(tmp_path / "nope"), 8)


def test_sharded_sampling_equals_one_run(setup, tmp_path):
    root, _, _ = setup
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red handwritten seven\na blue handwritten one\na green handwritten two\n")
    common = {"scale": "tiny", "base": str(root / "base"), "prompts": str(prompts), "num_images": 5, "steps": "3",
              "sampler": "euler_a", "batch_size": 2}
    sample_step.main({**common, "out_dir": str(tmp_path / "one")})
    for shard in (1, 0):
        sample_step.main({**common, "out_dir": str(tmp_path / "two"), "num_shards": 2, "shard_index": shard})
        assert (tmp_path / "two" / "samples.json").is_file() == (shard == 0)  # written once all shards are there
    for i in range(5):
        a = Image.open(tmp_path / "one" / f"{i:06d}.png")
        b = Image.open(tmp_path / "two" / f"{i:06d}.png")
        assert a.tobytes() == b.tobytes(), i
        assert (tmp_path / "two" / f"{i:06d}.txt").read_text().strip() == prompts.read_text().split("\n")[i % 3]
    sample_step.main({**common, "out_dir": str(tmp_path / "bic"), "upsampler": "bicubic:4", "num_images": 1})
    assert Image.open(tmp_path / "bic" / "000000.png").size == (32, 32)
    assert json.loads((tmp_path / "bic" / "samples.json").read_text())["resolution"] == 32


def test_held_out_upsampling_keeps_names_for_psnr(setup, tmp_path):
    import numpy as np

    from shared.metrics.recon import psnr

    root, _, digits = setup
    for up in ("bicubic:4", str(root / "up")):
        out = tmp_path / up.replace("/", "_").replace(":", "_")
        sample_step.main({"scale": "tiny", "upsampler": up, "low_res_images": str(digits / "test"), "num_images": 2,
                          "upsample_steps": "2", "out_dir": str(out)})
        stems = sorted(p.stem for p in (digits / "test").glob("*.png"))[:2]
        assert sorted(p.stem for p in out.glob("*.png")) == stems
        assert (out / f"{stems[0]}.txt").read_text() == (digits / "test" / f"{stems[0]}.txt").read_text().strip() + "\n"
        a = np.asarray(Image.open(out / f"{stems[0]}.png"))
        b = np.asarray(Image.open(digits / "test" / f"{stems[0]}.png").convert("RGB"))
        assert a.shape == b.shape == (32, 32, 3)
        if up.startswith("bicubic"):  # 8 px and back: blurred but close to the original
            assert psnr(a, b) > 15


def _png(colour=(200, 30, 30), size=(40, 40)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_webdataset_layout_filters_and_corrupt_samples(tmp_path):
    samples = [{"__key__": f"s{i:03d}", "png": _png(size=(40 + i, 40)), "txt": f"caption {i}",
                "json": {"similarity": 0.1 + 0.1 * i, "width": 40 + i, "height": 40}} for i in range(6)]
    samples.append({"__key__": "bad", "png": b"not an image", "txt": "broken"})
    write_shards(samples, tmp_path / "shards", shard_size=100)
    filt = GlideFilter(min_similarity=0.25, max_similarity=0.55)
    src = make_source(str(tmp_path / "shards"), 16, use_webdataset=True, wds_dataset_name="synthetic", crop="center",
                      data_filter=filt)
    loader = make_loader(src, 1, uncond_p=0.0, seed=0, rank=0, world_size=1, max_skip_rate=0.5)
    got = sorted(b["caption"][0] for b in loader)
    assert got == ["caption 2", "caption 3", "caption 4"]  # similarity 0.3, 0.4, 0.5 are inside the bounds
    assert loader.skips.counts == {"not_an_image": 1}
    assert loader.skips.filtered == {"similarity_low": 2, "similarity_high": 1}
    with pytest.raises(Filtered):
        GlideFilter(min_similarity=0.3).check_meta({"similarity": 0.29})
    GlideFilter(min_similarity=0.3).check_meta({"similarity": 0.3})  # on the bound: kept
    with pytest.raises(ValueError, match="wds_dataset_name='coyo'"):
        make_source(str(tmp_path / "shards"), 16, use_webdataset=True, wds_dataset_name="coyo")


def test_bloom_filter_rate_dedup_and_white_border(tmp_path):
    from projects.glide_finetune.data import BloomFilter, DedupFilter, trim_white_border

    bloom = BloomFilter.for_capacity(5000, 0.01)
    early = sum(bloom.add(f"item {i}") for i in range(5000))  # false positives while filling: rare
    assert early < 50, early
    assert all(bloom.add(f"item {i}") for i in range(5000))  # no false negatives: every repeat is caught
    fp = sum(f"other {i}" in bloom for i in range(5000)) / 5000  # queried, not inserted: the rate at capacity
    assert 0.002 < fp < 0.03 and abs(bloom.false_positive_rate(5000) - 0.01) < 0.002, fp
    samples = [{"__key__": f"s{i}", "png": _png(), "txt": ["a cat", "A  cat", "a dog"][i % 3],
                "json": {"url": f"http://x/{i % 2}"}} for i in range(6)]
    write_shards(samples, tmp_path / "sh", shard_size=100)
    src = make_source(str(tmp_path / "sh"), 16, use_webdataset=True, wds_dataset_name="synthetic", crop="center",
                      data_filter=DedupFilter(dedup_captions=True, dedup_capacity=100))
    loader = make_loader(src, 1, uncond_p=0.0, seed=0, rank=0, world_size=1)
    kept = sorted(" ".join(b["caption"][0].lower().split()) for b in loader)  # the first of each, in shuffled order
    assert kept == ["a cat", "a dog"]  # "A  cat" counts as "a cat"
    assert loader.skips.filtered == {"duplicate_caption": 4}
    src = make_source(str(tmp_path / "sh"), 16, use_webdataset=True, wds_dataset_name="synthetic", crop="center",
                      data_filter=DedupFilter(dedup_urls=True, dedup_capacity=100))
    loader = make_loader(src, 1, uncond_p=0.0, seed=0, rank=0, world_size=1)
    assert len(list(loader)) == 2 and loader.skips.filtered == {"duplicate_url": 4}
    img = Image.new("RGB", (40, 30), (255, 255, 255))
    img.paste(Image.new("RGB", (30, 20), (10, 200, 30)), (5, 6))
    assert trim_white_border(img).size == (30, 20)
    small = Image.new("RGB", (40, 30), (255, 255, 255))
    small.paste(Image.new("RGB", (4, 4), (0, 0, 0)), (1, 1))
    assert trim_white_border(small).size == (40, 30)  # a speck is not the picture: kept whole
    blank = Image.new("RGB", (20, 20), (255, 255, 255))
    assert trim_white_border(blank).size == (20, 20)  # nothing to keep: unchanged


def test_win_rate(tmp_path, monkeypatch):
    import numpy as np

    from projects.glide_finetune import winrate
    from shared.toy import features as digits_features

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / name / f"{i:06d}.png")
            (tmp_path / name / f"{i:06d}.txt").write_text("a red handwritten seven\n")
    torch.manual_seed(0)
    digits_features.save(digits_features.DigitsNet(), tmp_path / "net.safetensors")
    same = winrate.main({"scale": "tiny", "a": str(tmp_path / "a"), "b": str(tmp_path / "b"),
                         "scorer": f"digits:{tmp_path / 'net.safetensors'}", "out": str(tmp_path / "w.json")})
    values = {m["metric"]: m["value"] for m in same["metrics"]}
    assert values["win_rate"] == 0.5 and values["score_a"] == values["score_b"]  # identical images: all ties
    assert json.loads((tmp_path / "w.json").read_text())["metrics"][0]["num_samples"] == 4
    fake = iter([(np.array([1.0, 0.0, 1.0, 0.3]), "x"), (np.array([0.0, 0.0, 0.5, 0.9]), "x")])
    monkeypatch.setattr(winrate, "scores", lambda *a, **k: next(fake))
    r = winrate.main({"scale": "tiny", "a": str(tmp_path / "a"), "b": str(tmp_path / "b")})
    assert {m["metric"]: m["value"] for m in r["metrics"]}["win_rate"] == (1 + 0.5 + 1 + 0) / 4
    # win rates on two prompt sets against the same opponent share one table column (the toy finetune table)
    from shared.tables import TableError, collect

    rows = []
    for prompts, b in (("finetune", "b"), ("rest", "b_rest")):
        (tmp_path / b).mkdir(exist_ok=True)
        for f in (tmp_path / "a").iterdir():
            (tmp_path / b / f.name).write_bytes(f.read_bytes())
        fake = iter([(np.ones(4), "x"), (np.zeros(4), "x")])
        rows.append(tmp_path / f"w_{prompts}.json")
        winrate.main({"scale": "tiny", "a": str(tmp_path / "a"), "b": str(tmp_path / b), "out": str(rows[-1]),
                      "opponent": "base__glide_27_g3.0", "experiment": f"winrate__{prompts}"})
    assert len(collect(rows, "tiny")[0]) == 2
    fake = iter([(np.ones(4), "x"), (np.zeros(4), "x")])
    winrate.main({"scale": "tiny", "a": str(tmp_path / "a"), "b": str(tmp_path / "b_rest"), "out": str(rows[-1]),
                  "experiment": "winrate__rest"})  # no opponent: b's folder name, a different reference
    with pytest.raises(TableError, match="not comparable"):
        collect(rows, "tiny")
    (tmp_path / "b" / "000001.txt").write_text("a blue handwritten one\n")
    with pytest.raises(ValueError, match="not sampled from the same prompts"):
        winrate.main({"scale": "tiny", "a": str(tmp_path / "a"), "b": str(tmp_path / "b")})


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one process-wide state; a run with another precision needs it reset (before and after)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_runs(setup, tmp_path, precision, fresh_accelerate):
    root, base, _ = setup
    train_step.main({**base, "run_dir": str(tmp_path / precision), "max_steps": 2, "mixed_precision": precision,
                     "activation_checkpointing": True, "loss": "hybrid"})
    rows = [json.loads(line) for line in (tmp_path / precision / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss" in r]
    assert logged and all(torch.isfinite(torch.tensor(r["loss"])) for r in logged) and "vb" in logged[-1]
    if precision == "fp16":  # dynamic loss scaling from the configured start; skipped steps are counted
        assert logged[-1]["loss_scale"] > 0 and "skipped_steps" in logged[-1]
    sd = load_file(str(tmp_path / precision / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in sd.values())  # fp32 master weights


def test_lru_text_cache():
    from projects.glide_finetune.text_cache import LRUTextCache

    calls = []

    def encode(texts):
        calls.append(list(texts))
        v = torch.tensor([[float(len(t)), float(ord(t[0]) if t else 0)] for t in texts])
        return {"xf_proj": v, "xf_out": v[:, :, None].expand(-1, -1, 3).clone()}

    cache = LRUTextCache(encode, max_entries=2)
    out = cache(["ab", "", "ab"])
    assert calls == [["ab", ""]] and out["xf_proj"].shape == (3, 2) and out["xf_out"].shape == (3, 2, 3)
    torch.testing.assert_close(out["xf_proj"][0], out["xf_proj"][2])
    assert (cache.hits, cache.misses) == (0, 2)
    cache([""])  # a hit; "" is now the most recent
    assert calls == [["ab", ""]] and cache.hits == 1
    cache(["xyz"])  # evicts the least recently used ("ab")
    assert list(cache.entries) == ["", "xyz"] and cache.evictions == 1
    again = cache(["ab"])
    assert calls[-1] == ["ab"] and torch.equal(again["xf_proj"][0], torch.tensor([2.0, 97.0]))


def test_test_samplers_command_as_glide_finetune_users_type_it(setup, tmp_path, monkeypatch):
    """glide-finetune's `test_samplers.py --prompt ... --steps 50 --guidance-scale 3.0 --output-dir ...` is
    compare_samplers.py here (a module named test_*.py would be collected by pytest); steps cut to 2 for time."""
    import runpy
    from pathlib import Path

    root, _, _ = setup
    out = tmp_path / "compare"
    script = Path(__file__).resolve().parents[1] / "projects/glide_finetune/compare_samplers.py"
    monkeypatch.setattr("sys.argv", [str(script), "--model", str(root / "base"), "--prompt", "a red handwritten seven",
                                     "--steps", "2", "--guidance-scale", "3.0", "--output-dir", str(out),
                                     "--scale", "tiny", "--num-images", "2"])
    runpy.run_path(str(script), run_name="__main__")
    table = (out / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "sampler" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["plms", "euler", "dpm++", "glide"]  # the tiny preset's
    assert all(r.split("|")[2].strip() == "2" for r in rows)  # --steps 2
    assert "3.0" in table  # the guidance scale is stated
    assert Image.open(out / "grid.png").size[0] > 0


def test_glide_finetune_training_commands_run_as_typed(setup, tmp_path, monkeypatch):
    """`train_glide.py --data_dir ... --train_upsample False --batch_size 4 --learning_rate 1e-4 --side_x 64
    --side_y 64 --uncond_p 0.2 --checkpoints_dir ...` and the upsampler's `--train_upsample True --uncond_p 0.0
    --upscale_factor 4` train here (tiny scale: 8 px base, 8 -> 32 px upsampler, 3 steps)."""
    import runpy
    from pathlib import Path

    root, base, digits = setup
    script = Path(__file__).resolve().parents[1] / "projects/glide_finetune/train.py"
    common = ["--scale", "tiny", "--tokenizer", base["tokenizer"], "--data_dir", str(digits / "train"),
              "--batch_size", "4", "--learning_rate", "1e-4"]
    runs = {"base": ["--train_upsample", "False", "--side_x", "8", "--side_y", "8", "--uncond_p", "0.2"],
            "up": ["--train_upsample", "True", "--uncond_p", "0.0", "--upscale_factor", "4", "--side_x", "8",
                   "--side_y", "8"]}  # side_x/y: the low-res side, as in glide-finetune (64 x 4 = 256)
    for name, extra in runs.items():
        monkeypatch.setattr("sys.argv", [str(script), *common, *extra, "--checkpoints_dir", str(tmp_path / name)])
        runpy.run_path(str(script), run_name="__main__")
        info = json.loads((tmp_path / name / "glide.json").read_text())
        assert info["step"] == 3 and info["variant"] == ("upsample" if name == "up" else "base"), info
        saved = (tmp_path / name / "config.yaml").read_text()
        assert "learning_rate: 0.0001" in saved and "batch_size: 4" in saved
        assert f"uncond_p: {0.0 if name == 'up' else 0.2}" in saved


def test_prepare_lists_enough_fine_tune_prompts_for_fd(digits_tiny, tmp_path):
    """The base's set leaves the fine-tune colour out (its prompts are the other colours' test captions); the
    fine-tune colour's test captions are each repeated (one colour has fewer test images than the 64 feature
    dimensions of the FD); its train images split into the fine-tune set and a held-out FD reference."""
    from projects.glide_finetune import prepare
    from shared.toy.dataset import COLOUR_NAMES, read_split

    prepare.main({"scale": "tiny", "digits": str(digits_tiny), "out_dir": str(tmp_path / "g"),
                  "finetune_prompt_repeats": 3, "finetune_reference_fraction": 0.5})
    train, test = read_split(digits_tiny / "train"), read_split(digits_tiny / "test")
    colour = COLOUR_NAMES.index("magenta")
    magenta = [r.caption for r in test if r.colour == colour]
    lines = (tmp_path / "g/finetune_prompts.txt").read_text().splitlines()
    assert magenta and lines == [c for c in magenta for _ in range(3)]
    prompts = (tmp_path / "g/eval_prompts.txt").read_text().splitlines()
    assert prompts == [r.caption for r in test if r.colour != colour][:32]  # the tiny preset's num_prompts
    base = read_split(tmp_path / "g/base")
    assert len(base) == sum(r.colour != colour for r in train) and all("magenta" not in r.caption for r in base)
    assert all((tmp_path / "g/base" / r.file).with_suffix(".txt").read_text().strip() == r.caption for r in base)
    tune, ref = read_split(tmp_path / "g/finetune"), read_split(tmp_path / "g/finetune_reference")
    n = sum(r.colour == colour for r in train)
    assert len(tune) == n - n // 2 and all(r.colour == colour for r in tune + ref)
    assert len(ref) == n // 2 + len(magenta)  # held-out train images + the colour's test images
    # the reference shares no image with the fine-tune set (hard links: the same inode would be the same file)
    inodes = {(tmp_path / "g/finetune" / r.file).stat().st_ino for r in tune}
    assert not inodes & {(tmp_path / "g/finetune_reference" / r.file).stat().st_ino for r in ref}
    for bad, match in (({"finetune_prompt_repeats": 0}, "finetune_prompt_repeats=0"),
                       ({"finetune_reference_fraction": 1.0}, "finetune_reference_fraction=1.0")):
        with pytest.raises(ValueError, match=match):
            prepare.main({"scale": "tiny", "digits": str(digits_tiny), "out_dir": str(tmp_path / "h"), **bad})
        assert not (tmp_path / "h").exists()  # refused before anything is written


def test_fine_tune_rows_compare_with_the_real_images_of_their_prompts(tmp_path):
    """The eval prompt set is the base's colours (all but magenta): evaluate.py reference_captions= keeps only the
    reference images with those captions (before, FD of magenta samples was taken against every colour: ~41)."""
    import numpy as np

    from projects.glide_finetune import evaluate
    from shared.toy import features as digits_features

    ref, samples = tmp_path / "test", tmp_path / "samples"
    ref.mkdir(), samples.mkdir()
    # 210 reference images, 140 of them with the prompts' captions: more than the 64-d features need
    captions = ["a magenta handwritten one", "a red handwritten two", "a magenta handwritten three"] * 70
    rng = np.random.default_rng(0)
    for i, cap in enumerate(captions):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(ref / f"{i:05d}.png")
        (ref / f"{i:05d}.txt").write_text(cap + "\n")
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(samples / f"{i:06d}.png")
        (samples / f"{i:06d}.txt").write_text(cap + "\n")
    (ref / "metadata.jsonl").write_text("".join(json.dumps({"file": f"{i:05d}.png", "caption": c}) + "\n"
                                                for i, c in enumerate(captions)))
    (samples / "samples.json").write_text(json.dumps({"sampler": "glide", "steps": "27"}))
    prompts = tmp_path / "finetune_prompts.txt"
    prompts.write_text("a magenta handwritten one\n" * 3 + "a magenta handwritten three\n")

    subset = evaluate.captioned_subset(ref, prompts)
    assert subset == tmp_path / "test__finetune_prompts"
    kept = [f"{i:05d}.png" for i, c in enumerate(captions) if "magenta" in c]
    assert sorted(p.name for p in subset.glob("*.png")) == kept and len(kept) == 140
    assert (subset / "00002.png").stat().st_ino == (ref / "00002.png").stat().st_ino  # a link, not a copy
    assert [json.loads(line)["file"] for line in (subset / "metadata.jsonl").read_text().splitlines()] == kept

    torch.manual_seed(0)
    digits_features.save(digits_features.DigitsNet(), tmp_path / "net.safetensors")
    common = {"scale": "tiny", "images": str(samples), "reference": str(ref), "metrics": ["fd"],
              "extractor": f"digits:{tmp_path / 'net.safetensors'}"}
    whole = evaluate.main(common)["metrics"][0]["reference_id"]
    part = evaluate.main({**common, "reference_captions": str(prompts)})["metrics"][0]["reference_id"]
    assert whole.startswith("test:210:") and part.startswith("test__finetune_prompts:140:")

    other = tmp_path / "blue_prompts.txt"
    other.write_text("a blue handwritten four\n")
    with pytest.raises(ValueError, match="no image has a caption of"):
        evaluate.captioned_subset(ref, other)
    with pytest.raises(FileNotFoundError, match="reference_captions="):
        evaluate.captioned_subset(ref, tmp_path / "missing.txt")


def test_compare_samplers_takes_the_reference_at_the_samples_size(digits_tiny, tmp_path):
    """compare_samplers.py's FD reference is resized to the model's size as evaluate.py does (it compared 8 px
    samples with 32 px test images: an FD floor of ~1.7 where evaluate.py reads ~0.6)."""
    import shutil

    import numpy as np

    from projects.glide_finetune.compare_samplers import reference_features
    from shared.toy import features as digits_features
    from shared.toy.dataset import load_arrays

    ref = tmp_path / "test"
    shutil.copytree(digits_tiny / "test", ref)
    torch.manual_seed(0)
    net = digits_features.DigitsNet().eval()
    feats = reference_features(net, ref, 8)
    small = torch.from_numpy(load_arrays(tmp_path / "test__8px")[0]).permute(0, 3, 1, 2).float()
    full = torch.from_numpy(load_arrays(ref)[0]).permute(0, 3, 1, 2).float()
    assert small.shape[-1] == 8 and full.shape[-1] > 8 and feats.shape[0] == len(small)
    with torch.no_grad():
        np.testing.assert_allclose(feats, net.features(small).numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(feats, net.features(full).numpy(), atol=1e-3)


def test_compare_samplers_scores_with_the_digits_cnn(setup, tmp_path):
    """The toy path (features=): prompt accuracy per row; FD needs more images than the 64 feature dimensions,
    so with 4 it is NaN (the toy table's rows have 360)."""
    import math
    import shutil

    from projects.glide_finetune import compare_samplers
    from shared.toy import features as digits_features

    root, _, digits = setup
    shutil.copytree(digits / "test", tmp_path / "test")
    torch.manual_seed(0)
    digits_features.save(digits_features.DigitsNet(), tmp_path / "net.safetensors")
    rows = compare_samplers.main({"scale": "tiny", "model": str(root / "base"), "prompt": "a red handwritten seven",
                                  "steps": "2", "samplers": ["ddim"], "num_images": 4,
                                  "features": str(tmp_path / "net.safetensors"),
                                  "reference_dir": str(tmp_path / "test"), "output_dir": str(tmp_path / "out")})
    (row,) = rows
    assert row["images"] == 4 and 0.0 <= row["prompt_accuracy"] <= 1.0 and math.isnan(row["fd"])
    assert row["fd_ci95"] == ""  # no FD, no interval
    assert (tmp_path / "test__8px").is_dir()  # the reference taken at the samples' size


def test_compare_samplers_fd_interval_is_evaluates():
    """compare_samplers.py's FD interval is evaluate.py's statistic: the bootstrap of shared/metrics over the
    samples with the reference fixed, centred on the point FD (checked against a resample-by-resample loop)."""
    import numpy as np

    from projects.glide_finetune.compare_samplers import BOOTSTRAP_RESAMPLES, frechet_with_interval
    from shared.metrics import frechet_from_features
    from shared.metrics.frechet import frechet_distance

    rng = np.random.default_rng(0)
    ref, feats = rng.normal(size=(400, 8)), rng.normal(0.3, 1.1, size=(150, 8))
    fd, ci, _ = frechet_with_interval(feats, ref, seed=3)
    assert fd == pytest.approx(frechet_from_features(feats, ref))
    idx = np.random.default_rng(3).integers(0, len(feats), size=(BOOTSTRAP_RESAMPLES, len(feats)))
    mu, sigma = ref.mean(0), np.cov(ref, rowvar=False)
    loop = np.array([frechet_distance(feats[i].mean(0), np.cov(feats[i], rowvar=False), mu, sigma) for i in idx])
    lo, hi = np.quantile(loop - (loop.mean() - fd), [0.025, 0.975])
    assert ci == f"[{lo:.4g}, {hi:.4g}]" and lo < fd < hi


def test_compare_samplers_fd_difference_is_paired():
    """fd_minus_reference: each cell's FD minus the reference cell's, its interval from the differences of the
    same resamples (cells share prompts and seeds). Checked against a loop; a cell that is the reference plus
    small noise has a difference interval far narrower than its own FD interval, and one shifted away from the
    reference has an interval above 0."""
    import numpy as np

    from projects.glide_finetune.compare_samplers import (BOOTSTRAP_RESAMPLES, add_reference_difference,
                                                          frechet_with_interval)
    from shared.metrics.frechet import frechet_distance

    rng = np.random.default_rng(0)
    ref, base = rng.normal(size=(400, 8)), rng.normal(0.2, 1.0, size=(200, 8))
    cells = {("plms", 100): base, ("euler", 10): base + rng.normal(0, 0.05, size=base.shape),
             ("euler_a", 10): base + 0.5}
    rows, boot = [], {}
    for (name, steps), feats in cells.items():
        fd, ci, values = frechet_with_interval(feats, ref, seed=0)
        rows.append({"sampler": name, "steps": steps, "fd": fd, "fd_ci95": ci})
        boot[(name, steps)] = values
    add_reference_difference(rows, boot, seed=0)
    assert "fd_minus_reference" not in rows[0]  # the reference itself
    idx = np.random.default_rng(0).integers(0, len(base), size=(BOOTSTRAP_RESAMPLES, len(base)))
    mu, sigma = ref.mean(0), np.cov(ref, rowvar=False)

    def fds(x):
        return np.array([frechet_distance(x[i].mean(0), np.cov(x[i], rowvar=False), mu, sigma) for i in idx])

    near, far = rows[1], rows[2]
    diff = fds(cells[("euler", 10)]) - fds(base)
    lo, hi = np.quantile(diff - (diff.mean() - near["fd_minus_reference"]), [0.025, 0.975])
    assert near["fd_minus_reference_ci95"] == f"[{lo:.4g}, {hi:.4g}]"
    assert near["fd_minus_reference"] == pytest.approx(near["fd"] - rows[0]["fd"])
    own_lo, own_hi = (float(v) for v in near["fd_ci95"].strip("[]").split(","))
    assert hi - lo < (own_hi - own_lo) / 5  # pairing removes the noise the two cells share
    far_lo = float(far["fd_minus_reference_ci95"].strip("[]").split(",")[0])
    assert far_lo > 0
