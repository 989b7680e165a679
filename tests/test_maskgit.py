"""MaskGIT generators (ImageBert, UViTBert): the released TiTok-L-32/B-64/S-128 layouts (meta builds against the
reference file), the per-step schedules (guidance, Gumbel temperature, re-mask counts) against the reference
`schedules`, and the decoder really following them on a tiny model; training-time masking and loss."""
import json
import math
from pathlib import Path

import pytest
import torch

from projects.titok_rar.generator_common import MLMLoss, mask_input_tokens, masking_ratio
from projects.titok_rar.maskgit import (RELEASED, ImageBert, UViTBert, build_maskgit, maskgit_config,
                                        maskgit_schedule, sampling_kwargs)

# the reference file lives beside the checkout (../shared/reference), as the issue names it
REF = json.loads((Path(__file__).resolve().parents[2] / "shared/reference/titok_rar_checkpoints.json").read_text())
NAMES = ["titok_l32", "titok_b64", "titok_s128"]


@pytest.mark.parametrize("name", NAMES)
def test_released_layout_names_shapes_and_config(name):
    entry = REF["checkpoints"][f"generator:{name}.yaml"]
    cfg = maskgit_config(name)
    g = cfg.model.generator
    for key, value in entry["generator"].items():
        assert g[key] == value, key
    with torch.device("meta"):
        model = build_maskgit(cfg)
    assert type(model).__name__ == entry["class"]
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {n: s for n, s, _ in entry["state_dict"]}
    assert sum(p.numel() for p in model.parameters()) == entry["num_params"]


@pytest.mark.parametrize("name", NAMES)
def test_schedule_equals_reference(name):
    g = maskgit_config(name).model.generator
    ours = maskgit_schedule(g.image_seq_len, g.num_steps, g.guidance_scale, g.guidance_decay,
                            g.randomize_temperature, g.guidance_scale_pow)
    ref = REF["schedules"][f"maskgit_{name}"]
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a["masked_before"] == b["masked_before"] and a["remask_after"] == b["remask_after"], a["step"]
        for key in ("cfg_used", "gumbel_temp", "softmax_temp_if_annealing"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), (a["step"], key)


def tiny(kind="ViT", seq=32, unit_gain=False, **kw):
    torch.manual_seed(0)
    g = dict(model_type=kind, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             image_seq_len=seq, condition_num_classes=10, dropout=0.0, attn_drop=0.0)
    g.update(kw)
    model = build_maskgit(maskgit_config(codebook_size=20, **g)).eval()
    with torch.no_grad():  # a fresh BERT (std 0.02) barely reads its class token: unit-gain weights instead
        for p in model.parameters():
            if unit_gain and p.dim() == 2:
                p.normal_(0, p.shape[1] ** -0.5)
    return model


@pytest.mark.parametrize("kind", ["ViT", "UViT"])
def test_decoder_follows_the_schedule(kind):
    """TiTok-L-32's sampling settings on a tiny model with 32 tokens: every step masks exactly the counts of the
    reference schedule, and the output has no mask token left."""
    model = tiny(kind)
    kwargs = sampling_kwargs(maskgit_config("titok_l32"))
    trace = []
    out = model.generate(torch.tensor([1, 2, 3]), seeds=[0, 1, 2], trace=trace, **kwargs)
    ref = REF["schedules"]["maskgit_titok_l32"]
    assert [t["masked_before_seen"] for t in trace] == [[r["masked_before"]] * 3 for r in ref]
    assert [t["cfg_used"] for t in trace] == pytest.approx([r["cfg_used"] for r in ref])
    assert out.shape == (3, 32) and int(out.max()) < 20 and int(out.min()) >= 0
    again = model.generate(torch.tensor([2]), seeds=[1], **kwargs)
    assert torch.equal(again, out[1:2])  # per-sample seeds: the same image alone or in a batch


def test_guidance_forms():
    """power-cosine mixes from the unconditional logits (scale 1 = conditional); constant/linear from the
    conditional ones (scale 0 = conditional): both give plain conditional sampling at those scales."""
    model = tiny("ViT", seq=8, unit_gain=True)
    labels = torch.tensor([4, 5])
    plain = model.generate(labels, guidance_scale=0.0, guidance_decay="constant", randomize_temperature=1.0,
                           num_sample_steps=4, seeds=[3, 4])
    pc = model.generate(labels, guidance_scale=1.0, guidance_decay="power-cosine", randomize_temperature=1.0,
                        num_sample_steps=4, seeds=[3, 4])
    assert torch.equal(plain, pc)
    strong = model.generate(labels, guidance_scale=8.0, guidance_decay="constant", randomize_temperature=1.0,
                            num_sample_steps=4, seeds=[3, 4])
    assert not torch.equal(plain, strong)
    with pytest.raises(ValueError, match="guidance_decay"):
        model.generate(labels, guidance_decay="cosine")


def test_masking_and_loss():
    assert masking_ratio(0.0) == pytest.approx(1.0) and masking_ratio(1.0) == pytest.approx(0.0)
    assert masking_ratio(0.5) == pytest.approx(math.acos(0.5) / (math.pi / 2))
    torch.manual_seed(0)
    tokens = torch.randint(0, 20, (256, 16))
    masked, masks = mask_input_tokens(tokens, 20)
    assert torch.equal(masked[masks], torch.full_like(masked[masks], 20)) and torch.equal(masked[~masks], tokens[~masks])
    assert masks.sum(1).min() >= 1
    # E[arccos(t)/(pi/2)] over t~U(0,1) = 2/pi
    assert masks.float().mean().item() == pytest.approx(2 / math.pi, abs=0.04)
    logits = torch.randn(256, 16, 20)
    loss, info = MLMLoss(0.1, 0.1)(logits, tokens, masks)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens, label_smoothing=0.1, reduction="none")
    w = masks.float() + 0.1 * (~masks).float()
    assert loss.item() == pytest.approx(((ce * w).sum() / w.sum()).item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["ViT", "UViT"])
def test_training_reduces_the_loss(kind):
    model = tiny(kind, seq=8)
    tokens = torch.randint(0, 20, (8, 8))
    labels = torch.arange(8)
    probe = mask_input_tokens(tokens, 20, generator=torch.Generator().manual_seed(1))

    def held_out():
        model.eval()
        with torch.no_grad():
            return MLMLoss()(model(probe[0], labels, cond_drop_prob=0.0), tokens, probe[1])[0].item()

    before = held_out()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        masked, masks = mask_input_tokens(tokens, 20, generator=gen)
        loss, _ = MLMLoss()(model(masked, labels, cond_drop_prob=0.1), tokens, masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out() < 0.6 * before


def test_bad_inputs_name_the_problem():
    with pytest.raises(KeyError, match="unknown MaskGIT generator"):
        maskgit_config("titok_xl")
    with pytest.raises(ValueError, match="model_type"):
        build_maskgit(maskgit_config(model_type="Mamba"))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 10\)"):
        tiny(seq=8)(torch.zeros(1, 8, dtype=torch.long), torch.tensor([12]))
