"""diffusers' `convert_diffusers_to_original_stable_diffusion.py` command line, run by our convert.py.

`--model_path` (the diffusers pipeline folder) -> pipeline, `--checkpoint_path` -> out, `--half` -> half=true,
`--use_safetensors` is always on (only .safetensors is written). SD1.5 and SDXL; see convert.py.

    python projects/sd_flux_lab/convert_diffusers_to_original_stable_diffusion.py --model_path ./tuned/sd15 \
        --checkpoint_path sd15.safetensors --half --use_safetensors
"""
from __future__ import annotations

from projects.sd_flux_lab import convert
from shared.config import cli

Config, PRESETS = convert.Config, convert.PRESETS


def main(cfg=None):
    return convert.main(cfg)


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__, aliases=convert.ALIASES)
