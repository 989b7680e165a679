"""MaskGen (text-to-image masked generation): the toy text encoder, caption dropout, training, guidance decays and
sampling with per-sample seeds on a tiny model."""
import math

import pytest
import torch

from projects.titok_rar.maskgen import (MaskGen, ToyTextEncoder, build_text_encoder, guidance_at, maskgen_config,
                                        sampling_kwargs)


def tiny():
    torch.manual_seed(0)
    text = ToyTextEncoder(width=32, layers=1, heads=4)
    model = MaskGen(maskgen_config("tiny", codebook_size=16, num_latent_tokens=8, text_embed_dim=32))
    return text, model


def test_toy_text_encoder_tells_captions_apart():
    text, _ = tiny()
    ids = text.tokenize(["a red handwritten seven", "", "a zorg handwritten one"])
    assert ids[0].tolist()[:5] == [text.index[w] for w in ("a", "red", "handwritten", "seven")] + [1]
    assert ids[1, 0] == 1 and ids[2, 1] == 2  # empty caption = end-of-text only; unknown word -> <unk>
    hidden, pooled = text(["a red handwritten seven", "a blue handwritten seven"])
    assert hidden.shape == (2, 8, 32) and pooled.shape == (2, 32)
    assert not torch.allclose(pooled[0], pooled[1])
    with pytest.raises(ValueError, match="text_encoder.kind"):
        build_text_encoder({"kind": "t5"})


def test_guidance_decays():
    assert guidance_at(0, 4, 5.0, "none") == 5.0
    assert guidance_at(3, 4, 5.0, "linear") == pytest.approx(5.0)
    assert guidance_at(1, 4, 5.0, "cosine") == pytest.approx(4 * (1 - math.cos(0.5 * math.pi)) / 2 + 1)
    assert guidance_at(3, 4, 5.0, "cosine") == pytest.approx(5.0)
    with pytest.raises(ValueError, match="guidance_decay"):
        guidance_at(0, 4, 5.0, "power-cosine")


def test_training_learns_text_conditioned_tokens_and_sampling_is_per_sample():
    text, model = tiny()
    captions = ["a red handwritten one", "a blue handwritten two"] * 4
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 0]] * 4)
    params = list(model.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3)
    from projects.titok_rar.generator_common import MLMLoss

    loss_fn = MLMLoss(0.0, 0.1)
    model.train()
    losses = []
    for _ in range(80):
        hidden, pooled = text(captions)
        nh, npool = text([""])
        hidden, pooled = model.drop_text(hidden, pooled, nh, npool)
        logits, masks = model(tokens, hidden, pooled)
        loss, _ = loss_fn(logits, tokens, masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    model.eval()
    with torch.no_grad():
        hidden, pooled = text(["a red handwritten one", "a blue handwritten two"])
        nh, npool = text([""])
    kw = sampling_kwargs(maskgen_config("tiny"))
    kw.update(num_sample_steps=4, guidance_scale=3.0)
    out = model.generate(hidden, pooled, nh, npool, seeds=[0, 1], **kw)
    assert out.shape == (2, 8) and int(out.max()) < 16
    # the two prompts give their own token sequences (mostly: a tiny model after 80 steps)
    assert (out[0] == tokens[0]).float().mean() > 0.5 and (out[1] == tokens[1]).float().mean() > 0.5
    alone = model.generate(hidden[1:], pooled[1:], nh, npool, seeds=[1], **kw)
    assert torch.equal(alone, out[1:])


def test_unknown_config_keys_are_named():
    with pytest.raises(KeyError, match="unknown keys"):
        maskgen_config("tiny", decoder_width=3)
    with pytest.raises(KeyError, match="unknown MaskGen size"):
        maskgen_config("huge")


def test_open_clip_text_encoder_from_a_local_file(tmp_path):
    """The paper's text path: an open_clip text tower from a weights file (no download); its pooled embedding is
    open_clip's own encode_text, the hidden states are the penultimate block's (MaskGen's condition)."""
    import json

    import open_clip

    from projects.titok_rar.maskgen import OpenCLIPText

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "patch_size": 8,
                                           "head_width": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2}}
    (tmp_path / "tiny-clip-maskgen-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(tmp_path / "tiny-clip-maskgen-test.json"))
    torch.manual_seed(0)
    clip = open_clip.create_model("tiny-clip-maskgen-test")
    torch.save(clip.state_dict(), tmp_path / "weights.pt")
    text = OpenCLIPText("tiny-clip-maskgen-test", pretrained=str(tmp_path / "weights.pt"))
    hidden, pooled = text(["a red handwritten seven", ""])
    assert hidden.shape == (2, 77, 16) and pooled.shape == (2, 16)
    ids = open_clip.get_tokenizer("tiny-clip-maskgen-test")(["a red handwritten seven", ""])
    with torch.no_grad():
        assert torch.allclose(pooled, clip.encode_text(ids), atol=1e-5)
    assert text.decoder_guidance(["a"]).shape == (1, 77, 16)
    with pytest.raises(ValueError, match="pretrained"):
        OpenCLIPText("tiny-clip-maskgen-test", pretrained="")
