"""The titok_rar workflow plans (dry runs, no training): the toy TA-TiTok chain (training, its evaluation row and table
beside the single-stage VQ TiTok, pretokenization) and MaskGen on its tokens; MaskGIT and RAR-vs-MaskGIT on the
K = 32 tokens; the guidance-schedule rows as sampling overrides of the trained generators; the paper's numbers
beside the toy rows; `--config scale=paper eval_maskgen` (our TA-TiTok -> DataComp tokens -> MaskGen-VQ-L -> MJHQ-30K
FID beside the paper's 7.74); a schedule a sampler lacks fails before any job, naming the row.

    python -m pytest tests/test_titok_workflow.py -q
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def dry(tmp_path, *args):
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "--directory",
                        str(tmp_path / "run"), *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    return r


def commands(out: str, script: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("Shell command:") and script in ln]


@pytest.fixture(scope="module")
def toy_plan(tmp_path_factory):
    r = dry(tmp_path_factory.mktemp("toy"), "titok", "eval_rar", "eval_maskgit", "eval_maskgen")
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_toy_tatitok_is_trained_evaluated_tabled_and_pretokenized(toy_plan):
    train, = [c for c in commands(toy_plan, "train_tokenizer.py")
              if "configs/toy/tatitok.yaml" in c and "tatitok_k16/single" in c]
    assert "model.vq_model.num_latent_tokens=16" in train
    assert "experiment.output_dir=results/toy/titok_rar/tatitok_k16/single" in train
    assert "losses.perceptual_loss=digits:results/toy/digits_features/features.safetensors" in train
    evaluate, = [c for c in commands(toy_plan, "evaluate.py") if "experiment=tatitok_k16_single" in c]
    assert "tokenizer=results/toy/titok_rar/tatitok_k16/single/final" in evaluate
    pretok, = [c for c in commands(toy_plan, "pretokenize.py") if "tokens/tatitok_k16 " in c]
    assert "tokenizer=results/toy/titok_rar/tatitok_k16/single/final" in pretok
    pretok, = [c for c in commands(toy_plan, "pretokenize.py") if "tokens/tatitok_k16_drop50 " in c]
    assert "tokenizer=results/toy/titok_rar/tatitok_k16_drop50/single/final" in pretok      # MaskGen's tokens
    table, = [c for c in commands(toy_plan, "tables.py") if "titok_tatitok.md" in c]
    assert re.search(r"inputs=\[results/toy/titok_rar/eval/k16_vq_single\.json,"
                     r"results/toy/titok_rar/eval/tatitok_k16_single\.json,"
                     r"results/toy/titok_rar/eval/tatitok_k16_drop50_single\.json\]", table)
    assert "notes='the rows share the single-stage VQ recipe" in table and "paper=" not in table
    # the caption-dropout variant: the same recipe and K with model.text_guidance_dropout
    drop, = [c for c in commands(toy_plan, "train_tokenizer.py") if "tatitok_k16_drop50/single" in c]
    assert "configs/toy/tatitok.yaml" in drop and drop.rstrip().split(" 2>&1")[0].endswith(
        "model.text_guidance_dropout=0.5")


def test_toy_tokenizer_tables_carry_the_papers_rfid_where_k_matches(toy_plan):
    tables = {re.search(r"out_md=results/toy/tables/(titok_\w+)\.md", c).group(1): c
              for c in commands(toy_plan, "tables.py") if "tables/titok_" in c and "titok_rar_gen" not in c}
    assert "paper='{k32_stage2: {rfid: 2.21}}'" in tables["titok_tokens"]
    assert "paper='{k32_stage2: {rfid: 2.21}}'" in tables["titok_stages"]
    assert "paper='{vqgan: {rfid: 2.28}, k32_stage2: {rfid: 2.21}}'" in tables["titok_vqgan"]
    assert "paper=" not in tables["titok_quantizer"] and "TiTok-BL-64 VAE 16 channels rFID 1.25" in tables[
        "titok_quantizer"]


def test_toy_generators_use_the_k32_and_tatitok_tokens(toy_plan):
    trains = {re.search(r"gen/runs/(\w+)", c).group(1): c for c in commands(toy_plan, "train_generator.py")}
    assert "pretokenization=data/toy/titok_rar/tokens/tatitok_k16_drop50 " in trains["maskgen"]
    assert "pretokenization=data/toy/titok_rar/tokens/k32 " in trains["maskgit"]
    assert "pretokenization=data/toy/titok_rar/tokens/k32 " in trains["rar_annealed_k32"]
    assert "order=annealed" in trains["rar_annealed_k32"]
    assert "pretokenization=data/toy/titok_rar/tokens/vqgan " in trains["rar_annealed"]
    assert "rar_annealed_k16" not in toy_plan


def test_toy_schedule_rows_only_sample_the_trained_generators(toy_plan):
    samples = {re.search(r"out_dir=results/toy/titok_rar/gen/samples/(\S+)", c).group(1): c
               for c in commands(toy_plan, "sample.py")}
    assert "checkpoint=results/toy/titok_rar/gen/runs/rar_annealed " in samples["rar_annealed__sched_constant"]
    assert "model.generator.guidance_scale_pow=0.0 " in samples["rar_annealed__sched_constant"]
    assert "model.generator.guidance_scale_pow=2.75 " in samples["rar_annealed__sched_pow2.75"]
    assert "checkpoint=results/toy/titok_rar/gen/runs/maskgit " in samples["maskgit__sched_constant"]
    assert "model.generator.guidance_decay=constant " in samples["maskgit__sched_constant"]
    assert ("model.generator.guidance_decay=power-cosine model.generator.guidance_scale_pow=3.0 "
            in samples["maskgit__sched_pow3.0"])
    # no training run per schedule: the same six runs as before (3 orders, RAR on K=32, MaskGIT, MaskGen)
    assert len(commands(toy_plan, "train_generator.py")) == 6


def test_toy_generator_tables_carry_the_papers_fid(toy_plan):
    tables = {re.search(r"titok_rar_gen_(\w+)\.md", c).group(1): c
              for c in commands(toy_plan, "tables.py") if "titok_rar_gen_" in c}
    assert "paper='{rar_annealed: {fid: 1.95}}'" in tables["rar_order"]
    assert "paper='{maskgit: {fid: 2.77}}'" in tables["rar_vs_maskgit"]
    assert "paper='{maskgen: {fid: 7.74}}'" in tables["maskgen"]
    assert "paper=" not in tables["kv_cache"] and "paper=" not in tables["cfg_sweep"]


def test_paper_eval_maskgen_plans_the_text_to_image_chain(tmp_path):
    r = dry(tmp_path, "eval_maskgen", "--config", "scale=paper")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for item in ("open_clip_vit_l14_336", "mjhq30k", "inception", "lpips_vgg", "convnext_small"):
        assert f"download.py scale=paper item={item} out_dir=downloads/titok_rar/{item}" in out
    train_tok, = commands(out, "train_tokenizer.py")
    assert "configs/training/TA-TiTok/tatitok_bl128_vq.yaml" in train_tok and "--gpus-per-node 8" in train_tok
    pretok, = commands(out, "pretokenize.py")
    assert "tokenizer=results/paper/titok_rar/tatitok_bl128_vq/final" in pretok
    # quoted: the shard pattern's braces reach the loader instead of bash's brace expansion
    assert "data='data/paper/datacomp_sharded/train/datacomp-train-{000000..140089}.tar' caption_key=txt" in pretok
    train, = commands(out, "train_generator.py")
    assert "configs/generator/maskgen_vq_l.yaml scale=paper" in train and "--nproc-per-node 8" in train
    sample, = commands(out, "sample.py")
    assert "prompts=downloads/titok_rar/mjhq30k/prompts.txt per_class=1" in sample
    assert "tokenizer=results/paper/titok_rar/tatitok_bl128_vq/final" in sample
    evaluate, = commands(out, "generator_eval.py")
    assert "reference=downloads/titok_rar/mjhq30k/mjhq30k_imgs check_resolution=false metrics=[fid]" in evaluate
    assert "extractor=inception:downloads/titok_rar/inception/inception-2015-12-05.pt" in evaluate
    table, = commands(out, "tables.py")
    assert "paper='{maskgen_vq_l: {fid: 7.74}}'" in table and "results/paper/tables/titok_rar_gen_maskgen.md" in table


def test_a_schedule_the_sampler_lacks_is_named_before_any_job(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("titok_gen_tables:\n  cfg_sweep:\n    title: t\n    rows: [rar_annealed__sched_linear]\n")
    r = dry(tmp_path, "eval_rar", "--configfile", str(override))
    assert r.returncode != 0
    said = r.stdout + r.stderr  # (snakemake prints a parse error on stdout)
    assert "rar_annealed__sched_linear" in said and "has no 'linear' guidance schedule" in said


def test_toy_quantizer_rows_are_trained_with_three_seeds_and_judged(toy_plan):
    # config titok_seeds: the single-stage VQ and VAE TiTok of the quantizer table trained with seeds 0, 1, 2
    trains = [c for c in commands(toy_plan, "train_tokenizer.py") if "configs/toy/titok_single_" in c]
    for mode in ("vq", "vae"):
        seed0, = [c for c in trains if f"output_dir=results/toy/titok_rar/k16_{mode}/single " in c]
        assert "training.seed=" not in seed0                       # the recipe's own seed (0)
        for seed in (1, 2):
            run, = [c for c in trains if f"output_dir=results/toy/titok_rar/k16_{mode}_seed{seed}/single " in c]
            assert f"training.seed={seed} " in run
            ev, = [c for c in commands(toy_plan, "evaluate.py") if f"k16_{mode}_seed{seed}/single/final" in c]
            # the seed moves to the end of experiment and checkpoint, where shared/tables.py joins the seeds
            assert f"experiment=k16_{mode}_single_seed{seed} checkpoint=k16_{mode}_single_seed{seed} " in ev
        ev, = [c for c in commands(toy_plan, "evaluate.py") if f"k16_{mode}/single/final" in c]
        assert f"experiment=k16_{mode}_single checkpoint=k16_{mode}_single " in ev
    table, = [c for c in commands(toy_plan, "tables.py") if "titok_quantizer.md" in c]
    assert "eval/k16_vq_seed2_single.json" in table and "eval/k16_vae_seed1_single.json" in table
    assert ("claims='[[k16_vae_single,k16_vq_single]]' out_claims=results/toy/tables/titok_quantizer.claims.json"
            in table)
    # two-stage runs and the TA-TiTok are trained once
    assert not re.search(r"k\d+_seed\d|stage[12]_seed|tatitok_k16(_drop50)?_seed", toy_plan)
