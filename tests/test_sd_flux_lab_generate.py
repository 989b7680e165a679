"""sd_flux_lab generate.py: txt2img / img2img on tiny SD1.5, SDXL and FLUX.2 folders, FLUX.2 folder editing,
sampler mapping, PNG metadata, file naming and input errors."""
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from projects.sd_flux_lab import flux, generate
from shared.config import ConfigError

NAME = re.compile(r"^\d{8}-\d{6}_(\d{4})\.png$")


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    from projects.sd_flux_lab import models

    root = tmp_path_factory.mktemp("pipes")
    out = {arch: str(models.save_pipeline(models.build_pipeline(arch, "tiny"), root / arch)) for arch in ("sd15", "sdxl")}
    out["flux2"] = str(flux.main({"scale": "tiny", "out_dir": str(root / "flux2")}))
    return out


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "init.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def _run(pipe, out, **kw):
    return generate.main({"scale": "tiny", "pipeline": pipe, "out_dir": str(out), **kw})


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_sd15_txt2img_prompt_file_seeds_names_and_metadata(pipes, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# digits\na red seven\n\na blue two\n")
    files = _run(pipes["sd15"], tmp_path / "out", prompt_file=str(prompts), num_images=2, seed=5, height=32,
                 width=32, sampler="dpm++")
    assert [int(NAME.match(f.name).group(1)) for f in files] == [0, 1, 2, 3]
    meta = [generate.read_png_settings(f) for f in files]
    assert [m["prompt"] for m in meta] == ["a red seven", "a red seven", "a blue two", "a blue two"]
    p = meta[3]["parameters"]
    assert (p["mode"], p["model"], p["sampler"], p["steps"], p["guidance"], p["seed"]) == \
        ("txt2img", "sd", "dpm++", 2, 7.0, 6)
    assert (p["width"], p["height"]) == (32, 32) and _pixels(files[0]).shape == (32, 32, 3)
    assert (tmp_path / "out" / "generate.yaml").is_file()
    # seeds: image i of a prompt uses seed + i, so the same seed repeats the image and another changes it
    again = _run(pipes["sd15"], tmp_path / "again", prompt="a red seven", seed=6, height=32, width=32,
                 sampler="dpm++")
    np.testing.assert_array_equal(_pixels(again[0]), _pixels(files[1]))
    assert np.abs(_pixels(files[0]) - _pixels(files[1])).max() > 0


def test_sampler_names_map_onto_the_pipelines_schedule(pipes):
    pipe, kind, _ = generate.load_pipeline(pipes["sd15"])
    sched = generate.scheduler_for(pipe, kind, "dpm++", "txt2img")
    assert type(sched).__name__ == "DPMSolverMultistepScheduler"
    assert sched.config.beta_schedule == "scaled_linear" and sched.config.beta_end == pipe.scheduler.config.beta_end
    assert generate.scheduler_for(pipe, kind, "", "txt2img") is pipe.scheduler
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        generate.scheduler_for(pipe, kind, "nope", "txt2img")
    with pytest.raises(ConfigError, match="flow"):  # a flow sampler cannot read an epsilon model
        generate.scheduler_for(pipe, kind, "flow_euler", "txt2img")
    fpipe, fkind, _ = generate.load_pipeline(pipes["flux2"])
    assert "flow_euler" in generate.flux_samplers() and "flow_heun" not in generate.flux_samplers()
    with pytest.raises(ConfigError, match="flow_heun"):
        generate.scheduler_for(fpipe, fkind, "flow_heun", "txt2img")
    fs = generate.scheduler_for(fpipe, fkind, "flow_euler", "img2img")
    assert fs.config.use_dynamic_shifting and fs.config.shift == fpipe.scheduler.config.shift


def test_sd15_img2img_strength_and_defaults(pipes, photo, tmp_path):
    files = _run(pipes["sd15"], tmp_path / "i2i", prompt="a cat", init_image=str(photo), strength=0.5,
                 negative_prompt="blurry")
    m = generate.read_png_settings(files[0])
    p = m["parameters"]
    assert (p["mode"], p["strength"], p["guidance"], p["init_image"]) == ("img2img", 0.5, 5.0, str(photo))
    assert m["negative_prompt"] == "blurry" and _pixels(files[0]).shape == (64, 64, 3)


def test_sdxl_txt2img_with_quality_prefix_and_negative(pipes, tmp_path):
    files = _run(pipes["sdxl"], tmp_path / "xl", prompt="a red seven", quality=True, height=32, width=32,
                 guidance=3.0)
    m = generate.read_png_settings(files[0])
    assert m["prompt"] == f"{generate.QUALITY_PREFIX}, a red seven"
    assert m["negative_prompt"] == generate.NEGATIVE_DEFAULT
    assert (m["parameters"]["model"], m["parameters"]["guidance"]) == ("sdxl", 3.0)


def test_flux_img2img_at_strength_one_is_txt2img_and_lower_strength_keeps_the_image(pipes, photo, tmp_path):
    t2i = _run(pipes["flux2"], tmp_path / "t2i", prompt="a red seven", height=64, width=64, guidance=5.0)
    full = _run(pipes["flux2"], tmp_path / "s1", prompt="a red seven", init_image=str(photo), strength=1.0)
    # the same seed, sigmas, shift and noise: starting from pure noise is txt2img
    np.testing.assert_array_equal(_pixels(full[0]), _pixels(t2i[0]))
    low = _run(pipes["flux2"], tmp_path / "s02", prompt="a red seven", init_image=str(photo), strength=0.2, steps=5)
    mid = _run(pipes["flux2"], tmp_path / "s08", prompt="a red seven", init_image=str(photo), strength=0.8, steps=5)
    # less of the schedule from a less noisy start: the init image's VAE reconstruction changes less
    pipe, info = flux.load_flux2(pipes["flux2"])
    with torch.no_grad():
        x = pipe.image_processor.preprocess(Image.open(photo).convert("RGB"), height=64, width=64)
        recon = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample
    recon = pipe.image_processor.postprocess(recon, output_type="np")[0] * 255
    d_low, d_mid = (np.abs(_pixels(f[0]) - recon).mean() for f in (low, mid))
    assert d_low < d_mid
    assert generate.read_png_settings(low[0])["parameters"]["strength"] == 0.2


def test_flux_edit_every_image_of_a_folder(pipes, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a.png", "b.jpg", "c.png", "d.png"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    files = _run(pipes["flux2"], tmp_path / "edit", input_dir=str(folder), prompt="make it blue", start=1, limit=2)
    assert [int(NAME.match(f.name).group(1)) for f in files] == [1, 2]
    params = [generate.read_png_settings(f)["parameters"] for f in files]
    assert [p["source"] for p in params] == [str(folder / "b.jpg"), str(folder / "c.png")]
    assert {(p["mode"], p["guidance"], p["steps"], p["width"]) for p in params} == {("edit", 4.0, 2, 64)}
    defaults = generate.resolve(generate.Config, {"input_dir": "x"}, generate.PRESETS)
    assert generate.MODE_DEFAULTS[generate.resolve_mode(defaults)] == (4.0, 15) and defaults.steps == 0


def test_input_errors_name_the_key(pipes, photo, tmp_path):
    with pytest.raises(ConfigError, match="no prompt"):
        _run(pipes["sd15"], tmp_path)
    with pytest.raises(FileNotFoundError, match="prompt_file=.*missing.txt"):
        _run(pipes["sd15"], tmp_path, prompt_file=str(tmp_path / "missing.txt"))
    with pytest.raises(FileNotFoundError, match="init_image="):
        _run(pipes["sd15"], tmp_path, prompt="x", init_image=str(tmp_path / "nope.png"))
    with pytest.raises(ConfigError, match="edit needs a FLUX.2 pipeline"):
        _run(pipes["sd15"], tmp_path, prompt="x", input_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="negative_prompt"):
        _run(pipes["flux2"], tmp_path, prompt="x", negative_prompt="ugly")
    with pytest.raises(ConfigError, match="strength"):
        _run(pipes["sd15"], tmp_path, prompt="x", init_image=str(photo), strength=1.5)
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        _run(str(tmp_path), tmp_path, prompt="x")


def test_command_line(pipes, tmp_path, repo_root):
    r = subprocess.run([sys.executable, "-m", "projects.sd_flux_lab.generate", f"pipeline={pipes['flux2']}",
                        "prompt=a red seven", "steps=1", f"out_dir={tmp_path / 'cli'}", "seed=3"],
                       cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (png,) = (tmp_path / "cli").glob("*.png")
    assert generate.read_png_settings(png)["parameters"]["seed"] == 3
