"""How tests/data/swinir_state_dicts.json and swinir_peer_outputs.safetensors were made (not run by the tests).

The expected names/shapes come from an implementation independent of ours: spandrel 0.4.2's SwinIR architecture
(a port of upstream JingyunLiang/SwinIR models/network_swinir.py), built with the arguments of upstream
main_test_swinir.py's define_model for each task (classical_sr: embed 180, depths/heads 6x6, window 8, mlp 2,
img_size = the training patch, pixelshuffle; real_sr: the same with nearest+conv, and the large model with embed 240,
9 RSTBs of 6 blocks, 8 heads, 3conv), which is how the release files
(001_classicalSR_DF2K_s64w8_SwinIR-M_x{2,4,8}.pth under 'params', 003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth
and 003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth under 'params_ema') were saved. The outputs are the peer's
forward passes of tiny configs whose parameters are filled from a seeded generator (fill_params), so our network
can be checked numerically without the peer installed.

    pip install --no-deps --target /tmp/spx spandrel==0.4.2
    PYTHONPATH=/tmp/spx:. python tests/data/make_swinir_fixtures.py
"""
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).parent
JSON_PRESETS = ("classical_x2", "classical_x4", "classical_x8", "real_x4", "real_large_x4")
# (name, upscale, upsampler, input size) of the numerical cases; tiny_config's sizes (embed 16, window 4, img 8)
NUMERIC = [("ps_x2", 2, "pixelshuffle", (8, 8)), ("ps_x3", 3, "pixelshuffle", (8, 12)),
           ("ps_x8", 8, "pixelshuffle", (8, 8)), ("direct_x4", 4, "pixelshuffledirect", (12, 8)),
           ("nearest_x4", 4, "nearest+conv", (8, 12)), ("nearest_x2", 2, "nearest+conv", (8, 8))]


def fill_params(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter (not the buffers) from one generator, in state-dict order: N(0, 0.1^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def case_input(size, seed: int = 1) -> torch.Tensor:
    return torch.rand((1, 3, *size), generator=torch.Generator().manual_seed(seed))


def main() -> None:
    from spandrel.architectures.SwinIR.__arch.SwinIR import SwinIR as Peer

    from projects.glide_finetune.swinir import SWINIR_PRESETS, tiny_config

    def peer_of(c):
        return Peer(img_size=c.img_size, in_chans=c.in_chans, embed_dim=c.embed_dim, depths=list(c.depths),
                    num_heads=list(c.num_heads), window_size=c.window_size, mlp_ratio=c.mlp_ratio,
                    upscale=c.upscale, upsampler=c.upsampler, resi_connection=c.resi_connection,
                    img_range=c.img_range)

    out = {"what": "state-dict names and shapes of released SwinIR files, per preset of "
                   "projects/glide_finetune/swinir.py (see make_swinir_fixtures.py for the source)",
           "presets": {}}
    for name in JSON_PRESETS:
        c = SWINIR_PRESETS[name]
        sd = peer_of(c).state_dict()
        out["presets"][name] = {"release_file": c.release_file, "param_key": c.param_key,
                                "tensors": [[k, list(v.shape)] for k, v in sd.items()]}
    (HERE / "swinir_state_dicts.json").write_text(json.dumps(out, separators=(",", ":")) + "\n")
    tensors = {}
    for name, s, up, size in NUMERIC:
        peer = peer_of(tiny_config(upscale=s, upsampler=up)).eval()
        fill_params(peer)
        x = case_input(size)
        with torch.no_grad():
            tensors[name] = peer(x).contiguous()
    save_file(tensors, str(HERE / "swinir_peer_outputs.safetensors"),
              metadata={"source": "spandrel 0.4.2 SwinIR, tiny_config, fill_params(seed 0), case_input(seed 1)"})


if __name__ == "__main__":
    main()
