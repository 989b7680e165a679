"""GLIDE inpainting at tiny scale: the training mask distribution, train.py for base-inpaint / upsample-inpaint
(7 / 10 input channels as the released files), loss decreasing, sampling that keeps the known pixels exactly
(library and sample.py), and glide-finetune's checkpoint names (export_original_names)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from projects.glide_finetune import sample as sample_step
from projects.glide_finetune import train as train_step
from projects.glide_finetune.glide_util import load_model
from projects.glide_finetune.inpaint import fixed_mask, inpaint_sample, random_masks
from projects.glide_finetune.tokenizer import main as tokenizer_main
from projects.glide_finetune.unet import create_model, tiny_options

REFERENCE = "/work/shared/reference/glide_checkpoints.json"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_tiny):
    root = tmp_path_factory.mktemp("glide_inpaint")
    threads = torch.get_num_threads()
    tokenizer_main({"scale": "tiny", "captions": str(digits_tiny / "train"), "out_dir": str(root / "tok")})
    torch.set_num_threads(threads)
    return root, dict(scale="tiny", data_dir=str(digits_tiny / "train"), tokenizer=str(root / "tok")), digits_tiny


def test_mask_distribution():
    g = torch.Generator().manual_seed(0)
    m = random_masks("mix", 3000, 16, g)
    assert m.shape == (3000, 1, 16, 16) and set(m.unique().tolist()) <= {0.0, 1.0}
    holes = (m == 0).sum(dim=(1, 2, 3))
    none_known = holes == 256
    halves = torch.zeros(3000, dtype=torch.bool)
    for side in ("left", "right", "top", "bottom"):
        halves |= (m == fixed_mask(side, 16)).all(dim=(1, 2, 3))
    boxes = ~none_known & ~halves
    # documented: box 0.6, half 0.3, nothing known 0.1 (3000 draws: +-0.03 is > 3 standard deviations)
    assert abs(none_known.float().mean() - 0.1) < 0.03 and abs(halves.float().mean() - 0.3) < 0.03
    assert abs(boxes.float().mean() - 0.6) < 0.03
    # a box's sides lie in [1/4, 3/4] of the image side: 4..12 px, so its area 16..144 px, one rectangle
    assert holes[boxes].min() >= 16 and holes[boxes].max() <= 144
    rows = (m[boxes] == 0).any(dim=3).sum(dim=(1, 2))
    cols = (m[boxes] == 0).any(dim=2).sum(dim=(1, 2))
    assert torch.equal(rows * cols, holes[boxes])
    # seeded: the same generator state gives the same masks (train.py draws them from its checkpointed generator)
    assert torch.equal(random_masks("mix", 50, 16, torch.Generator().manual_seed(3)),
                       random_masks("mix", 50, 16, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="mask_kind='circle'; known: mix, box, half, all"):
        random_masks("circle", 1, 8)


def test_inpaint_training_runs_and_loss_decreases(setup):
    root, base, _ = setup
    ref = json.load(open(REFERENCE))["checkpoints"]
    run = root / "base_inpaint"
    summary = train_step.main({**base, "run_dir": str(run), "inpaint": True, "max_steps": 16, "log_every": 1,
                               "learning_rate": 2e-3, "ckpt_every": 0, "test_steps": "3"})
    assert summary["steps"] == 16
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 16
    # the output conv starts at zero, so eps_hat = 0 and the loss starts at E||eps||^2 = 1
    assert abs(losses[0] - 1.0) < 0.15 and np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    info = json.loads((run / "glide.json").read_text())
    assert info["variant"] == "base-inpaint" and info["mask_kind"] == "mix"
    sd = load_file(str(run / "model.safetensors"))
    assert sd["input_blocks.0.0.weight"].shape[1] == ref["base-inpaint"]["in_channels"] == 7
    model, _, _ = load_model(path=run, model_type="base-inpaint")
    assert model.found.variant == "base-inpaint" and model.inpaint and not model.super_res
    assert (run / "samples" / "step_0000016.png").is_file()

    up = root / "up_inpaint"
    train_step.main({**base, "run_dir": str(up), "inpaint": True, "train_upsample": True, "uncond_p": 0.0,
                     "max_steps": 1, "test_steps": "2", "test_sampler": "glide_ddim"})
    sd = load_file(str(up / "model.safetensors"))
    assert sd["input_blocks.0.0.weight"].shape[1] == ref["upsample-inpaint"]["in_channels"] == 10
    assert json.loads((up / "glide.json").read_text())["variant"] == "upsample-inpaint"
    # fine-tuning an inpainting run into the wrong variant is refused, naming what was found
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match=r"train_upsample=False but init .* is a GLIDE base-inpaint "
                                          r"\(these options train a GLIDE base\)"):
        train_step.main({**base, "run_dir": str(root / "wrong"), "train": "all", "init": str(run), "max_steps": 1})
    with pytest.raises(ConfigError, match="'test_mask': 'circle'; allowed: center, left, right, top, bottom"):
        train_step.main({**base, "run_dir": str(root / "wrong"), "inpaint": True, "test_mask": "circle"})


def _random_inpaint_model(super_res: bool):
    torch.manual_seed(0)
    opts = {**tiny_options(super_res=super_res, inpaint=True, image_size=16 if super_res else 8), "n_vocab": 300}
    model = create_model(opts).eval()
    with torch.no_grad():  # no zero output layer: the sample really depends on the network
        model.out[-1].weight.normal_(0, 0.05)
    return model, opts


@pytest.mark.parametrize("super_res,sampler", [(False, "glide"), (False, "glide_ddim"), (True, "glide_ddim")])
def test_sampling_keeps_known_pixels_exactly(setup, super_res, sampler):
    root, _, _ = setup
    from projects.glide_finetune.tokenizer import load_tokenizer

    tok = load_tokenizer(str(root / "tok"))
    model, opts = _random_inpaint_model(super_res)
    size = int(opts["image_size"])
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (2, 3, size, size), generator=g).float() / 127.5 - 1  # 8-bit values
    mask = torch.cat([fixed_mask("center", size), fixed_mask("left", size)])
    low = torch.rand(2, 3, size // 4, size // 4, generator=g) * 2 - 1 if super_res else None
    out = inpaint_sample(model, opts, tok, ["a red handwritten seven"] * 2, image, mask, seeds=[0, 1], low_res=low,
                         sampler=sampler, steps="4", guidance_scale=3.0)
    known = mask.expand_as(image).bool()
    assert torch.equal(out[known], image[known])
    assert (out[~known] - image[~known]).abs().mean() > 0.05  # the hole is generated, not copied
    with pytest.raises(ValueError, match="only GLIDE's own samplers"):
        inpaint_sample(model, opts, tok, ["x"] * 2, image, mask, seeds=[0, 1], low_res=low, sampler="plms")


def test_sample_step_inpaints_a_folder(setup):
    root, base, digits = setup
    run = root / "base_inpaint"
    if not (run / "model.safetensors").is_file():
        train_step.main({**base, "run_dir": str(run), "inpaint": True, "max_steps": 1})
    src = root / "to_inpaint"
    src.mkdir()
    files = sorted((digits / "test").glob("*.png"))[:3]
    for f in files:
        Image.open(f).convert("RGB").resize((8, 8), Image.BICUBIC).save(src / f.name)
        (src / f.with_suffix(".txt").name).write_text(f.with_suffix(".txt").read_text())
    own = np.full((8, 8), 255, np.uint8)
    own[:, 4:] = 0  # the second image brings its own mask: fill the right half
    Image.fromarray(own).save(src / (files[1].stem + ".mask.png"))
    out = root / "inpainted"
    info = sample_step.main({"scale": "tiny", "base": str(run), "inpaint_images": str(src), "out_dir": str(out),
                             "inpaint_mask": "center", "steps": "3"})
    assert info["sampler"] == "glide" and info["num_images"] == 3  # plms cannot keep pixels: GLIDE's own
    for i, f in enumerate(files):
        got = np.asarray(Image.open(out / f.name))
        want = np.asarray(Image.open(src / f.name))
        keep = (fixed_mask("center", 8) if i != 1 else torch.from_numpy(own >= 128).float()[None, None])
        keep = keep[0, 0].bool().numpy()
        assert got.shape == (8, 8, 3) and np.array_equal(got[keep], want[keep]), f.name
        assert (out / f.with_suffix(".txt").name).is_file()


def test_original_checkpoint_names(setup):
    root, base, _ = setup
    # glide-finetune: glide-ft-{epoch}x{train_idx}.pt, train_idx = 0-based batch index within the epoch
    assert train_step.original_name(1, 40) == (0, 0)
    assert train_step.original_name(40, 40) == (0, 39)
    assert train_step.original_name(41, 40) == (1, 0)
    assert train_step.original_name(5000, None) == (0, 4999)
    run = root / "named"
    # tiny: 160 images / batch 4 = 40 steps per epoch; ckpt_every 2 -> exports after steps 2 and 3 (the end)
    train_step.main({**base, "run_dir": str(run), "export_original_names": True, "ema_decay": 0.9})
    names = sorted(p.name for p in (run / "exports").iterdir())
    assert names == ["ema_0.9_0x000001.pt", "ema_0.9_0x000002.pt", "glide-ft-0x1.pt", "glide-ft-0x2.pt"]
    raw = torch.load(run / "exports" / "glide-ft-0x2.pt", weights_only=True)
    ema = torch.load(run / "exports" / "ema_0.9_0x000002.pt", weights_only=True)
    final = load_file(str(run / "model.safetensors"))  # EMA weights at step 3
    assert set(raw) == set(ema) == set(final)
    assert all(torch.equal(ema[k], final[k]) for k in final)
    assert not all(torch.equal(raw[k], final[k]) for k in final)
    model, _, _ = load_model(path=run / "exports" / "glide-ft-0x2.pt")  # the original's files load here too
    assert model.found.variant == "base"
    assert model.found.kind == "fine-tuned"
    ema_model, _, _ = load_model(path=run / "exports" / "ema_0.9_0x000002.pt")
    assert ema_model.found.kind == "ema", ema_model.found.message
