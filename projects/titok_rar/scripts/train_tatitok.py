"""bytedance/1d-tokenizer's `scripts/train_tatitok.py`: TA-TiTok training is not implemented here, and this says so.

    python projects/titok_rar/scripts/train_tatitok.py config=<TA-TiTok yaml> ...   -> exits 2 with the reason

TA-TiTok training needs a CLIP text encoder over the captions (not implemented: train_tokenizer.py refuses
model.type=tatitok). The TA-TiTok model and its text-conditioned decoding are here (titok.TATiTok,
image_tokenizers.load_tokenizer); the single-stage VQ / VAE TiTok recipes of TA-TiTok's configs train with
scripts/train_titok.py config=projects/titok_rar/configs/training/TiTok/single_stage/<recipe>.yaml.
"""
from projects.titok_rar import train_tokenizer
from projects.titok_rar.scripts._original import run

if __name__ == "__main__":
    run(train_tokenizer.main, train_tokenizer.Config, train_tokenizer.PRESETS, __doc__,
        script="scripts/train_tatitok.py", fixed={"model.type": "tatitok"})
