"""DMD2 at tiny scale: the EDM ADM network's key layout, the loss mathematics, the two time-scale rule, backward
simulation, one step of every loss term on SD1.5 / SDXL / EDM shapes, LoRA, resume, sampling shards, evaluate, demo."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from projects.dmd2.backbones import EDMBackbone
from projects.dmd2.edm import EDM_CONFIGS, build_edm, count_parameters, load_state_dict_file
from projects.dmd2.losses import DistributionMatchingLoss, dm_gradient
from projects.dmd2.networks import export_state_dict
from projects.dmd2.tiny import save_tiny_edm, tiny_pipeline

# One intra-op thread: on a shared 2-core machine a second thread mostly waits, and tiny ops slow down ~10x.
torch.set_num_threads(1)


# ---- fixtures: tiny data and teachers (built once per module) --------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from shared.toy import prepare as digits_prepare
    from projects.dmd2 import prepare

    root = tmp_path_factory.mktemp("dmd2")
    digits_prepare.main({"scale": "tiny", "out_dir": str(root / "digits")})
    prepare.main({"scale": "tiny", "kind": "edm", "images": str(root / "digits/train"),
                  "eval_images": str(root / "digits/test"), "out_dir": str(root / "edm")})
    save_tiny_edm(root / "teacher", seed=0)
    return root


@pytest.fixture(scope="module")
def pipes(work):
    from projects.dmd2 import prepare

    for arch in ("sd15", "sdxl"):
        tiny_pipeline(arch, seed=1).save_pretrained(work / f"pipe_{arch}")
        prepare.main({"scale": "tiny", "kind": "sd", "teacher": str(work / f"pipe_{arch}"),
                      "images": str(work / "digits/train"), "eval_images": str(work / "digits/test"),
                      "out_dir": str(work / f"sd_{arch}")})
    return work


@pytest.fixture(scope="module")
def tiny_run(work):
    from projects.dmd2 import train

    return train.main(_cfg(work, "for_sampling", recipe="digits_1step", max_steps=1))


def _cfg(work, run: str, recipe: str = "digits_1step_gan", recipe_override: str = "", **kw):
    """Options of a tiny run of `recipe` on the fixtures (teacher and data by backbone); `recipe_override`: run
    that recipe on `recipe`'s teacher and data."""
    base = {"scale": "tiny", "recipe": recipe_override or recipe, "teacher": str(work / "teacher"),
            "data": str(work / "edm/real.lmdb"), "run_dir": str(work / "runs" / run), "threads": 1}
    if recipe.startswith(("toy_sd", "sd")):
        arch = "sdxl" if "sdxl" in recipe else "sd15"
        base.update(teacher=str(work / f"pipe_{arch}"), data=str(work / f"sd_{arch}/real.lmdb"))
    return {**base, **kw}


# ---- the EDM network ------------------------------------------------------------------------------------------------
def test_imagenet64_network_matches_edm_adm_layout():
    """EDM's edm-imagenet-64x64-cond-adm: 296M parameters; key names and shapes as in NVlabs/edm networks.py."""
    with torch.device("meta"):
        net = build_edm("imagenet64")
    n = count_parameters(net)
    assert 295_500_000 < n < 296_500_000, n
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = {
        "model.map_layer0.weight": (768, 192), "model.map_layer1.weight": (768, 768),
        "model.map_label.weight": (768, 1000), "model.enc.64x64_conv.weight": (192, 3, 3, 3),
        "model.enc.64x64_block0.affine.weight": (384, 768), "model.enc.32x32_down.conv0.resample_filter": (1, 1, 2, 2),
        "model.enc.32x32_down.skip.resample_filter": (1, 1, 2, 2), "model.enc.32x32_block0.qkv.weight": (1152, 384, 1, 1),
        "model.enc.32x32_block0.skip.weight": (384, 192, 1, 1), "model.enc.8x8_block2.proj.weight": (768, 768, 1, 1),
        "model.dec.8x8_in0.norm2.weight": (768,), "model.dec.8x8_in1.conv1.weight": (768, 768, 3, 3),
        "model.dec.64x64_block3.conv0.weight": (192, 384, 3, 3), "model.dec.16x16_up.conv0.resample_filter": (1, 1, 2, 2),
        "model.out_norm.weight": (192,), "model.out_conv.weight": (3, 192, 3, 3),
    }
    for k, shape in expected.items():
        assert shapes.get(k) == shape, (k, shapes.get(k))
    assert "model.map_label.bias" not in shapes and "model.map_augment.weight" not in shapes
    assert "model.enc.64x64_block0.qkv.weight" not in shapes  # no attention at 64x64
    assert not any("map_noise" in k for k in shapes)  # the positional embedding has no parameters
    assert sum(k.startswith("model.enc.") for k in shapes) and all(k.startswith("model.") for k in shapes)


def test_edm_state_dict_roundtrip_and_strict_loading(work, tmp_path):
    bb = EDMBackbone.load(work / "teacher")
    sd = load_state_dict_file(work / "teacher/model.safetensors")
    x = torch.randn(2, 3, 32, 32)
    labels = torch.eye(80)[:2]
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pt")  # a DDP-prefixed .pt state dict
    again = EDMBackbone.load(tmp_path / "ddp.pt", config="digits")
    with torch.no_grad():
        assert torch.equal(bb.teacher(x, torch.full((2,), 1.5), labels), again.teacher(x, torch.full((2,), 1.5), labels))
    del sd["model.out_conv.weight"]
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match="out_conv"):
        EDMBackbone.load(tmp_path / "broken.pt", config="digits")


# ---- loss mathematics ------------------------------------------------------------------------------------------------
def test_dm_gradient_formula():
    x = torch.randn(3, 2, 4, 4)
    real, fake = torch.randn_like(x), torch.randn_like(x)
    g = dm_gradient(x, real, fake)
    p_real, p_fake = x - real, x - fake
    want = (p_real - p_fake) / p_real.abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(g, want)
    assert torch.allclose(g[1], want[1]) and not torch.allclose(g, p_real - p_fake)


@pytest.mark.parametrize("channels,size", [(32, 8), (64, 4), (32, 2), (16, 1)])
def test_gan_head_tells_samples_apart_and_learns(channels, size):
    """Regression: a head that reduced the bottleneck to 1x1 before a GroupNorm with one channel per group gave
    every sample the same logit, so the GAN term was silently a constant."""
    from projects.dmd2.networks import GANHead

    torch.manual_seed(0)
    head = GANHead(channels, size, layout="toy")
    # real and fake differ in layout and mean (per-sample norms would erase a plain offset)
    pattern = torch.zeros(size, size)
    pattern[0] = 2.0  # a bright top row: it has a mean and a layout
    real = torch.randn(8, channels, size, size) * 0.5 + pattern
    fake = torch.randn(8, channels, size, size) * 0.5 - pattern
    logits = head(torch.cat([real, fake]))
    assert logits.shape == (16,) and logits.std() > 1e-3
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.softplus(head(fake)).mean() + F.softplus(-head(real)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1.2  # a constant logit cannot go below 2 log 2 = 1.386


def test_dm_loss_zero_when_fake_equals_real_and_gradient_is_the_dm_direction(work):
    bb = EDMBackbone.load(work / "teacher")
    fake = bb.copy_teacher().eval()
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    cond = {"class_labels": torch.eye(80)[:4]}
    loss, _ = DistributionMatchingLoss()(bb, x, fake, bb.teacher, cond, None)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(x.grad) == 0

    with torch.no_grad():  # a different fake denoiser: the generator gradient is (p_real - p_fake)/|p_real| / N
        for p in fake.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x.grad = None
    torch.manual_seed(3)
    loss, _ = DistributionMatchingLoss()(bb, x, fake, bb.teacher, cond, None)
    loss.backward()
    torch.manual_seed(3)
    t = torch.randint(20, 981, (4,))
    x_t = bb.add_noise(x.detach(), torch.randn_like(x), t)
    with torch.no_grad():
        g = dm_gradient(x.detach(), bb.denoise(bb.teacher, x_t, t, cond), bb.denoise(fake, x_t, t, cond))
    assert torch.count_nonzero(x.grad) > 0
    assert torch.allclose(x.grad, g / x.numel(), atol=1e-9)


# ---- the training loop -----------------------------------------------------------------------------------------------
def _trainer_and_step(work, run, recipe="digits_1step_gan", **kw):
    from projects.dmd2.recipes import presets_for
    from projects.dmd2.train import Config, build
    from shared.config import resolve
    from shared.train.trainer import Trainer

    cfg = resolve(Config, _cfg(work, run, recipe, **kw), presets_for(recipe))
    trainer = Trainer(cfg)
    backbone, step, _ = build(cfg, trainer)
    return cfg, trainer, backbone, step


def test_generator_updates_exactly_every_ratio_steps(work):
    from shared.data import LMDBDataset

    cfg, trainer, bb, step = _trainer_and_step(work, "ratio", dfake_gen_update_ratio=3, max_steps=7, ckpt_every=0)
    gen, fake = trainer.unit("generator").raw, trainer.unit("fake").raw
    changed_g, changed_f = [], []
    loader = trainer.loader(LMDBDataset(cfg.data, fields=["image", "label"]), 2)
    for batch in trainer.batches(loader):
        before_g = [p.detach().clone() for p in gen.parameters()]
        before_f = [p.detach().clone() for p in fake.parameters()]
        s = trainer.global_step
        step.step(batch, s)
        if any(not torch.equal(a, b) for a, b in zip(before_g, gen.parameters())):
            changed_g.append(s)
        if any(not torch.equal(a, b) for a, b in zip(before_f, fake.parameters())):
            changed_f.append(s)
    trainer.finish()
    assert changed_g == [0, 3, 6]
    assert changed_f == list(range(7))
    assert trainer.unit("generator").scheduler.last_epoch == 3  # the LR schedule counts generator updates


def test_backward_simulation_feeds_the_generator_what_inference_feeds_it(work):
    from projects.dmd2.loop import few_step

    _, trainer, bb, step = _trainer_and_step(work, "backsim", recipe="digits_1step",
                                             denoising_step_list=[999, 749, 499, 249], backward_simulation=True)
    gen = trainer.unit("generator").raw
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(module, args, kwargs):
        seen.append((args[0].detach().clone(), args[1].detach().clone()))

    handle = gen.register_forward_pre_hook(record, with_kwargs=True)
    cond = {"class_labels": torch.eye(80)[:2]}
    ks = set()
    for global_step in range(8):
        k = step._shared_index(global_step, "cpu")
        ks.add(k)
        torch.manual_seed(100 + global_step)
        x_in, t = step.generator_input(torch.zeros(2, 3, 32, 32), cond, None, global_step)
        assert torch.equal(t, torch.full((2,), step.timesteps[k]))
        seen.clear()  # inference from the same noise stream: its k-th generator input must be x_in
        torch.manual_seed(100 + global_step)
        with torch.no_grad():
            few_step(bb, trainer.unit("generator").model, torch.randn(2, 3, 32, 32), cond, step.timesteps)
        x_k, sigma_k = seen[k]
        assert torch.equal(x_k, x_in) and torch.allclose(sigma_k, bb.sigma(t))
    handle.remove()
    trainer.finish()
    assert len(ks) > 1 and 0 in ks or len(ks) > 1  # several steps of the list were simulated


def _one_step_losses(work, run, recipe, **kw):
    from shared.data import LMDBDataset

    cfg, trainer, bb, step = _trainer_and_step(work, run, recipe, max_steps=1, ckpt_every=0, **kw)
    fields = ["image", "label"] if cfg.backbone == "edm" else ["latent", "caption"]
    loader = trainer.loader(LMDBDataset(cfg.data, fields=fields), 2)
    logs = None
    for batch in trainer.batches(loader):
        logs = step.step(batch, trainer.global_step)
    trainer.finish()
    return logs, trainer


@pytest.mark.parametrize("recipe", ["digits_1step_gan", "toy_sd15_1step", "toy_sdxl_4step"])
def test_one_step_of_every_loss_term(pipes, recipe):
    logs, trainer = _one_step_losses(pipes, f"all_{recipe}", recipe)
    for key in ("loss_dm", "loss_g_gan", "loss_fake", "loss_d", "d_real", "d_fake"):
        assert key in logs and torch.isfinite(logs[key]), (key, logs)
    groups = trainer.unit("fake").optimizer.param_groups  # the toy recipes train the fresh GAN head faster
    assert [g["lr"] for g in groups] == [5e-5, 5e-4] and len(groups[1]["params"]) == len(list(
        trainer.unit("fake").raw.head.parameters()))
    if recipe.startswith("digits"):  # generator, fake and real start as one network and no guidance is applied
        assert logs["loss_dm"].item() == 0.0
    else:  # classifier-free guidance on the real denoiser only: a nonzero DM gradient from the first step
        assert logs["loss_dm"].item() > 0.0
    assert trainer.skipped_steps == 0


def test_lora_generator_trains_only_the_adapter_and_exports_merged_weights(pipes):
    from projects.dmd2 import train
    from projects.dmd2.generation import load_generator
    from safetensors.torch import load_file

    run = train.main(_cfg(pipes, "lora", "toy_sdxl_4step", lora_rank=4, max_steps=1, generator_lr=1e-2))
    ckpt = sorted((run / "checkpoints").glob("ckpt-*"))[-1]
    saved = load_file(str(ckpt / "model.generator.safetensors"))
    assert saved and all("lora_" in k for k in saved)  # the checkpoint holds the adapter only
    exported = load_file(str(run / "generator.safetensors"))
    teacher = tiny_pipeline("sdxl", seed=1).unet.state_dict()
    assert set(exported) == set(teacher)
    assert any(not torch.equal(exported[k], teacher[k]) for k in teacher)  # the adapter is merged in
    net, info, _ = load_generator(run)
    assert info["denoising_step_list"] == [999, 749, 499, 249]


def test_resume_continues_bit_for_bit(work):
    from projects.dmd2 import train
    from safetensors.torch import load_file

    train.main(_cfg(work, "straight", max_steps=3, dfake_gen_update_ratio=2))
    train.main(_cfg(work, "resumed", max_steps=2, dfake_gen_update_ratio=2))
    run = train.main(_cfg(work, "resumed", max_steps=3, dfake_gen_update_ratio=2))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [1, 2, 3]  # the resumed run continued at step 3
    a = load_file(str(work / "runs/straight/generator.safetensors"))
    b = load_file(str(run / "generator.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- sampling, evaluation, demo ------------------------------------------------------------------------------------
def test_sample_shards_are_independent_and_deterministic(work, tiny_run, tmp_path):
    from projects.dmd2 import sample

    run = tiny_run
    prompts = str(work / "edm/eval_prompts.txt")
    common = {"scale": "tiny", "checkpoint": str(run), "prompts": prompts, "num_images": 6, "batch_size": 4}
    sample.main({**common, "out_dir": str(tmp_path / "one")})
    for k in (1, 0):  # shards in any order, with another batch size
        sample.main({**common, "out_dir": str(tmp_path / "two"), "num_shards": 2, "shard_index": k, "batch_size": 1})
    for i in range(6):
        assert (tmp_path / f"one/{i:06d}.png").read_bytes() == (tmp_path / f"two/{i:06d}.png").read_bytes()
    assert json.loads((tmp_path / "two/samples.json").read_text())["num_images"] == 6
    assert sample.step_list(4, -1, [999]) == [999, 749, 499, 249] and sample.step_list(1, 399, [999]) == [399]


def test_evaluate_and_demo(work, tiny_run, tmp_path, monkeypatch):
    from projects.dmd2 import demo, evaluate, sample
    from shared.toy import train_features

    monkeypatch.chdir(tmp_path)
    feats = tmp_path / "features"
    train_features.main({"scale": "tiny", "data_dir": str(work / "digits"), "out_dir": str(feats)})
    sample.main({"scale": "tiny", "mode": "teacher", "backbone": "edm", "teacher": str(work / "teacher"),
                 "prompts": str(work / "edm/eval_prompts.txt"), "out_dir": str(tmp_path / "s"), "steps": 1,
                 "num_images": 24})  # more images than the toy features' 16 dimensions
    out = tmp_path / "eval.json"
    evaluate.main({"scale": "tiny", "images": str(tmp_path / "s"), "reference": str(work / "digits/train"),
                   "extractor": f"digits:{feats}/features.safetensors", "experiment": "teacher",
                   "out": str(out), "resolution": 16, "patch_fid": True, "patch_size": 8})
    result = json.loads(out.read_text())
    assert (result["sampler"], result["steps"]) == (sample.Config.sampler, 1)  # read from samples.json
    names = {m["metric"] for m in result["metrics"]}
    assert "fd" in names and any(n.startswith("prompt_accuracy") for n in names), names
    assert json.loads((tmp_path / "eval_patch.json").read_text())["resolution"] == "8x8"
    from projects.dmd2 import compare
    from PIL import Image
    grid = compare.main({"scale": "tiny", "folders": [str(tmp_path / "s")] * 2, "labels": ["a", "b"],
                         "out": str(tmp_path / "grid.png")})
    with Image.open(grid) as im, Image.open(tmp_path / "s" / "000003.png") as last:
        assert im.size == (compare.LABEL_WIDTH + 4 * 32, 2 * 32)
        tile = im.crop((compare.LABEL_WIDTH + 3 * 32, 32, compare.LABEL_WIDTH + 4 * 32, 64))
        assert tile.tobytes() == last.convert("RGB").resize((32, 32), Image.NEAREST).tobytes()
    with pytest.raises(FileNotFoundError, match="fewer samples"):
        compare.main({"scale": "tiny", "folders": [str(tmp_path / "s")], "n": 100, "out": str(tmp_path / "g2.png")})
    png = demo.main({"scale": "tiny", "checkpoint": str(tiny_run), "prompt": ["a red handwritten seven"], "num_step": 2,
                     "out": str(tmp_path / "demo.png")})
    assert png.is_file()


def test_released_edm_generator_file_samples_with_itself_as_architecture(tmp_path):
    """The paper ImageNet-64 rule samples DMD2's released generator (a .bin state dict with a .json beside it)
    with teacher= the same file: a 1-step EDM generator needs the architecture, not the teacher's weights."""
    from safetensors.torch import load_file

    from projects.dmd2 import sample

    folder = save_tiny_edm(tmp_path / "edm", seed=3)
    weights = tmp_path / "released" / "pytorch_model.bin"
    weights.parent.mkdir()
    torch.save(load_file(str(folder / "model.safetensors")), weights)
    weights.with_suffix(".json").write_text(json.dumps(
        {"backbone": "edm", "teacher_config": "digits", "denoising_step_list": [999]}))
    (tmp_path / "classes.txt").write_text("0\n7\n")
    out = tmp_path / "s"
    sample.main({"scale": "tiny", "checkpoint": str(weights), "teacher": str(weights),
                 "prompts": str(tmp_path / "classes.txt"), "num_images": 2, "out_dir": str(out)})
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png"]
    assert json.loads((out / "samples.json").read_text())["timesteps"] == [999]


# ---- generator conditioning and phase-2 initialisation (DMD2's published behaviour) --------------------------------
def _one_step_with_hooks(trainer, step, cfg):
    from shared.data import LMDBDataset

    seen = {}

    def gen_hook(module, args, kwargs):
        seen.setdefault("generator", {**kwargs})

    def fake_hook(module, args, kwargs):
        seen["fake_cond"], seen["real_cond"] = args[4], args[6]

    h1 = trainer.unit("generator").raw.register_forward_pre_hook(gen_hook, with_kwargs=True)
    h2 = trainer.unit("fake").raw.register_forward_pre_hook(fake_hook, with_kwargs=True)
    fields = ["image", "label"] if cfg.backbone == "edm" else ["latent", "caption"]
    for batch in trainer.batches(trainer.loader(LMDBDataset(cfg.data, fields=fields), 2)):
        seen["batch"] = batch
        step.step(batch, trainer.global_step)
    h1.remove()
    h2.remove()
    trainer.finish()
    return seen


def test_generator_conditioning_is_drawn_apart_from_the_real_batch(pipes, tmp_path):
    # EDM: uniform random labels for the generator, fake denoiser and DM loss; the real labels go to the GAN only
    cfg, trainer, bb, step = _trainer_and_step(pipes, "cond_edm", generator_cond="random", max_steps=1, ckpt_every=0)
    seen = _one_step_with_hooks(trainer, step, cfg)
    real = torch.eye(80)[seen["batch"]["label"].long()]
    assert torch.equal(seen["real_cond"]["class_labels"], real)
    assert torch.equal(seen["generator"]["class_labels"], seen["fake_cond"]["class_labels"])
    assert not torch.equal(seen["fake_cond"]["class_labels"], real)
    # SD: prompts drawn from train_prompts, not the batch's captions
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a green handwritten four\n")
    cfg, trainer, bb, step = _trainer_and_step(pipes, "cond_sd", "toy_sd15_1step", generator_cond="random",
                                               train_prompts=str(prompts), max_steps=1, ckpt_every=0)
    seen = _one_step_with_hooks(trainer, step, cfg)
    want, _ = bb.condition(["a green handwritten four"] * 2)
    real, _ = bb.condition(list(seen["batch"]["caption"]))
    assert torch.equal(seen["generator"]["encoder_hidden_states"], want["encoder_hidden_states"])
    assert torch.equal(seen["real_cond"]["encoder_hidden_states"], real["encoder_hidden_states"])
    assert "a green handwritten four" not in list(seen["batch"]["caption"])


def test_sd15_phase_two_starts_from_phase_one_or_a_released_training_checkpoint(pipes, tmp_path):
    from safetensors.torch import load_file

    from projects.dmd2 import train
    from projects.dmd2.networks import GANHead
    from projects.dmd2.recipes import presets_for
    from shared.config import resolve
    from shared.train.checkpoint import Checkpointer

    phase1 = train.main(_cfg(pipes, "sd15_phase1", "toy_sd15_1step", recipe_override="sd15"))
    cfg = resolve(train.Config, _cfg(pipes, "sd15_phase2", "sd15_gan", init_from=str(phase1)), presets_for("sd15_gan"))
    _, step, _ = train.build(cfg)
    gen = load_file(str(phase1 / "generator.safetensors"))
    assert all(torch.equal(step.generator.state_dict()[k], v) for k, v in gen.items())
    fake = Checkpointer.load_tensors(Checkpointer(phase1 / "checkpoints").latest(), "model.fake")
    assert all(torch.equal(step.fake.unet.state_dict()[k[5:]], v) for k, v in fake.items() if k.startswith("unet."))
    assert step.fake.head is not None and not any(k.startswith("head.") for k in fake)  # phase 1 had no GAN

    # a released checkpoint folder: pytorch_model.bin (generator), pytorch_model_1.bin (guidance model)
    released = tmp_path / "checkpoint_model_039000"
    released.mkdir()
    torch.save({k: v + 1 for k, v in gen.items()}, released / "pytorch_model.bin")
    head = GANHead(*step.backbone.bottleneck_shape(), layout="published")
    unet = step.fake.unet.state_dict()
    guidance = {**{f"fake_unet.{k}": v + 2 for k, v in unet.items()}, **{f"real_unet.{k}": v for k, v in unet.items()},
                **{f"cls_pred_branch.{k[4:]}": v for k, v in head.state_dict().items()}}
    torch.save(guidance, released / "pytorch_model_1.bin")
    cfg = resolve(train.Config, _cfg(pipes, "sd15_released", "sd15_gan", init_from=str(released),
                                     gan_head_layout="published"), presets_for("sd15_gan"))
    _, step, _ = train.build(cfg)
    assert all(torch.equal(step.generator.state_dict()[k], v + 1) for k, v in gen.items())
    assert all(torch.equal(step.fake.unet.state_dict()[k], v + 2) for k, v in unet.items())
    assert all(torch.equal(step.fake.head.state_dict()[k], v) for k, v in head.state_dict().items())


def test_exported_weights_inside_an_ema_swap_stay_the_ema_weights():
    """generator.safetensors is exported inside `ema.swap(raw)`; on CPU `.cpu()` aliases the parameters, so an
    export that does not copy became the live weights again when the swap restored them."""
    from shared.train.ema import EMA

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, decay=0.5, warmup="none")
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    with ema.swap(net):
        exported = export_state_dict(net)
        in_swap = {k: v.clone() for k, v in net.state_dict().items()}
    assert not torch.equal(in_swap["weight"], expected["weight"])  # the EMA differs from the live weights
    for k in exported:
        assert torch.equal(exported[k], in_swap[k]), k
    assert torch.equal(net.weight, expected["weight"])  # live weights are back
