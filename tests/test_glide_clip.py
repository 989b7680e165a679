"""GLIDE's noised CLIP: released names/shapes on meta, attention equal to the original's padded/masked form,
CLIP guidance (gradient, higher CLIP score, the cutout schedule), train_clip at tiny scale, the fine-tune loss,
streamed CLIP scoring and sample.py's CLIP options."""
import json
import math
from pathlib import Path

import pytest
import torch

from projects.glide_finetune import clip_score, train_clip
from projects.glide_finetune.clip_guidance import (ClipFinetuneLoss, ClipGuidance, clip_finetune_loss,
                                                   cutout_schedule, make_cutouts)
from projects.glide_finetune.diffusion import create_diffusion
from projects.glide_finetune.noised_clip import (CLIP_CONFIGS, ClipConfig, clip_tokenizer, create_clip, load_clip,
                                                 save_clip)
from projects.glide_finetune.sampling import generate
from projects.glide_finetune.unet import create_model, tiny_options

FIXTURE = json.loads((Path(__file__).parent / "data" / "glide_noised_clip_state_dicts.json").read_text())
PROMPTS = ["a red handwritten seven", "a blue handwritten two", "a green handwritten four", "a white handwritten one"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, digits_tiny):
    from projects.glide_finetune.tokenizer import main as tokenizer_main

    out = tmp_path_factory.mktemp("clip_tok") / "tok"
    tokenizer_main({"scale": "tiny", "captions": str(digits_tiny / "train"), "out_dir": str(out)})
    return out


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory, digits_tiny, tok_dir):
    run = tmp_path_factory.mktemp("clip_run") / "clip"
    summary = train_clip.main({"scale": "tiny", "data_dir": str(digits_tiny), "tokenizer": str(tok_dir),
                               "run_dir": str(run)})
    return run, summary


def tiny_glide(tok, seed=0):
    """A tiny GLIDE base whose zero-initialised output layers get random weights (as a trained model has)."""
    torch.manual_seed(seed)
    opts = {**tiny_options(image_size=8, text_ctx=16), "n_vocab": tok.n_vocab}
    model = create_model(opts).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.05)
    return model, opts


def test_released_config_state_dicts_equal_the_upstream_structure():
    assert ClipConfig.from_dict(FIXTURE["config"]) == CLIP_CONFIGS["released"]
    clip = create_clip("released", device="meta")
    for name in ("text_encoder", "image_encoder"):
        module = getattr(clip, name)
        ours = [[k, list(v.shape)] for k, v in module.state_dict().items()]
        assert ours == FIXTURE[name]  # names, shapes and order
        assert {str(v.dtype) for v in module.state_dict().values()} == {"torch.float32"}
        assert sum(p.numel() for p in module.parameters()) == FIXTURE["num_params"][name]


def test_load_is_strict_weights_only(tmp_path, tok_dir):
    torch.manual_seed(0)
    clip = create_clip("tiny", tokenizer=clip_tokenizer(str(tok_dir)), n_vocab=300).eval()
    save_clip(clip, tmp_path / "run", str(tok_dir))
    torch.save(clip.image_encoder.state_dict(), tmp_path / "image.pt")  # the released files' format
    torch.save(clip.text_encoder.state_dict(), tmp_path / "text.pt")
    for kw in ({}, {"image_weights": tmp_path / "image.pt", "text_weights": tmp_path / "text.pt"}):
        again = load_clip(tmp_path / "run", **kw)
        x, t = torch.rand(2, 3, 8, 8) * 2 - 1, torch.tensor([0, 999])
        assert torch.equal(again.image_embeddings(x, t), clip.image_embeddings(x, t))
        assert torch.equal(again.text_embeddings(PROMPTS[:2]), clip.text_embeddings(PROMPTS[:2]))
    sd = clip.image_encoder.state_dict()
    sd["blocks.input.w_t"] = sd["blocks.input.w_t"][:10]
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="(?s)bad.pt.*w_t"):
        load_clip(tmp_path / "run", image_weights=tmp_path / "bad.pt")
    torch.save({"model": sd}, tmp_path / "nested.pt")
    with pytest.raises(ValueError, match="nested.pt: expected a state dict"):
        load_clip(tmp_path / "run", image_weights=tmp_path / "nested.pt")


def _padded_masked_attention(block, m, causal):
    """The original's computation: context padded to a multiple of 32, padded keys masked with -1e10, q and k
    each scaled by sqrt(1/sqrt(d)), padded queries dropped (glide-text2im clip/encoders.py)."""
    b, n, c = m.shape
    heads = block.n_head
    n_pad = 32 * math.ceil(n / 32) - n
    r = block.ln(m)
    q, k, v = (torch.nn.functional.pad(f(r), (0, 0, 0, n_pad)) for f in (block.f_q, block.f_k, block.f_v))
    q, k, v = (z.view(b, n + n_pad, heads, c // heads).permute(0, 2, 1, 3) for z in (q, k, v))
    scale = math.sqrt(1 / math.sqrt(c // heads))
    w = torch.einsum("bhcd,bhkd->bhck", q * scale, k * scale)
    allowed = torch.ones(n + n_pad, n + n_pad, dtype=torch.bool)
    allowed[:, n:] = False
    if causal:
        allowed &= torch.tril(torch.ones_like(allowed))
    w = torch.softmax(w + torch.where(allowed, 0.0, -1e10), dim=-1)
    out = torch.einsum("bhck,bhkd->bhcd", w, v).permute(0, 2, 1, 3).reshape(b, n + n_pad, c)[:, :n]
    return m + block.f_c(out)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_equals_the_padded_masked_original(causal):
    torch.manual_seed(0)
    clip = create_clip("tiny")
    block = (clip.text_encoder if causal else clip.image_encoder).blocks["block_0"].f_attn
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    m = torch.randn(3, 17, 32)
    torch.testing.assert_close(block(m), _padded_masked_attention(block, m, causal), atol=1e-5, rtol=1e-5)


def test_cutout_schedule_and_sizes():
    assert cutout_schedule(999, 1000, 8, 0.5) == (1, 1.0)  # noisiest step: the whole image only (the original)
    n, frac = cutout_schedule(0, 1000, 8, 0.5)
    assert (n, frac) == (8, 0.5)
    n, frac = cutout_schedule(500, 1000, 8, 0.5)
    assert n == 4 and frac == pytest.approx(1 - 0.5 * (1 - 500 / 999))
    assert [cutout_schedule(t, 1000, 1, 0.5)[0] for t in (0, 500, 999)] == [1, 1, 1]
    x = torch.arange(3 * 16 * 16, dtype=torch.float32).view(3, 16, 16)
    views, sides = make_cutouts(x, 8, 0.5, 8, torch.Generator().manual_seed(0))
    assert views.shape == (8, 3, 8, 8) and sides[0] == 16 and all(8 <= s <= 16 for s in sides)
    assert len(set(sides)) > 1
    same = make_cutouts(x, 8, 0.5, 8, torch.Generator().manual_seed(0))[0]
    assert torch.equal(views, same)
    with pytest.raises(ValueError, match="clip_cutouts=0"):
        cutout_schedule(0, 1000, 0, 0.5)


def test_guidance_gradient_raises_the_clip_score(tok_dir):
    from projects.glide_finetune.tokenizer import load_tokenizer

    tok = load_tokenizer(tok_dir)
    model, opts = tiny_glide(tok)
    torch.manual_seed(1)
    clip = create_clip("tiny", tokenizer=clip_tokenizer(str(tok_dir)), n_vocab=tok.n_vocab).eval()
    seeds = [0, 1, 2, 3]
    guide = ClipGuidance(clip, PROMPTS, scale=2.0, seeds=seeds)
    g = guide.grad(torch.randn(4, 3, 8, 8), torch.tensor([10, 10, 500, 900]))
    assert g.shape == (4, 3, 8, 8) and bool((g.flatten(1).norm(dim=1) > 1e-3).all())

    def score(x):
        with torch.no_grad():
            return float(clip.similarity(x, torch.zeros(4, dtype=torch.long), guide.z_text).mean())

    plain = generate(model, opts, tok, PROMPTS, seeds=seeds, sampler="glide", steps="8", guidance_scale=3.0)
    tiny_scale = generate(model, opts, tok, PROMPTS, seeds=seeds, sampler="glide", steps="8", guidance_scale=3.0,
                          clip_guidance=ClipGuidance(clip, PROMPTS, scale=1e-9, seeds=seeds))
    # the guided loop is GaussianDiffusion.p_sample_loop plus the gradient (same noise draws)
    torch.testing.assert_close(plain, tiny_scale, atol=1e-5, rtol=0)
    def run(sampler, s, cutouts=1):
        return score(generate(model, opts, tok, PROMPTS, seeds=seeds, sampler=sampler, steps="8", guidance_scale=3.0,
                              clip_guidance=ClipGuidance(clip, PROMPTS, scale=s, max_cutouts=cutouts, seeds=seeds)))

    # measured (exp(logit_scale) * cos at t = 0, logit scale 100), scale 0 / 2 / 4: glide -3.4 / 3.3 / 6.9,
    # glide with 4 cutouts -3.4 / 2.3 / 5.5, glide_ddim -2.6 / 2.2 / 4.9, plms -3.1 / 0.4 / 2.6
    glide = [run("glide", s) for s in (0.0, 2.0, 4.0)]
    assert glide[0] < glide[1] < glide[2] and glide[2] > glide[0] + 6, glide
    assert run("glide", 4.0, cutouts=4) > glide[0] + 5
    for sampler, gain in (("glide_ddim", 4), ("plms", 3)):
        unguided, guided = run(sampler, 0.0), run(sampler, 4.0)
        assert guided > unguided + gain, (sampler, unguided, guided)


def test_guidance_refuses_another_noise_schedule(tok_dir):
    clip = create_clip("tiny", tokenizer=clip_tokenizer(str(tok_dir)), n_vocab=300)
    with pytest.raises(ValueError, match="trained against 1000 steps of squaredcos_cap_v2.*linear"):
        ClipGuidance(clip, PROMPTS[:1], scale=1.0).check_diffusion({"diffusion_steps": 1000,
                                                                    "noise_schedule": "linear"})


def test_train_clip_tiny_lowers_the_contrastive_loss(trained_clip):
    run, summary = trained_clip
    before, after = summary["before"], summary["after"]
    # measured: loss at t=0 ~ 4.5 -> ~2.8; caption retrieval ~0.01 -> ~0.08 (chance 1/80)
    assert after["loss_t0"] < before["loss_t0"] - 0.5
    assert after["retrieval_t0"] >= 3 / 80
    assert json.loads((run / "eval.json").read_text())["after"] == after
    clip = load_clip(run)
    assert clip.logit_scale == pytest.approx(summary["logit_scale"], abs=1e-3)
    assert not any(p.requires_grad for p in clip.parameters())


def test_finetune_loss_backprops_into_the_diffusion_model_only(tok_dir, trained_clip):
    from projects.glide_finetune.tokenizer import load_tokenizer

    tok = load_tokenizer(tok_dir)
    model, opts = tiny_glide(tok)
    model.train()
    diffusion = create_diffusion(opts, "")
    loss_fn = clip_finetune_loss(f"0.5@{trained_clip[0]}", diffusion)
    clip = loss_fn.clip
    clip_before = {k: v.clone() for k, v in clip.state_dict().items()}
    captions = [PROMPTS[0], "", PROMPTS[2], PROMPTS[3]]  # "" = dropped by uncond_p: no CLIP term
    tokens, mask = tok.batch(captions, opts["text_ctx"])
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    t, noise = torch.tensor([5, 100, 400, 800]), torch.randn(4, 3, 8, 8)
    kw = {"tokens": tokens, "mask": mask}
    terms = loss_fn.bind(captions)(model, x0, t, kw, noise, loss="mse")
    plain = diffusion.training_losses(model, x0, t, kw, noise, loss="mse")
    torch.testing.assert_close(terms["mse"], plain["mse"])
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.5 * terms["clip"])
    assert terms["clip"][1] == 0 and bool((terms["clip"][[0, 2, 3]] > 0).all())
    terms["clip"].sum().backward()
    unet_grads = [p.grad for p in model.unet_parameters() if p.grad is not None]
    assert unet_grads and sum(float(g.abs().sum()) for g in unet_grads) > 0
    assert all(p.grad is None for p in clip.parameters())
    opt = torch.optim.SGD(list(model.parameters()) + list(clip.parameters()), lr=1.0)
    opt.step()
    assert all(torch.equal(v, clip.state_dict()[k]) for k, v in clip_before.items())
    with pytest.raises(ValueError, match="bind"):
        ClipFinetuneLoss(diffusion, clip)(model, x0, t, kw, noise)
    with pytest.raises(ValueError, match="clip_loss='0.1'"):
        clip_finetune_loss("0.1", diffusion)


def test_clip_score_streams_within_the_memory_limit(tmp_path, trained_clip):
    from PIL import Image

    run = trained_clip[0]
    folder = tmp_path / "samples"
    folder.mkdir()
    rng = torch.Generator().manual_seed(0)
    for i in range(10):
        arr = (torch.rand(8, 8, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i:06d}.png")
        (folder / f"{i:06d}.txt").write_text(PROMPTS[i % 4] + "\n")
    (folder / "000010.png").write_bytes(b"not a png")
    (folder / "000010.txt").write_text(PROMPTS[0])
    Image.fromarray(arr).save(folder / "000011.png")  # no prompt
    per = clip_score.per_image_bytes(load_clip(run).cfg)
    results = {}
    for limit in (0, 3.5 * per / 2 ** 20):
        results[limit] = clip_score.main({"scale": "tiny", "images": str(folder), "clip": str(run),
                                          "max_memory_mb": limit, "out": str(tmp_path / f"{limit}.json")})
    full, small = results.values()
    assert full["batch_size"] == 256 and full["batches"] == 1
    assert small["batch_size"] == 3 and small["batches"] == 4
    assert full["num_images"] == small["num_images"] == 10 and small["skipped"] == 2
    assert set(small["skip_reasons"]) == {"no_prompt", next(iter(set(small["skip_reasons"]) - {"no_prompt"}))}
    assert small["clip_cosine"] == pytest.approx(full["clip_cosine"], abs=1e-6)
    assert small["clip_score"] == pytest.approx(small["clip_cosine"] * load_clip(run).logit_scale)
    with pytest.raises(ValueError, match="max_memory_mb=1e-06.*raise the limit"):
        clip_score.main({"scale": "tiny", "images": str(folder), "clip": str(run), "max_memory_mb": 1e-6})


def test_sample_cli_clip_guidance(tmp_path, digits_tiny, tok_dir, trained_clip):
    from projects.glide_finetune import sample, train

    base = tmp_path / "base"
    train.main({"scale": "tiny", "data_dir": str(digits_tiny / "train"), "tokenizer": str(tok_dir),
                "run_dir": str(base), "max_steps": 1, "clip_loss": f"0.1@{trained_clip[0]}"})
    rows = [json.loads(line) for line in (base / "metrics.jsonl").read_text().splitlines()]
    assert any("clip" in r for r in rows)  # train.py's clip_loss option logs the term
    common = {"scale": "tiny", "base": str(base), "prompt": PROMPTS[0], "num_images": 2, "sampler": "glide",
              "steps": "4", "guidance_scale": 1.0, "threads": 1}
    plain = sample.main({**common, "out_dir": str(tmp_path / "plain")})
    info = sample.main({**common, "out_dir": str(tmp_path / "clip"), "clip_model": str(trained_clip[0]),
                        "clip_guidance_scale": 5.0, "clip_cutouts": 3})
    assert "clip_model" not in plain and info["clip_guidance_scale"] == 5.0 and info["clip_cutouts"] == 3
    a = (tmp_path / "plain" / "000000.png").read_bytes()
    b = (tmp_path / "clip" / "000000.png").read_bytes()
    assert a != b


def test_eps_shift_under_classifier_free_guidance_shifts_the_guided_eps(tok_dir):
    torch.manual_seed(0)
    clip = create_clip("tiny", tokenizer=clip_tokenizer(str(tok_dir)), n_vocab=300)
    guide = ClipGuidance(clip, PROMPTS[:2], scale=2.0)
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([300, 700])
    out = torch.randn(4, 6, 8, 8)  # [uncond; cond] model output for the doubled batch
    shifted = guide.eps_shift(out, torch.cat([x, x]), torch.cat([t, t]), create_diffusion(
        {"diffusion_steps": 1000, "noise_schedule": "squaredcos_cap_v2"}, "").alphas_cumprod)
    ab = torch.from_numpy(create_diffusion({"diffusion_steps": 1000, "noise_schedule": "squaredcos_cap_v2"},
                                           "").alphas_cumprod[t.numpy()]).float().view(-1, 1, 1, 1)
    delta = (1 - ab).sqrt() * guide.grad(x, t)
    s = 3.0

    def cfg(o):
        return o[:2, :3] + s * (o[2:, :3] - o[:2, :3])

    torch.testing.assert_close(cfg(shifted), cfg(out) - delta, atol=1e-5, rtol=1e-5)
    assert torch.equal(shifted[:, 3:], out[:, 3:])  # the variance channels are left alone
    assert float(delta.abs().max()) > 1e-4
