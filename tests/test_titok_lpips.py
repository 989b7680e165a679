"""LPIPS-VGG (projects/titok_rar/losses.py), the LPIPS half of the single-stage perceptual loss: the released files'
layout (tests/data/lpips_vgg16_layout.json, names and shapes of torchvision's vgg16 `features` and of lpips 0.1.4's
vgg.pth) on the meta device, strict loading of stand-in weights saved in the official formats, the value against
the lpips package's own (recorded in the fixture), and the "lpips-convnext_s-1.0-0.1" combination."""
import json
from pathlib import Path

import pytest
import torch

from projects.titok_rar import losses
from projects.titok_rar.losses import LPIPS, LossOptions, PixelLoss, build_perceptual

FIXTURE = json.loads((Path(__file__).parent / "data/lpips_vgg16_layout.json").read_text())


def standin_lpips(shapes):
    """Deterministic stand-in tensors for the layout {name: shape}: He-scaled convs, small positive heads."""
    g = torch.Generator().manual_seed(1234)
    def order(k):
        return (k.split(".")[0], int(k.split(".")[1]) if k.startswith("features.") else 0, k)
    out = {}
    for name in sorted(shapes, key=order):
        shape = tuple(shapes[name])
        if name.startswith("lin"):
            out[name] = torch.rand(shape, generator=g) * 0.1
        elif name.endswith("bias"):
            out[name] = torch.randn(shape, generator=g) * 0.01
        else:
            out[name] = torch.randn(shape, generator=g) * (2.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
    return out


def standin_images():
    g = torch.Generator().manual_seed(5)
    return torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)


def _layout():
    return {**FIXTURE["vgg16_features"], **FIXTURE["lpips_heads"]}


@pytest.fixture(scope="module")
def lpips_folder(tmp_path_factory):
    """Stand-in weights in the official formats: torchvision's vgg16 file (features.* as there; classifier.* left
    out, it is unused) and lpips' vgg.pth (the five head tensors), under the download item's file names."""
    w = standin_lpips(_layout())
    d = tmp_path_factory.mktemp("lpips_vgg")
    torch.save({k: v for k, v in w.items() if k.startswith("features.")}, d / losses.LPIPS_TRUNK_FILE)
    torch.save({k: v for k, v in w.items() if k.startswith("lin")}, d / losses.LPIPS_HEADS_FILE)
    return d


def test_layout_equals_the_released_files_on_meta():
    import torchvision

    with torch.device("meta"):
        net = LPIPS()
        vgg = torchvision.models.vgg16()
    got = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert got == _layout()
    # the trunk part is torchvision's own vgg16 features layout (the peer the fixture was written from)
    assert {k: list(v.shape) for k, v in vgg.state_dict().items() if k.startswith("features.")} == \
        FIXTURE["vgg16_features"]
    assert sorted(FIXTURE["lpips_heads"]) == [f"lin{k}.model.1.weight" for k in range(5)]


def test_value_matches_the_lpips_package(lpips_folder):
    perc = build_perceptual(f"lpips:{lpips_folder}")
    assert isinstance(perc, losses.LPIPSPerceptual)
    a, b = standin_images()
    with torch.no_grad():
        per_image = perc.net(a, b).flatten()
        same = perc.net(a, a).flatten()
    torch.testing.assert_close(per_image, torch.tensor(FIXTURE["reference"]["lpips"]), rtol=1e-5, atol=1e-6)
    assert same.abs().max() < 1e-6 and per_image.min() > 0
    torch.testing.assert_close(perc(a, b), per_image.mean())
    perc.train()                      # a loss module's .train() must not switch dropout on in the heads
    assert not perc.net.training and not perc.net.lin0.model[0].training


def test_strict_loading_names_the_files(lpips_folder, tmp_path):
    trunk = torch.load(lpips_folder / losses.LPIPS_TRUNK_FILE, weights_only=True)
    heads = torch.load(lpips_folder / losses.LPIPS_HEADS_FILE, weights_only=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({k: v for k, v in trunk.items() if k != "features.28.bias"}, bad / losses.LPIPS_TRUNK_FILE)
    torch.save(heads, bad / losses.LPIPS_HEADS_FILE)
    with pytest.raises(ValueError, match=r"vgg16-397923af.pth \+ .*vgg.pth: weights do not match.*features.28.bias"):
        build_perceptual(f"lpips:{bad}")
    torch.save(trunk, bad / losses.LPIPS_TRUNK_FILE)
    torch.save({**heads, "lin0.model.1.weight": heads["lin0.model.1.weight"][:, :32]}, bad / losses.LPIPS_HEADS_FILE)
    with pytest.raises(ValueError, match=r"shape mismatch 1: lin0.model.1.weight"):
        build_perceptual(f"lpips:{bad}")
    (bad / losses.LPIPS_HEADS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="missing \\['vgg.pth'\\].*item=lpips_vgg"):
        build_perceptual(f"lpips:{bad}")


def test_single_stage_uses_lpips_when_given_and_combines_as_released(lpips_folder, tmp_path, monkeypatch):
    """PixelLoss with `lpips:<folder>` adds perceptual_weight x LPIPS; the released "lpips-convnext_s-1.0-0.1"
    averages (1.0 x LPIPS + 0.1 x ConvNeXt) / 1.1 (ConvNeXt here a stand-in module: its weights are 200 MB)."""
    a, b = standin_images()
    opts = LossOptions(perceptual_loss=f"lpips:{lpips_folder}", perceptual_weight=1.1, quantizer_weight=1.0)
    loss = PixelLoss(opts, build_perceptual(opts.perceptual_loss))
    q = {"quantizer_loss": torch.tensor(0.0)}
    total, parts = loss.generator_loss(a, b, q, step=0, discriminator=None)
    lp = torch.tensor(FIXTURE["reference"]["lpips"]).mean()
    torch.testing.assert_close(parts["perceptual_loss"], lp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, torch.mean((a - b) ** 2) + 1.1 * lp, rtol=1e-5, atol=1e-6)

    class FakeConvNeXt(torch.nn.Module):
        def __init__(self, path):
            super().__init__()
            self.path = path

        def forward(self, x, y):
            return torch.mean((x - y) ** 2) * 10.0

    monkeypatch.setattr(losses, "ConvNeXtPerceptual", FakeConvNeXt)
    cnx = tmp_path / "convnext_small-0c510722.pth"
    cnx.write_bytes(b"")
    both = build_perceptual(f"lpips-convnext_s-1.0-0.1:{lpips_folder},{cnx}")
    assert both.weights == [1.0, 0.1] and both.terms[1].path == str(cnx)
    torch.testing.assert_close(both(a, b), (1.0 * lp + 0.1 * 10.0 * torch.mean((a - b) ** 2)) / 1.1,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="takes two paths"):
        build_perceptual(f"lpips-convnext_s-1.0-0.1:{lpips_folder}")
    with pytest.raises(ValueError, match="expected '<name>:<weights path>'"):
        build_perceptual("lpips")
