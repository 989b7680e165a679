"""How DMD2 talks to a family of denoisers: noising, x0 prediction, guidance, the fake denoiser's loss, the GAN
bottleneck, conditioning and decoding. One class per family, chosen by name from `BACKBONES`.

Timesteps are integer indices t in [0, num_train_timesteps) for every family, larger = noisier:
    sd  (SD1.5 / SDXL, diffusers UNet2DConditionModel, latent space, text prompts): the DDPM timestep itself;
    edm (EDM-preconditioned ADM, pixel space, class labels): index into Karras sigmas (rho=7), ascending.
A network `net` is called as the module (maybe DDP-wrapped); `cond`/`uncond` are its keyword arguments.
"""
from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from shared.samplers import guided_output
from projects.dmd2.edm import EDMPrecond, build_edm, karras_sigmas, load_state_dict_file
from projects.dmd2.prompts import label_of_prompt as default_label


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


class _Bottleneck(Exception):
    """Carries the bottleneck activation out of a forward pass that need not run its decoder."""

    def __init__(self, h: torch.Tensor):
        super().__init__()
        self.h = h


class Backbone:
    """Interface; see the module docstring."""

    name = "base"
    num_train_timesteps = 1000
    teacher: nn.Module

    # --- networks -----------------------------------------------------------------------------------------
    def copy_teacher(self) -> nn.Module:
        """A trainable copy of the teacher (generator and fake denoiser both start from it)."""
        net = copy.deepcopy(self.teacher)
        net.requires_grad_(True)
        net.train()
        return net

    def to(self, device) -> "Backbone":
        raise NotImplementedError

    # --- diffusion ------------------------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pure_noise(self, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The generator's input at its first step: pure noise, at the scale this family expects for t."""
        raise NotImplementedError

    def denoise(self, net, x_t, t, cond: Mapping[str, Any]) -> torch.Tensor:
        """x0 predicted by `net` at (x_t, t), no guidance."""
        raise NotImplementedError

    def guided_denoise(self, net, x_t, t, cond, uncond, scale: float) -> torch.Tensor:
        """x0 with classifier-free guidance (linear in the output, so guiding x0 = guiding eps). Applied only for
        scale > 1, as DMD2's predict_noise (main/sd_guidance.py: CFG_GUIDANCE = guidance_scale > 1); a scale
        <= 1 is the plain conditional prediction."""
        if scale <= 1.0 or uncond is None:
            return self.denoise(net, x_t, t, cond)
        out = guided_output(lambda x, tt, **c: self._raw(net, x, tt, c), x_t, t, cond, uncond, scale)
        return self._x0(out, x_t, t)

    def denoising_loss(self, net, x0: torch.Tensor, cond) -> torch.Tensor:
        """The fake denoiser's loss on (detached) generated samples, t uniform over all timesteps."""
        raise NotImplementedError

    def bottleneck(self, net, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        raise NotImplementedError

    def bottleneck_shape(self) -> tuple[int, int]:
        """(channels, spatial size) of the bottleneck at the training resolution."""
        raise NotImplementedError

    # --- data -------------------------------------------------------------------------------------------------
    def batch(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict, dict]:
        """(real samples in model space, cond, uncond) for a batch of the prepared LMDB."""
        raise NotImplementedError

    def condition(self, prompts: list[str]) -> tuple[dict, dict]:
        """(cond, uncond) for prompts (class-conditional families parse the class from the prompt)."""
        raise NotImplementedError

    def draw_condition(self, n: int, prompts=None) -> tuple[dict, dict]:
        """(cond, uncond) for `n` generated samples, drawn from the global RNG independently of the real batch
        (DMD2's generator conditioning): uniform class labels, or prompts drawn uniformly from `prompts`."""
        raise NotImplementedError

    def sample_shape(self, n: int) -> tuple[int, ...]:
        raise NotImplementedError

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> images in [-1, 1]."""
        return x


# ---- EDM (ImageNet-64 and the toy digits teacher) -----------------------------------------------------------------
class EDMBackbone(Backbone):
    """EDM-preconditioned ADM in pixel space, class labels as one-hot vectors; the zero vector is the
    unconditional model (what label dropout trains)."""

    name = "edm"

    def __init__(self, teacher: EDMPrecond, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                 label_of_prompt=None):
        self.teacher = teacher.eval().requires_grad_(False)
        self.sigmas = karras_sigmas(self.num_train_timesteps, sigma_min, sigma_max, rho)
        self.sigma_data = teacher.sigma_data
        self.label_dim = teacher.label_dim
        self.resolution = teacher.img_resolution
        self.channels = teacher.img_channels
        self.label_of_prompt = label_of_prompt or default_label

    @classmethod
    def load(cls, path: str | Path, config: str = "", strip_prefix: str = "", **kw) -> "EDMBackbone":
        """`path`: a folder with edm.json (network kwargs) + model.safetensors (what train_teacher.py writes), or a
        weights file with `config` naming an EDM_CONFIGS entry (e.g. the released ImageNet-64 weights)."""
        path = Path(path)
        if path.is_dir():
            kwargs = json.loads((path / "edm.json").read_text())
            weights = path / "model.safetensors"
        else:
            if not config:
                raise ValueError(f"{path}: a weights file needs teacher_config=<{'|'.join(('imagenet64', 'digits'))}>")
            kwargs, weights = config, path
        net = build_edm(kwargs)
        sd = load_state_dict_file(weights, strip_prefixes=("module.", strip_prefix))
        net.load_state_dict(sd, strict=True)
        return cls(net, **kw)

    def to(self, device):
        self.teacher.to(device)
        self.sigmas = self.sigmas.to(device)
        return self

    def sigma(self, t):
        return self.sigmas.to(t.device)[t.long()]

    def add_noise(self, x0, noise, t):
        return x0 + _bcast(self.sigma(t), x0) * noise

    def pure_noise(self, noise, t):
        return noise * _bcast(self.sigma(t), noise)

    def _raw(self, net, x_t, t, cond):
        return net(x_t, self.sigma(t), **cond)

    def _x0(self, out, x_t, t):
        return out  # EDMPrecond already outputs the denoised image

    def denoise(self, net, x_t, t, cond):
        return net(x_t, self.sigma(t), **cond)

    def denoising_loss(self, net, x0, cond):
        t = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), device=x0.device)
        sigma = self.sigma(t)
        x_t = self.add_noise(x0, torch.randn_like(x0), t)
        weight = _bcast(sigma ** -2 + self.sigma_data ** -2, x0)  # EDM's loss weighting
        return (weight * (net(x_t, sigma, **cond) - x0) ** 2).mean()

    def bottleneck(self, net, x, t, cond):
        return net(x, self.sigma(t), return_bottleneck=True, **cond)

    def bottleneck_shape(self):
        m = self.teacher.model
        return m.bottleneck_channels, m.bottleneck_resolution

    def _onehot(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels.long(), self.label_dim).float()

    def batch(self, batch):
        x = batch["image"].float() / 127.5 - 1
        cond = {"class_labels": self._onehot(batch["label"]).to(x.device)}
        return x, cond, {"class_labels": torch.zeros_like(cond["class_labels"])}

    def condition(self, prompts):
        labels = torch.tensor([self.label_of_prompt(p) for p in prompts])
        return self._labels(labels)

    def _labels(self, labels: torch.Tensor) -> tuple[dict, dict]:
        device = next(self.teacher.parameters()).device
        cond = {"class_labels": self._onehot(labels).to(device)}
        return cond, {"class_labels": torch.zeros_like(cond["class_labels"])}

    def draw_condition(self, n, prompts=None):
        # main/edm/train_edm.py: labels = torch.randint(0, label_dim, (batch_size,)), one-hot
        return self._labels(torch.randint(0, self.label_dim, (n,)))

    def sample_shape(self, n):
        return (n, self.channels, self.resolution, self.resolution)


# ---- Stable Diffusion 1.5 / SDXL ------------------------------------------------------------------------------------
class SDBackbone(Backbone):
    """A diffusers StableDiffusion(XL)Pipeline: its UNet is the teacher; text encoders, tokenizers and VAE stay
    frozen. Timesteps are DDPM steps of the pipeline's scheduler; the prediction type is read from it."""

    name = "sd"

    def __init__(self, pipe, resolution: int | None = None):
        self.pipe = pipe
        self.teacher = pipe.unet.eval().requires_grad_(False)
        for m in (pipe.vae, getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)):
            if m is not None:
                m.eval().requires_grad_(False)
        sched = pipe.scheduler.config
        self.num_train_timesteps = int(sched.num_train_timesteps)
        self.prediction_type = sched.get("prediction_type", "epsilon")
        from diffusers import DDPMScheduler

        ddpm = DDPMScheduler.from_config(sched)
        self.alphas_cumprod = ddpm.alphas_cumprod.double()
        self.sdxl = getattr(pipe, "text_encoder_2", None) is not None
        self.vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self.resolution = resolution or self.teacher.config.sample_size * self.vae_scale
        self.latent_size = self.resolution // self.vae_scale
        self.latent_channels = self.teacher.config.in_channels

    @classmethod
    def load(cls, path: str | Path, resolution: int = 0, **kw) -> "SDBackbone":
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.disable_progress_bar()  # loading bars would flood logs of every step script
        tlog.disable_progress_bar()
        pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, resolution or None)

    def to(self, device):
        self.pipe.to(device)
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self

    def _ab(self, t, x):
        return _bcast(self.alphas_cumprod.to(x.device)[t.long()], x.double())

    def add_noise(self, x0, noise, t):
        ab = self._ab(t, x0)
        return (ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()).to(x0.dtype)

    def pure_noise(self, noise, t):
        return noise  # SD's generators start from unit noise at any conditioning timestep (DMD2: 999 or 399)

    def _raw(self, net, x_t, t, cond):
        return net(x_t, t, return_dict=False, **cond)[0]

    def _x0(self, out, x_t, t):
        ab = self._ab(t, x_t)
        x, o = x_t.double(), out.double()
        if self.prediction_type == "epsilon":
            x0 = (x - (1 - ab).sqrt() * o) / ab.sqrt()
        elif self.prediction_type == "v_prediction":
            x0 = ab.sqrt() * x - (1 - ab).sqrt() * o
        elif self.prediction_type == "sample":
            x0 = o
        else:
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")
        return x0.to(x_t.dtype)

    def denoise(self, net, x_t, t, cond):
        return self._x0(self._raw(net, x_t, t, cond), x_t, t)

    def denoising_loss(self, net, x0, cond):
        t = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.add_noise(x0, noise, t)
        out = self._raw(net, x_t, t, cond)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            ab = self._ab(t, x0)
            target = (ab.sqrt() * noise.double() - (1 - ab).sqrt() * x0.double()).to(x0.dtype)
        else:
            target = x0
        return F.mse_loss(out.float(), target.float())

    def bottleneck(self, net, x, t, cond):
        unet = _unwrap(net)

        def grab(module, inputs, output):
            raise _Bottleneck(output)

        handle = unet.mid_block.register_forward_hook(grab)
        try:
            unet(x, t, return_dict=False, **cond)
        except _Bottleneck as b:
            return b.h
        finally:
            handle.remove()
        raise RuntimeError("the UNet never reached its mid block")

    def bottleneck_shape(self):
        c = self.teacher.config
        return c.block_out_channels[-1], self.latent_size // 2 ** (len(c.block_out_channels) - 1)

    def _time_ids(self, n, device):
        r = self.resolution  # original size, crop top-left (0, 0), target size: an uncropped square image
        return torch.tensor([[r, r, 0, 0, r, r]], dtype=torch.float32, device=device).repeat(n, 1)

    @torch.no_grad()
    def condition(self, prompts):
        device = self.teacher.device
        if self.sdxl:
            pe, npe, pooled, npooled = self.pipe.encode_prompt(list(prompts), device=device, num_images_per_prompt=1,
                                                               do_classifier_free_guidance=True)
            ids = self._time_ids(len(prompts), device)
            return ({"encoder_hidden_states": pe, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids}},
                    {"encoder_hidden_states": npe, "added_cond_kwargs": {"text_embeds": npooled, "time_ids": ids}})
        pe, npe = self.pipe.encode_prompt(list(prompts), device=device, num_images_per_prompt=1,
                                          do_classifier_free_guidance=True)
        return {"encoder_hidden_states": pe}, {"encoder_hidden_states": npe}

    def batch(self, batch):
        cond, uncond = self.condition(list(batch["caption"]))
        return batch["latent"].float(), cond, uncond

    def draw_condition(self, n, prompts=None):
        # main/train_sd.py: the generator's text comes from its own shuffled prompt loader (--train_prompt_path),
        # not from the real-image LMDB that feeds the GAN
        if not prompts:
            raise ValueError("the sd backbone draws the generator's prompts from a prompt set; none was given")
        idx = torch.randint(0, len(prompts), (n,))
        return self.condition([prompts[int(i)] for i in idx])

    def sample_shape(self, n):
        return (n, self.latent_channels, self.latent_size, self.latent_size)

    @torch.no_grad()
    def decode(self, x):
        vae = self.pipe.vae
        return vae.decode(x.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0].float().clamp(-1, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents (the mean of the posterior: deterministic data for the LMDB)."""
        vae = self.pipe.vae
        return vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean * vae.config.scaling_factor


def _unwrap(net):
    return getattr(net, "module", net)


@contextmanager
def frozen(module: nn.Module):
    """Parameters temporarily need no gradient: the network is used as a fixed function whose input still gets
    gradients (the generator's DM/GAN losses through the fake denoiser), and DDP sees no stray gradient."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


BACKBONES: dict[str, type[Backbone]] = {"edm": EDMBackbone, "sd": SDBackbone}


def load_backbone(kind: str, path: str, **kw) -> Backbone:
    if kind not in BACKBONES:
        raise ValueError(f"unknown backbone {kind!r}; known: {', '.join(BACKBONES)}")
    return BACKBONES[kind].load(path, **kw)
