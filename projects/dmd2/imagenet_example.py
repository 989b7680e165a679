"""DMD2's `python -m demo.imagenet_example --checkpoint_path CKPT`: a grid of `eval_batch_size` one-step samples of
random classes from an ImageNet-64 generator, saved as imagenet_grid.jpg.

`--checkpoint_path`: the released generator file (its EDM architecture is read from the file, or `--teacher` gives
the teacher it plugs into) or a train.py run folder. Noise x 80 (the conditioning sigma) -> one network call.

    python -m projects.dmd2.imagenet_example --checkpoint_path downloads/dmd2/imagenet64/model.pt
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from projects.dmd2.original import check_same
from shared.config import ConfigError, Refused, cli, option, resolve
from shared.io import atomic_path
from shared.plots import image_grid


@dataclass
class Config:
    scale: str = "paper"
    checkpoint_path: str = option("", help="released generator file or a train.py run folder")
    teacher: str = option("", help="the EDM teacher a bare weights file plugs into ('' = the file itself)")
    teacher_config: str = option("imagenet64", help="EDM_CONFIGS architecture of a bare file (no .json beside it)")
    eval_batch_size: int = option(64, min=1, help="images in the grid (random classes)")
    resolution: int = option(0, min=0, help="checked against the generator's when given (the original: 64)")
    label_dim: int = option(0, min=0, help="checked against the generator's when given (the original: 1000)")
    conditioning_sigma: float = option(80.0, help="must be the generator's sigma_max (what it was trained at)")
    seed: int = 10
    out: str = "imagenet_grid.jpg"
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}
ALIASES = {"sigma_max": Refused("the sigma range is the generator's own (EDM: 0.002..80); nothing to set"),
           "sigma_min": Refused("the sigma range is the generator's own (EDM: 0.002..80); nothing to set"),
           "dataset_name": Refused("the dataset follows from the checkpoint (its class count and size)")}


def main(cfg=None):
    from projects.dmd2.generation import few_step_generate, load_generator, to_pil

    cfg = resolve(Config, cfg, PRESETS)
    if not cfg.checkpoint_path:
        raise ConfigError("--checkpoint_path is required")
    path = Path(cfg.checkpoint_path)
    if path.is_file() and not path.with_suffix(".json").is_file():
        # a bare released file, as the original loads it: the ImageNet-64 EDM architecture, strict
        from projects.dmd2.backbones import load_backbone
        from projects.dmd2.edm import load_state_dict_file

        backbone = load_backbone("edm", cfg.teacher or str(path), config=cfg.teacher_config).to(cfg.device)
        net = backbone.copy_teacher().eval().requires_grad_(False)
        net.load_state_dict(load_state_dict_file(path), strict=True)
    else:
        net, _, backbone = load_generator(path, cfg.teacher or (str(path) if path.is_file() else ""),
                                          device=cfg.device)
    if backbone.name != "edm":
        raise ConfigError(f"--checkpoint_path {cfg.checkpoint_path}: a {backbone.name} generator; imagenet_example "
                          "is for class-conditional EDM generators (text_to_image_sdxl for SDXL)")
    check_same("resolution", cfg.resolution, backbone.resolution, "generator's resolution")
    check_same("label_dim", cfg.label_dim, backbone.label_dim, "generator's number of classes")
    sigma_max = float(backbone.sigmas.max())
    if not math.isclose(cfg.conditioning_sigma, sigma_max, rel_tol=1e-4):
        raise ConfigError(f"--conditioning_sigma {cfg.conditioning_sigma}: the generator starts from sigma_max = "
                          f"{sigma_max:g} (timestep {backbone.num_train_timesteps - 1}); other sigmas are not supported")
    g = torch.Generator().manual_seed(cfg.seed)
    labels = torch.randint(0, backbone.label_dim, (cfg.eval_batch_size,), generator=g).tolist()
    images = few_step_generate(backbone, net, [str(c) for c in labels], [backbone.num_train_timesteps - 1],
                               seeds=[cfg.seed + i for i in range(len(labels))])
    grid = image_grid(to_pil(images[:int(math.isqrt(len(labels))) ** 2]), int(math.isqrt(len(labels))))
    with atomic_path(cfg.out) as tmp:
        grid.save(tmp, format="JPEG" if cfg.out.lower().endswith((".jpg", ".jpeg")) else "PNG")
    print(f"{len(labels)} images of classes {labels[:8]}... -> {cfg.out}")
    return cfg.out


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__, aliases=ALIASES)
