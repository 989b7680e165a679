r"""bytedance/1d-tokenizer's `scripts/train_tatitok.py`, as typed there: trains TA-TiTok with
projects/titok_rar/train_tokenizer.py (model.type=tatitok).

    accelerate launch projects/titok_rar/scripts/train_tatitok.py \
        config=projects/titok_rar/configs/training/TA-TiTok/tatitok_bl32_vq.yaml \
        experiment.project="tatitok_bl32_vq" experiment.name="tatitok_bl32_vq_run1" \
        experiment.output_dir="tatitok_bl32_vq_run1"
    python projects/titok_rar/scripts/train_tatitok.py config=projects/titok_rar/configs/toy/tatitok.yaml \
        scale=toy losses.perceptual_loss=digits:results/toy/digits_features/features.safetensors

Always TA-TiTok (model.type=tatitok), the single-stage recipe with the decoder attending to each caption's frozen
text-encoder states. Differences: the CLIP text encoder is a local open_clip file (model.text_encoder.pretrained,
download.py item=open_clip_vit_l14_336) instead of the hub's 'openai' tag; the perceptual networks are local files
(download.py items lpips_vgg, convnext_small); training.enable_wandb is refused (metrics.jsonl instead). Outputs as
train_tokenizer.py: config.yaml, metrics.jsonl, checkpoints/ (resumed from), final/ (config.json +
model.safetensors, loadable with image_tokenizers.load_tokenizer, + text_encoder.json [+ .safetensors]).
"""
from projects.titok_rar import train_tokenizer
from projects.titok_rar.scripts._original import run

if __name__ == "__main__":
    run(train_tokenizer.main, train_tokenizer.Config, train_tokenizer.PRESETS, __doc__,
        script="scripts/train_tatitok.py", fixed={"model.type": "tatitok"})
