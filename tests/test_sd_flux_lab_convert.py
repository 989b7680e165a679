"""convert.py round trip: diffusers' own from_single_file (config from a local folder, offline) loads our
original-format file and the pipeline it gives makes the same images as the source pipeline (SD1.5 and SDXL)."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from projects.sd_flux_lab import convert, models

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", models.ARCHS)
def test_single_file_round_trip(arch, tmp_path):
    src_dir = tmp_path / "src"
    pipe = models.build_pipeline(arch, "tiny", seed=3)
    models.save_pipeline(pipe, src_dir)
    out = tmp_path / "model.safetensors"
    convert.main({"pipeline": str(src_dir), "out": str(out)})
    sd = load_file(str(out))
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in sd)
    assert any(k.startswith("first_stage_model.encoder.down.") for k in sd)
    text_key = ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" if arch == "sd15"
                else "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight")
    assert text_key in sd

    loaded = models.PIPELINE_CLASSES[arch].from_single_file(str(out), config=str(src_dir), local_files_only=True)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a = getattr(pipe, name, None)
        if a is None:
            continue
        sa, sb = a.state_dict(), getattr(loaded, name).state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    kw = dict(num_inference_steps=2, output_type="np", height=32, width=32)
    for p in (pipe, loaded):
        p.set_progress_bar_config(disable=True)
    a = pipe("a blue handwritten one", generator=torch.Generator().manual_seed(0), **kw).images
    b = loaded("a blue handwritten one", generator=torch.Generator().manual_seed(0), **kw).images
    assert np.array_equal(a, b)


def test_half_and_bad_output(tmp_path):
    src_dir = tmp_path / "src"
    models.save_pipeline(models.build_pipeline("sd15", "tiny"), src_dir)
    out = tmp_path / "half.safetensors"
    convert.main({"pipeline": str(src_dir), "out": str(out), "half": True})
    assert {v.dtype for v in load_file(str(out)).values() if v.is_floating_point()} == {torch.float16}
    with pytest.raises(ValueError, match="only .safetensors"):
        convert.main({"pipeline": str(src_dir), "out": str(tmp_path / "x.ckpt")})
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        convert.main({"pipeline": str(tmp_path), "out": str(out)})
