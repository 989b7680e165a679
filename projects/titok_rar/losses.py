"""Tokenizer losses: stage 1 (proxy codes), stage 2 / single stage (pixels + perceptual + GAN + LeCam), KL.

    loss = ProxyCodeLoss(quantizer_weight=1.0)                       # stage 1
    total, parts = loss(logits, target_codes, quantizer_out)
    pix = PixelLoss(LossOptions(...), perceptual=build_perceptual("digits:<features.safetensors>"))
    total, parts = pix.generator_loss(images, recon, extra, step, discriminator)
    d_loss, parts = pix.discriminator_loss(images, recon, step, discriminator)

Same terms and weights as bytedance/1d-tokenizer's ReconstructionLoss_Stage1 / _Stage2 / _Single_Stage
(modeling/modules/losses.py): cross-entropy over the VQGAN's 1024 codes + quantizer loss; L1/L2 reconstruction,
perceptual, hinge GAN once `step >= discriminator_start` (generator: -mean(D(recon)) x discriminator_weight x
discriminator_factor), discriminator hinge loss plus LeCam regularisation against EMAs of the mean real / fake
logits; for the VAE, reconstruction / exp(logvar) + kl_weight x KL averaged over the batch. Images are in [0, 1].

Perceptual losses by name (`perceptual_loss` in the configs, `<name>:<weights>`), as the original's
PerceptualLoss (modeling/modules/perceptual_loss.py) names them:
- "convnext_s:<file>": MSE between an ImageNet ConvNeXt-S's logits of the two images (224 px, ImageNet-normalised),
  the torchvision `convnext_small` weights file (download.py item=convnext_small);
- "lpips:<folder>": LPIPS-VGG (`LPIPS` below; our own network in the released files' layout: torchvision's vgg16
  `features` and the lpips package's v0.1 linear heads `lin0..lin4`), the folder holding vgg16-397923af.pth and
  vgg.pth (download.py item=lpips_vgg); images [0,1] are mapped to [-1,1] as the original's LPIPS does;
- "lpips-convnext_s-<a>-<b>:<lpips folder>,<convnext file>": both, averaged as (a x LPIPS + b x ConvNeXt) / (a + b),
  the released single-stage recipe's "lpips-convnext_s-1.0-0.1" (configs/training/TA-TiTok/*.yaml, with
  perceptual_weight 1.1);
- "digits:<features.safetensors>" (tiny/toy, ours): MSE between the frozen digits CNN's features (shared/toy),
  trained on that very domain. No VGG16 / LPIPS weights can be downloaded here, so the tiny and toy chains use
  this one; the LPIPS path runs whenever its two files are given.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def lecam_loss(real_mean: torch.Tensor, fake_mean: torch.Tensor, ema_real: torch.Tensor,
               ema_fake: torch.Tensor) -> torch.Tensor:
    """LeCam regulariser (Tseng et al. 2021): keeps D's real/fake outputs near the other side's running mean."""
    return F.relu(real_mean - ema_fake).pow(2).mean() + F.relu(ema_real - fake_mean).pow(2).mean()


class ProxyCodeLoss(nn.Module):
    """Stage 1: cross-entropy of the decoder's logits (B, C, g, g) against the teacher's codes (B, g*g)."""
    def __init__(self, quantizer_weight: float = 1.0):
        super().__init__()
        self.quantizer_weight = quantizer_weight

    def forward(self, logits: torch.Tensor, codes: torch.Tensor, q: Mapping[str, torch.Tensor]):
        b, c = logits.shape[:2]
        ce = F.cross_entropy(logits.float().reshape(b, c, -1), codes.reshape(b, -1).long())
        total = ce + self.quantizer_weight * q["quantizer_loss"]
        acc = (logits.reshape(b, c, -1).argmax(1) == codes.reshape(b, -1)).float().mean()
        return total, {"ce": ce.detach(), "quantizer_loss": q["quantizer_loss"].detach(),
                       "commitment_loss": q["commitment_loss"].detach(), "code_accuracy": acc}


class ConvNeXtPerceptual(nn.Module):
    """The original's "convnext_s": MSE between ConvNeXt-S ImageNet logits of the two images (224 px)."""
    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, path: str):
        super().__init__()
        import torchvision
        from projects.titok_rar.hub import read_state_dict
        self.net = torchvision.models.convnext_small()
        self.net.load_state_dict(read_state_dict(path), strict=True)
        self.net.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b]).float()
        x = F.interpolate(x, size=224, mode="bilinear", align_corners=False, antialias=True)
        la, lb = self.net((x - self.mean) / self.std).chunk(2)
        return F.mse_loss(la, lb)


class DigitsPerceptual(nn.Module):
    """Toy perceptual distance: MSE between the frozen digits CNN's features of two [0,1] image batches."""
    def __init__(self, path: str):
        super().__init__()
        from shared.toy import features
        self.net = features.load(path).requires_grad_(False).eval()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.net.features(a.float() * 255.0), self.net.features(b.float() * 255.0))


# torchvision's vgg16 `features` up to relu5_3 (layer 29): conv widths, "M" = 2x2 max-pool; torchvision's layer
# indices (features.<i>.weight) follow from this order. The lpips package's pretrained_networks.vgg16 slices that
# Sequential at 4 / 9 / 16 / 23 / 30, i.e. taps the ReLUs 3, 8, 15, 22, 29 (relu1_2 ... relu5_3).
VGG16_FEATURES = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# lpips' ScalingLayer (the original's _LPIPS_MEAN / _LPIPS_STD): on [-1, 1] images
LPIPS_SHIFT, LPIPS_SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)
LPIPS_TRUNK_FILE, LPIPS_HEADS_FILE = "vgg16-397923af.pth", "vgg.pth"   # the names download.py item=lpips_vgg gives


class _LinHead(nn.Module):
    """lpips' NetLinLayer with use_dropout: `model` = (Dropout, 1x1 conv to one channel, no bias) -> lin<k>.model.1."""
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS-VGG (Zhang et al. 2018): unit-normalised VGG16 activations at five depths, squared differences weighted
    per channel by the linear heads, averaged over space and summed. (B,3,H,W) in [0,1] twice -> (B,1,1,1).
    State dict: `features.<i>.{weight,bias}` (torchvision vgg16) + `lin<k>.model.1.weight` (lpips vgg.pth); the
    scaling constants are non-persistent buffers (in neither file). Always in eval mode (dropout off), frozen."""
    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for v in VGG16_FEATURES:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(ch, v, 3, padding=1), nn.ReLU()]
                ch = v
        self.features = nn.Sequential(*layers)
        for k, c in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{k}", _LinHead(c))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, last = [], LPIPS_TAPS[-1]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                out.append(x)
            if i == last:
                break
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = (torch.cat([a, b]).float() * 2.0 - 1.0 - self.shift) / self.scale
        total = 0.0
        for k, f in enumerate(self._taps(x)):
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            fa, fb = f.chunk(2)
            total = total + getattr(self, f"lin{k}").model((fa - fb) ** 2).mean(dim=(2, 3), keepdim=True)
        return total

    @classmethod
    def from_files(cls, trunk: str | Path, heads: str | Path) -> "LPIPS":
        """torchvision's vgg16 weights file (its `features.*`; `classifier.*` is not used) and lpips' vgg.pth,
        both read with weights_only and loaded strictly (every tensor of the network, no other)."""
        from projects.titok_rar.hub import load_strict, read_state_dict
        vgg, lin = read_state_dict(trunk), read_state_dict(heads)
        other = sorted(k for k in vgg if not k.startswith(("features.", "classifier.")))
        if other:
            raise ValueError(f"{trunk}: not a torchvision vgg16 state dict (unexpected {other[:4]})")
        stray = sorted(k for k in lin if not k.startswith("lin"))
        if stray:
            raise ValueError(f"{heads}: not lpips' linear heads (vgg.pth): unexpected {stray[:4]}")
        model = cls()
        load_strict(model, {**{k: v for k, v in vgg.items() if k.startswith("features.")}, **lin},
                    f"{trunk} + {heads}")
        return model.requires_grad_(False).eval()


class LPIPSPerceptual(nn.Module):
    """The original's "lpips": the batch mean of LPIPS, from a folder with the trunk and heads files."""
    def __init__(self, folder: str):
        super().__init__()
        d = Path(folder)
        missing = [n for n in (LPIPS_TRUNK_FILE, LPIPS_HEADS_FILE) if not (d / n).is_file()]
        if missing:
            raise FileNotFoundError(f"lpips:{folder}: expected {LPIPS_TRUNK_FILE} (torchvision vgg16) and "
                                    f"{LPIPS_HEADS_FILE} (lpips v0.1 heads) there, missing {missing} "
                                    "(download.py item=lpips_vgg)")
        self.net = LPIPS.from_files(d / LPIPS_TRUNK_FILE, d / LPIPS_HEADS_FILE)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a, b).mean()


class WeightedPerceptual(nn.Module):
    """(sum_i w_i x loss_i) / sum_i w_i: the original's PerceptualLoss with two named terms."""
    def __init__(self, terms: list[tuple[float, nn.Module]]):
        super().__init__()
        self.weights = [float(w) for w, _ in terms]
        self.terms = nn.ModuleList([m for _, m in terms])

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = sum(w * m(a, b) for w, m in zip(self.weights, self.terms))
        return total / sum(self.weights)


PERCEPTUAL = {"convnext_s": ConvNeXtPerceptual, "digits": DigitsPerceptual, "lpips": LPIPSPerceptual}
_COMBINED = re.compile(r"^lpips-convnext_s-([0-9.eE+-]+)-([0-9.eE+-]+)$")   # the original's naming


def build_perceptual(spec: str) -> nn.Module | None:
    """'' -> None; '<name>:<weights path>' with name in PERCEPTUAL; 'lpips-convnext_s-<a>-<b>:<folder>,<file>'."""
    if not spec:
        return None
    name, sep, path = spec.partition(":")
    combined = _COMBINED.match(name)
    if not sep or not path or not (name in PERCEPTUAL or combined):
        raise ValueError(f"losses.perceptual_loss={spec!r}: expected '<name>:<weights path>' with name one of "
                         f"{', '.join(PERCEPTUAL)} or lpips-convnext_s-<a>-<b> (then '<lpips folder>,<convnext "
                         "file>'), e.g. 'convnext_s:<convnext_small weights>', 'lpips:downloads/titok_rar/lpips_vgg'; "
                         "toy: digits:results/toy/digits_features/features.safetensors")
    paths = path.split(",") if combined else [path]
    if combined and len(paths) != 2:
        raise ValueError(f"losses.perceptual_loss={spec!r}: {name} takes two paths, '<lpips folder>,<convnext file>'")
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"losses.perceptual_loss={spec!r}: {p} does not exist")
    if combined:
        try:
            weights = float(combined.group(1)), float(combined.group(2))
        except ValueError:
            raise ValueError(f"losses.perceptual_loss={spec!r}: the two weights must be numbers") from None
        return WeightedPerceptual([(weights[0], LPIPSPerceptual(paths[0])),
                                   (weights[1], ConvNeXtPerceptual(paths[1]))])
    return PERCEPTUAL[name](path)


class PatchDiscriminator(nn.Module):
    """A PatchGAN discriminator (ours): strided 4x4 convs with GroupNorm and LeakyReLU, one logit per patch.
    The original's NLayerDiscriminator (blur-pool StyleGAN-like) is not a released file, so any D will do."""
    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers):
            nxt = min(channels * 2 ** i, channels * 8)
            mods += [nn.Conv2d(ch, nxt, 4, 2 if i < layers - 1 else 1, 1), nn.GroupNorm(min(32, nxt // 4), nxt),
                     nn.LeakyReLU(0.2)]
            ch = nxt
        mods.append(nn.Conv2d(ch, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)  # images in [0,1]; D sees [-1,1]


@dataclass
class LossOptions:
    """The `losses` section of the original's configs (same names)."""
    quantizer_weight: float = 1.0
    discriminator_start: int = 0
    discriminator_factor: float = 1.0
    discriminator_weight: float = 0.0
    perceptual_loss: str = ""
    perceptual_weight: float = 0.0
    reconstruction_loss: str = "l2"
    reconstruction_weight: float = 1.0
    lecam_regularization_weight: float = 0.0
    lecam_ema_decay: float = 0.999
    kl_weight: float = 1e-6
    logvar_init: float = 0.0


class PixelLoss(nn.Module):
    """Stage 2 and single stage: the generator and discriminator objectives of one training step."""
    def __init__(self, opts: LossOptions, perceptual: nn.Module | None = None, quantize_mode: str = "vq"):
        super().__init__()
        if opts.reconstruction_loss not in ("l1", "l2"):
            raise ValueError(f"losses.reconstruction_loss={opts.reconstruction_loss!r}; allowed: l1, l2")
        if opts.perceptual_weight > 0 and perceptual is None:
            raise ValueError("losses.perceptual_weight > 0 needs losses.perceptual_loss=<name>:<weights>")
        self.opts, self.perceptual, self.quantize_mode = opts, perceptual, quantize_mode
        # running means of D's logits, checkpointed with the discriminator (buffers)
        self.register_buffer("ema_real_logits_mean", torch.zeros(()))
        self.register_buffer("ema_fake_logits_mean", torch.zeros(()))
        self.logvar = opts.logvar_init  # fixed (requires_grad=False in the original)

    def gan_active(self, step: int) -> bool:
        return step >= self.opts.discriminator_start and self.opts.discriminator_weight > 0

    def generator_loss(self, images, recon, extra, step: int, discriminator: nn.Module | None):
        o = self.opts
        images, recon = images.float(), recon.float()
        rec = (F.l1_loss if o.reconstruction_loss == "l1" else F.mse_loss)(recon, images) * o.reconstruction_weight
        parts = {"reconstruction_loss": rec.detach()}
        if self.quantize_mode == "vae":
            rec = rec / torch.exp(torch.tensor(self.logvar))
            kl = extra["kl"].sum() / extra["kl"].shape[0]
            total = rec + o.kl_weight * kl
            parts["kl_loss"] = kl.detach()
        else:
            total = rec + o.quantizer_weight * extra["quantizer_loss"]
            parts["quantizer_loss"] = extra["quantizer_loss"].detach()
        if self.perceptual is not None and o.perceptual_weight > 0:
            p = self.perceptual(images, recon)
            total = total + o.perceptual_weight * p
            parts["perceptual_loss"] = p.detach()
        if discriminator is not None and self.gan_active(step):
            discriminator.requires_grad_(False)
            g = -discriminator(recon).mean()
            discriminator.requires_grad_(True)
            total = total + o.discriminator_weight * o.discriminator_factor * g
            parts["gan_loss"] = g.detach()
        return total, parts

    def discriminator_loss(self, images, recon, step: int, discriminator: nn.Module):
        o = self.opts
        real = discriminator(images.float().detach())
        fake = discriminator(recon.float().detach())
        d = o.discriminator_factor * hinge_d_loss(real, fake)
        parts = {"d_loss": d.detach(), "logits_real": real.mean().detach(), "logits_fake": fake.mean().detach()}
        if o.lecam_regularization_weight > 0:
            lc = lecam_loss(real.mean(), fake.mean(), self.ema_real_logits_mean, self.ema_fake_logits_mean)
            d = d + o.lecam_regularization_weight * lc
            parts["lecam_loss"] = lc.detach()
            with torch.no_grad():
                k = o.lecam_ema_decay
                self.ema_real_logits_mean.mul_(k).add_((1 - k) * real.mean())
                self.ema_fake_logits_mean.mul_(k).add_((1 - k) * fake.mean())
        return d, parts
