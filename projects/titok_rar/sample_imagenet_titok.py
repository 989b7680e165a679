r"""bytedance/1d-tokenizer's `sample_imagenet_titok.py`, as typed there: class-balanced MaskGIT samples on TiTok
tokens (the released generator_titok_{l32,b64,s128}) through projects/titok_rar/sample.py.

    torchrun --nproc_per_node=8 projects/titok_rar/sample_imagenet_titok.py \
        config=projects/titok_rar/configs/generator/maskgit.yaml experiment.output_dir="titok_b_64" \
        experiment.generator_checkpoint=generator_titok_b64.bin experiment.tokenizer_checkpoint=tokenizer_titok_b64.bin
    python projects/titok_rar/sample_imagenet_titok.py config=... released=titok_l32 ...   (a release's settings)

The original takes configs/infer/titok_{l32,b64,s128}.yaml; here those settings are `released=titok_l32|titok_b64|
titok_s128` (maskgit.RELEASED) on top of maskgit.yaml. As there: 50 images per class, <i:06d>.png in
experiment.output_dir, then `<output_dir>.npz` (arr_0, for OpenAI's evaluator.py); here also
<output_dir>/samples.npz and samples.json. Differences: local weight files (the original downloads them: here
download.py item=generator_titok_b64 / tokenizer_titok_b64 first); sample i uses seed `seed + i`.
"""
from projects.titok_rar.scripts._original import sample_entry

if __name__ == "__main__":
    sample_entry("maskgit", "sample_imagenet_titok.py", __doc__,
                 "python projects/titok_rar/download.py item=generator_titok_b64 out_dir=...; "
                 "item=tokenizer_titok_b64 for the tokenizer")
