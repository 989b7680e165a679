r"""bytedance/1d-tokenizer's `scripts/train_titok.py`, as typed there: trains TiTok with projects/titok_rar/train_tokenizer.py.

    accelerate launch projects/titok_rar/scripts/train_titok.py \
        config=projects/titok_rar/configs/training/TiTok/stage1/titok_b64.yaml \
        experiment.project="titok_b64_stage1" experiment.name="titok_b64_stage1_run1" \
        experiment.output_dir="titok_b64_stage1_run1" training.per_gpu_batch_size=32
    python projects/titok_rar/scripts/train_titok.py config=.../stage2/titok_b64.yaml \
        experiment.init_weight=titok_b64_stage1_run1/final          (stage 2, from the stage-1 result)
    torchrun --nproc_per_node=8 projects/titok_rar/scripts/train_titok.py config=...           (DDP)

The config decides the stage, as there (stage 1, stage 2 with finetune_decoder, single stage without is_legacy); the
model is always TiTok (model.type=titok; the toy VQGAN teacher is train_tokenizer.py model.type=vqgan). Outputs in
experiment.output_dir as train_tokenizer.py writes them: config.yaml, metrics.jsonl, checkpoints/ (resumed from),
final/ (config.json + model.safetensors: TiTok.from_pretrained / load_tokenizer). Differences: the tokenizer and
data paths are local files (no hub download), training.enable_wandb is refused (metrics.jsonl instead).
"""
from shared.config import ConfigError
from projects.titok_rar import train_tokenizer
from projects.titok_rar.scripts._original import run


def only_titok(cfg) -> None:
    if cfg.model.type != "titok":
        raise ConfigError(f"model.type={cfg.model.type} (from the config): scripts/train_titok.py always runs "
                          "model.type=titok, as the original; the VQGAN teacher trains with "
                          "projects/titok_rar/train_tokenizer.py, TA-TiTok with scripts/train_tatitok.py")


if __name__ == "__main__":
    run(train_tokenizer.main, train_tokenizer.Config, train_tokenizer.PRESETS, __doc__,
        script="scripts/train_titok.py", fixed={"model.type": "titok"}, check=only_titok)
