"""The original tools' command lines run here as written and do what the originals did (issue 14).

Each command runs in-process exactly as the shell would start it (`runpy` of the script file with that argv, in a
working folder laid out like the lab's: images/, tuned/, models/, downloads/), with tiny models in place of the
real ones. Sizes and epoch counts are the commands' own option names with small values (a 512 px step of even a
tiny UNet costs seconds on CPU); everything else is as the originals were typed.
"""
from __future__ import annotations

import contextlib
import io
import json
import runpy
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "projects" / "sd_flux_lab"


def run(script: Path, command: str, cwd: Path, monkeypatch) -> str:
    """`python <script> <command>` in `cwd`, in this interpreter; returns stdout (a non-zero exit fails)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [str(script), *shlex.split(command)])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as e:
            if e.code not in (0, None):
                raise AssertionError(f"{script.name} {command}: exit {e.code}\n{out.getvalue()}") from None
    return out.getvalue()


def unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next((folder / "unet").glob("*.safetensors"))))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _images(folder: Path, n: int, seed: int, size: int = 40) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A working folder as the lab had it: base model downloads, a tuned model, a community UNet, pictures."""
    from projects.sd_flux_lab import convert, models

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lab")
    models.save_pipeline(models.build_pipeline("sd15", "tiny", seed=0), root / "downloads" / "sd15")
    models.save_pipeline(models.build_pipeline("sd15", "tiny", seed=1), root / "tuned" / "sd15d")
    other = models.save_pipeline(models.build_pipeline("sd15", "tiny", seed=2), root / "other")
    convert.main({"pipeline": str(other), "out": str(root / "models" / "x.safetensors")})  # original-format file
    _images(root / "images" / "girl", 4, 0)
    _images(root / "images" / "_v2" / "girl" / "long_hair", 4, 1)
    _images(root / "images" / "__tmp", 3, 2, size=64)  # FLUX.2 edits need >= 64 px  # `__` folders are left out of training (original rule too)
    (root / "prompts.txt").write_text("# test prompts\na red cat\n\na blue dog\n")
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / "input.jpg")
    return root


def test_train_sd_original_training_commands(lab, monkeypatch):
    script = LAB / "train_sd.py"
    # 1. no --load_model: fine-tunes the downloaded SD1.5 (downloads/sd15) and saves to the default ./tuned/sd15
    run(script, "--image_size 32 --images images/ --epoch 2", lab, monkeypatch)
    cfg = yaml.safe_load((lab / "tuned/sd15/config.yaml").read_text())
    assert (cfg["base"], cfg["data_dir"], cfg["resolution"], cfg["epochs"], cfg["batch_size"], cfg["t_max"]) == \
        ("downloads/sd15", "images/", 32, 2, 4, 700)
    assert cfg["max_steps"] == 2 * 2  # --epoch counts epochs: 8 images in batches of 4 -> 2 batches per epoch
    trained = unet_weights(lab / "tuned/sd15/pipeline")
    assert max_diff(trained, unet_weights(lab / "downloads/sd15")) > 0

    # 2. --load_model + --unet: starts from the single-file UNet (not the model's own), --batch, --save_model
    run(script, "--image_size 32 --images images/ --epoch 1 --load_model ./tuned/sd15d "
                "--unet ./models/x.safetensors --batch 2 --save_model ./tuned/sd15_768", lab, monkeypatch)
    cfg = yaml.safe_load((lab / "tuned/sd15_768/config.yaml").read_text())
    assert (cfg["batch_size"], cfg["max_steps"], cfg["unet_single_file"]) == (2, 4, "./models/x.safetensors")
    tuned = unet_weights(lab / "tuned/sd15_768/pipeline")
    from_file, from_model = max_diff(tuned, unet_weights(lab / "other")), max_diff(tuned, unet_weights(lab / "tuned/sd15d"))
    assert 0 < from_file < 0.05 < from_model  # a few lr-1e-4 steps away from the file's UNet

    # 3. continue from a saved run: the default ./tuned/sd15 holds another run, which the original overwrote
    out = run(script, "--image_size 32 --images images/_v2/ --epoch 1 --load_model ./tuned/sd15_768/", lab,
              monkeypatch)
    assert "moved to tuned/sd15.previous" in out
    cfg = yaml.safe_load((lab / "tuned/sd15/config.yaml").read_text())
    assert (cfg["base"], cfg["data_dir"], cfg["max_steps"]) == ("./tuned/sd15_768/", "images/_v2/", 1)
    assert max_diff(unet_weights(lab / "tuned/sd15/pipeline"), tuned) > 0
    assert (lab / "tuned/sd15.previous/pipeline/model_index.json").is_file()


def test_train_sd_original_generation_commands(lab, monkeypatch, capsys):
    """Without --images, the original train_sd.py generates: txt2img from a prompt file or a prompt, img2img."""
    from projects.sd_flux_lab.generate import read_png_settings

    if not (lab / "tuned/sd15/pipeline").is_dir():  # run alone: the training test did not save one
        shutil.copytree(lab / "downloads/sd15", lab / "tuned/sd15/pipeline")
    script = LAB / "train_sd.py"
    # (at 2 steps instead of the original's fixed 50 where the step count is not what is checked, to save time)
    run(script, "--load_model ./tuned/sd15/ --prompt_file prompts.txt --image_size 32 --steps 2", lab, monkeypatch)
    images = sorted((lab / "output").glob("*.png"))
    assert len(images) == 2 * 4  # the original's --batch default: 4 images per prompt of the file, into ./output
    settings = read_png_settings(images[0])
    assert settings["prompt"].endswith("a red cat") and settings["prompt"] != "a red cat"  # its quality prefix
    assert settings["negative_prompt"] and settings["parameters"]["width"] == 32
    assert settings["parameters"]["pipeline"].endswith("tuned/sd15/pipeline")  # a saved run folder loads

    run(script, '--load_model ./tuned/sd15/ --prompt "masterpiece, best quality, girl" --batch 1 --output out_one',
        lab, monkeypatch)
    (image,) = (lab / "out_one").glob("*.png")
    params = read_png_settings(image)["parameters"]
    assert (params["steps"], params["guidance"], params["mode"]) == (50, 7.0, "txt2img")  # as the original

    with pytest.raises(AssertionError, match="exit 2"):  # an option the original ignored here is refused, saying why
        run(script, '--load_model ./tuned/sd15/ --prompt "x" --unet ./models/x.safetensors', lab, monkeypatch)
    assert "--unet has no meaning here: the original ignores --unet when generating" in capsys.readouterr().err

    run(script, '--load_model ./tuned/sd15/ --init_image input.jpg --prompt "water color style" --image_size 32 '
                "--batch 1 --output out_i2i --steps 2", lab, monkeypatch)
    (image,) = (lab / "out_i2i").glob("*.png")
    params = read_png_settings(image)["parameters"]
    assert (params["mode"], params["strength"], params["guidance"], Image.open(image).size) == \
        ("img2img", 0.8, 5.0, (32, 32))


def test_flux2_finetune_then_edit(lab, monkeypatch):
    from projects.sd_flux_lab import flux

    flux.main({"scale": "tiny", "out_dir": str(lab / "downloads" / "flux2")})
    script = LAB / "flux2.py"
    run(script, "--finetune --train_dir ./images/_v2/girl/ --output_model ./tuned/flux2 --epochs 2 --lr 1e-5 "
                "--batch_size 2 --scale tiny", lab, monkeypatch)
    cfg = yaml.safe_load((lab / "tuned/flux2/config.yaml").read_text())
    assert (cfg["max_steps"], cfg["lr"], cfg["batch_size"]) == (2 * (4 // 2), 1e-5, 2)  # --epochs counts epochs
    new = load_file(str(next((lab / "tuned/flux2/pipeline/transformer").glob("*.safetensors"))))
    old = load_file(str(next((lab / "downloads/flux2/transformer").glob("*.safetensors"))))
    assert max_diff(new, old) > 0
    run(script, '--input ./images/__tmp/ --output ./output_flux --prompt "make it winter" --limit 2 --start 1 '
                "--model ./tuned/flux2 --scale tiny", lab, monkeypatch)
    assert len(list((lab / "output_flux").glob("*.png"))) == 2  # images 1 and 2 of the folder


def test_convert_with_the_diffusers_script_options(lab, monkeypatch):
    for script in (LAB / "convert_diffusers_to_original_stable_diffusion.py", LAB / "convert.py"):
        out = lab / f"{script.stem}.safetensors"
        run(script, f"--model_path ./tuned/sd15d --checkpoint_path {out.name} --half --use_safetensors", lab,
            monkeypatch)
        sd = load_file(str(out))
        assert any(k.startswith("model.diffusion_model.") for k in sd)
        assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}  # --half


def test_categorize_positional_folder_and_dashed_options(lab, monkeypatch):
    from projects.sd_flux_lab import categorize

    model, processor = categorize.tiny_blip()
    model.save_pretrained(lab / "downloads" / "blip")
    processor.save_pretrained(lab / "downloads" / "blip")
    photos = lab / "photos"
    _images(photos, 3, 5)
    run(LAB / "categorize.py", "photos --organize --min-count 2 --output-dir sorted --caption", lab, monkeypatch)
    assert len(list(photos.glob("*.cap"))) == 3
    assert len(list((lab / "sorted").rglob("*.png"))) == 3 and (lab / "sorted/keywords.json").is_file()


def test_other_tools_with_natural_options(lab, monkeypatch):
    run(LAB / "crop_images.py", "--in-dir images --out-dir cropped --size 24 --mode center", lab, monkeypatch)
    crops = sorted((lab / "cropped").rglob("*.png"))
    assert len(crops) == 8 and {Image.open(p).size for p in crops} == {(24, 24)}
    run(LAB / "make_samples.py", '--pipeline tuned/sd15d --prompts "a red cat" --seeds 0 --steps 2 --out-dir samples '
                                 "--save-images --size 32", lab, monkeypatch)
    assert (lab / "samples/images/00000.png").is_file()
    assert (lab / "samples/images/00000.txt").read_text().strip() == "a red cat"  # one bare item -> the list
    run(LAB / "train_vae.py", "--scale tiny --data-dir images --run-dir runs/vae --max-steps 2 --batch-size 4", lab,
        monkeypatch)
    assert (lab / "runs/vae/vae/config.json").is_file()
    run(LAB / "train_transformer.py", "--scale tiny --data-dir images --run-dir runs/flux_toy --max-steps 2 "
                                      "--validation-prompts 'a girl' --validation-seeds 0", lab, monkeypatch)
    assert yaml.safe_load((lab / "runs/flux_toy/config.yaml").read_text())["validation_prompts"] == ["a girl"]
    assert (lab / "runs/flux_toy/transformer/config.json").is_file()


def test_web_sd_serves_with_model_and_unet(lab, monkeypatch):
    """`web_sd.py` (defaults: downloads/sd15 + downloads/controlnet_canny on port 7860) and `--model --unet`: the
    UI really serves (one HTTP request), with the UNet of the single file."""
    import urllib.request

    pytest.importorskip("gradio")
    pytest.importorskip("cv2")
    import gradio

    from projects.sd_flux_lab import models, web

    base = models.load_pipeline(lab / "downloads/sd15")
    models.build_controlnet(base.unet, base.vae).save_pretrained(lab / "downloads/controlnet_canny")
    shutil.copy(lab / "models/x.safetensors", lab / "models/custom.safetensors")
    served, pipes = [], []
    real_launch = gradio.Blocks.launch

    def launch(self, **kw):  # a free port and no blocking, else as the command asked
        served.append(dict(kw))
        return real_launch(self, **{**kw, "server_port": None, "prevent_thread_lock": True})

    class Recording(web.Generator):
        def __init__(self, pipe, cfg):
            pipes.append(pipe)
            super().__init__(pipe, cfg)

    monkeypatch.setattr(gradio.Blocks, "launch", launch)
    monkeypatch.setattr(web, "Generator", Recording)
    for command in ("", "--model ./tuned/sd15/ --unet ./models/custom.safetensors"):
        if not (lab / "tuned/sd15/pipeline").is_dir():
            shutil.copytree(lab / "downloads/sd15", lab / "tuned/sd15/pipeline")
        out = run(LAB / "web_sd.py", command, lab, monkeypatch)
        url = out.split("web UI on ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b"gradio" in page.read().lower()
        gradio.close_all()
    assert [(s["server_name"], s["server_port"], s["prevent_thread_lock"]) for s in served] == \
        [("127.0.0.1", 7860, False)] * 2  # as typed: port 7860, serving until interrupted
    default, custom = ({k: v.detach() for k, v in p.unet.state_dict().items()} for p in pipes)
    assert max_diff(default, unet_weights(lab / "downloads/sd15")) == 0
    assert max_diff(custom, unet_weights(lab / "other")) < 1e-6 < max_diff(custom, unet_weights(lab / "tuned/sd15/pipeline"))


# ---- dmd2 ------------------------------------------------------------------------------------------------------
def run_module(module: str, command: str, cwd: Path, monkeypatch) -> str:
    """`python -m <module> <command>` in `cwd`, in this interpreter; returns stdout (a non-zero exit fails)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [module, *shlex.split(command)])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            if e.code not in (0, None):
                raise AssertionError(f"-m {module} {command}: exit {e.code}\n{out.getvalue()}") from None
    return out.getvalue()


@pytest.fixture(scope="module")
def dmd2_run(tmp_path_factory):
    """A tiny DMD2 run on the tiny EDM teacher with two checkpoints, the digits data and feature CNN."""
    from projects.dmd2 import prepare, train
    from projects.dmd2.tiny import save_tiny_edm
    from shared.toy import prepare as digits_prepare, train_features

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("dmd2")
    digits_prepare.main({"scale": "tiny", "out_dir": str(root / "digits")})
    prepare.main({"scale": "tiny", "kind": "edm", "images": str(root / "digits/train"),
                  "eval_images": str(root / "digits/test"), "out_dir": str(root / "edm")})
    save_tiny_edm(root / "teacher", seed=0)
    train_features.main({"scale": "tiny", "data_dir": str(root / "digits"), "out_dir": str(root / "features")})
    train.main({"scale": "tiny", "recipe": "digits_1step", "teacher": str(root / "teacher"),
                "data": str(root / "edm/real.lmdb"), "run_dir": str(root / "run"), "threads": 1, "max_steps": 2,
                "ckpt_every": 1, "keep_last": 2, "generator_lr": 1e-2, "dfake_gen_update_ratio": 1})
    return root


def test_dmd2_imagenet_example_and_checkpoint_evaluation(dmd2_run, monkeypatch):
    from projects.dmd2.generation import load_generator

    root = dmd2_run
    run_module("projects.dmd2.imagenet_example", "--checkpoint_path run", root, monkeypatch)
    res = load_generator(root / "run")[2].resolution
    assert Image.open(root / "imagenet_grid.jpg").size == (8 * res, 8 * res)  # 64 images of random classes
    with pytest.raises(AssertionError, match="exit 2"):  # a restated property that disagrees is refused
        run_module("projects.dmd2.imagenet_example", "--checkpoint_path run --resolution 64", root, monkeypatch)

    # test_folder_edm.py's options (the Inception URL has no meaning offline: refused with what to use)
    with pytest.raises(AssertionError, match="exit 2"):
        run_module("projects.dmd2.evaluate_checkpoints", "--folder run --resolution 16 --label_dim 80 --ref_path digits/train "
                                               "--detector_url https://x/inception.pkl", root, monkeypatch)
    run_module("projects.dmd2.evaluate_checkpoints", "--folder run --resolution 16 --label_dim 80 --ref_path digits/train "
                                           "--scale tiny --total_eval_samples 20 --extractor "
                                           "digits:features/features.safetensors", root, monkeypatch)
    lines = [json.loads(x) for x in (root / "run/eval/results.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all(np.isfinite(x["metrics"]["fd"]) for x in lines)
    assert len(list((root / "run/eval/step_0000002/samples").glob("*.png"))) == 20
    w1, w2 = (load_file(str(root / f"run/eval/step_000000{i}/generator.safetensors")) for i in (1, 2))
    assert max_diff(w1, w2) > 0  # each checkpoint's own generator
    ema = load_file(str(root / "run/checkpoints/ckpt-00000002/ema.generator.safetensors"))
    raw = load_file(str(root / "run/checkpoints/ckpt-00000002/model.generator.safetensors"))
    assert all(torch.equal(w2[k], v) for k, v in ema.items()) and max_diff(w2, raw) > 0  # the run's EMA is scored
    out = run_module("projects.dmd2.evaluate_checkpoints", "--folder run --ref_dir digits/train --scale tiny", root, monkeypatch)
    assert "step" not in out  # evaluated checkpoints are not evaluated again


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from test_metrics import tiny_clip as build  # the metrics tests' tiny local CLIP (tests/ is on sys.path)

    return build.__wrapped__(tmp_path_factory)


def test_dmd2_text_to_image_checkpoint_evaluation(dmd2_run, tiny_clip, tmp_path, monkeypatch):
    """test_folder_sdxl.py's and test_folder_sd.py's options on a text-to-image run (its one checkpoint holds the
    teacher's own UNet as the generator: what is checked is the plumbing and the options)."""
    from projects.dmd2 import train
    from projects.dmd2.tiny import tiny_pipeline
    from shared.config import resolve, save_resolved
    from shared.train.checkpoint import Checkpointer

    pipe = tiny_pipeline("sd15", seed=1)
    pipe.save_pretrained(tmp_path / "downloads/sd15")
    run_dir = tmp_path / "run"
    save_resolved(resolve(train.Config, {"scale": "tiny", "recipe": "toy_sd15_1step", "teacher": "downloads/sd15",
                                         "run_dir": "run"}, train.PRESETS), run_dir)
    unet = {k: v.contiguous() for k, v in pipe.unet.state_dict().items()}
    Checkpointer(run_dir / "checkpoints").save(1, tensors={"model.generator": unet})
    shutil.copy(next((run_dir / "checkpoints").glob("ckpt-*/model.generator.safetensors")),
                run_dir / "generator.safetensors")  # the run has finished
    (tmp_path / "prompts.txt").write_text("a red handwritten seven\na blue handwritten three\n")
    shutil.copytree(dmd2_run / "digits/train", tmp_path / "ref")
    feats = f"digits:{dmd2_run / 'features/features.safetensors'}"
    run_module("projects.dmd2.evaluate_checkpoints",
               f"--folder run --conditioning_timestep 999 --num_step 4 --eval_res 32 --ref_dir ref "
               f"--anno_path prompts.txt --total_eval_samples 24 --clip_score --clip {tiny_clip} --scale tiny "
               f"--extractor {feats}", tmp_path, monkeypatch)
    (line,) = [json.loads(x) for x in (run_dir / "eval/results.jsonl").read_text().splitlines()]
    assert np.isfinite(line["metrics"]["fd"]) and np.isfinite(line["metrics"]["clip_score"])
    assert json.loads((run_dir / "eval/step_0000001/samples/samples.json").read_text())["timesteps"] == \
        [999, 749, 499, 249]
    shutil.rmtree(run_dir / "eval")
    run_module("projects.dmd2.evaluate_checkpoints",
               f"--folder run --image_resolution 32 --latent_resolution 16 --num_train_timesteps 1000 --eval_res 16 "
               f"--ref_dir ref --total_eval_samples 24 --model_id runwayml/stable-diffusion-v1-5 --pred_eps "
               f"--anno_path prompts.txt --scale tiny --extractor {feats}", tmp_path, monkeypatch)
    info = json.loads((run_dir / "eval/step_0000001/generator.json").read_text())
    assert info["teacher"] == "downloads/sd15"  # the hub id read from the download rule's folder
    with pytest.raises(AssertionError, match="exit 2"):  # a restated size that disagrees with the model
        run_module("projects.dmd2.evaluate_checkpoints", "--folder run --image_resolution 512 --ref_dir ref "
                                                         "--anno_path prompts.txt --scale tiny", tmp_path, monkeypatch)


def test_dmd2_text_to_image_sdxl_demo(tmp_path, monkeypatch):
    """`demo.text_to_image_sdxl --checkpoint_path CKPT --precision ... --num_step 1 --conditioning_timestep 399`
    with a released-style UNet .bin and the SDXL pipeline where the download rule puts it."""
    gradio = pytest.importorskip("gradio")
    from projects.dmd2.tiny import tiny_pipeline

    pipe = tiny_pipeline("sdxl", seed=1)
    pipe.save_pretrained(tmp_path / "downloads/sdxl_base")
    torch.save(pipe.unet.state_dict(), tmp_path / "unet.bin")
    apps = []
    real_launch = gradio.Blocks.launch

    def launch(self, **kw):
        apps.append((self, dict(kw)))
        return real_launch(self, **{**kw, "server_port": None, "prevent_thread_lock": True})

    monkeypatch.setattr(gradio.Blocks, "launch", launch)
    run_module("projects.dmd2.text_to_image_sdxl", "--checkpoint_path unet.bin --precision bfloat16 --num_step 1 "
                                                   "--conditioning_timestep 399", tmp_path, monkeypatch)
    app, kw = apps[0]
    assert (kw["server_port"], kw["share"]) == (7860, False)
    (fn,) = [f.fn for f in app.fns.values() if getattr(f.fn, "__name__", "") == "inference"]
    images, status = fn("a red handwritten seven", 3, 2)
    assert len(images) == 2 and images[0].size == (32, 32) and "timesteps [399]" in status
    gradio.close_all()


def test_dmd2_download_checkpoint_and_fsdp_configs(tmp_path, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file

    from projects.dmd2.download_hf_checkpoint import FILES

    staged = tmp_path / "staged"
    staged.mkdir()
    for i, name in enumerate(FILES):
        (staged / name).write_bytes(bytes([i]) * (i + 1))
    run(REPO / "projects/dmd2/download_hf_checkpoint.py", f"model/sdxl_run/checkpoint_model_019000 ckpt --mirror "
                                                           f"{staged}", tmp_path, monkeypatch)
    record = json.loads((tmp_path / "ckpt/download.json").read_text())
    assert sorted(record["files"]) == sorted(FILES) and (tmp_path / "ckpt/pytorch_model_1.bin").read_bytes() == b"\3" * 4

    out = run(REPO / "projects/dmd2/create_sdxl_fsdp_configs.py", "--folder fsdp_configs --master_ip 10.1.2.3 "
                                                                  "--num_machines 8 --sharding_strategy 4",
              tmp_path, monkeypatch)
    assert "HYBRID_SHARD" in out and "fsdp=full_shard" in out
    for rank in range(8):
        c = load_config_from_file(str(tmp_path / f"fsdp_configs/config_rank{rank}.yaml"))
        assert (c.machine_rank, c.main_process_ip, c.num_machines, c.num_processes) == (rank, "10.1.2.3", 8, 64)


def test_dmd2_recipe_presets_and_fsdp_config_saved(monkeypatch, tmp_path):
    """Presets by recipe come from shared.config (no argv at import); an FSDP run hands the Trainer, which saves
    config.yaml, the config with its FSDP preset (it used to save fsdp: '')."""
    from projects.dmd2 import train
    from shared.config import parse_argv, resolve

    f = tmp_path / "exp.yaml"
    f.write_text("recipe: sdxl_4step\nscale: paper\n")
    cfg = resolve(train.Config, parse_argv([str(f)], train.Config), train.PRESETS)
    assert (cfg.fsdp, cfg.fsdp_wrap, cfg.generator_lr, cfg.resolution) == ("full_shard", "sdxl", 5e-7, 1024)
    seen = {}

    class Recording:
        def __init__(self, c, **kw):
            seen["cfg"], seen["kw"] = c, kw

    monkeypatch.setattr(train, "Trainer", Recording)
    train._trainer(cfg)
    assert seen["cfg"].fsdp == "full_shard" and seen["kw"]["fsdp_plugin"] is not None


# ---- the lab's container -------------------------------------------------------------------------------------------
def _pins() -> dict[str, str]:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==") for d in deps)


def test_container_files_use_the_pinned_stack_and_serve_the_web_ui():
    from projects.sd_flux_lab import web_sd
    from projects.sd_flux_lab.original import WEB_SD_ALIASES
    from shared.config import parse_argv, resolve

    torch_pin = _pins()["torch"]
    docker = (REPO / "Dockerfile").read_text()
    (base,) = [line.split("=", 1)[1] for line in docker.splitlines() if line.startswith("ARG BASE_IMAGE=")]
    apptainer = (REPO / "apptainer.def").read_text()
    (app_base,) = [line.split(":", 1)[1].strip() for line in apptainer.splitlines() if line.startswith("From:")]
    for image in (base, app_base):
        assert image.startswith(f"pytorch/pytorch:{torch_pin}-cuda"), image  # the base image's torch is the pin
    # the stack comes from pyproject.toml alone: one pip install, of this repository, no package named elsewhere
    for text, target in ((docker, '-e ".[dev]"'), (apptainer, '-e "/app[dev]"')):
        installs = [line for line in text.splitlines() if "pip install" in line]
        assert len(installs) == 1 and installs[0].rstrip(" \\").endswith(target), installs
    assert "COPY pyproject.toml" in docker and "pyproject.toml /app/pyproject.toml" in apptainer

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    labs = compose["services"]["labs"]
    assert labs["ports"] == ["7860:7860"] and ".:/app" in labs["volumes"] and labs["working_dir"] == "/app"
    assert {v.split(":")[-1] for v in labs["volumes"]} >= {"/app/images", "/app/tuned", "/app/models", "/app/output"}
    (gpu,) = labs["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    # the service's command is our web UI entry point, listening where the port is published
    python, script, *args = labs["command"]
    assert python == "python" and (REPO / script).resolve() == (LAB / "web_sd.py")
    assert docker.splitlines()[-1] == "CMD " + json.dumps(labs["command"])
    cfg = resolve(web_sd.Config, parse_argv(args, web_sd.Config, WEB_SD_ALIASES), web_sd.PRESETS)
    assert (cfg.host, cfg.port, cfg.block) == ("0.0.0.0", 7860, True)
    assert f'exec python {script} --host 0.0.0.0 --port 7860' in apptainer
