r"""bytedance/1d-tokenizer's `scripts/train_maskgit.py`, as typed there: trains MaskGIT (ImageBert / UViTBert on TiTok
tokens) with projects/titok_rar/train_generator.py.

    accelerate launch projects/titok_rar/scripts/train_maskgit.py \
        config=projects/titok_rar/configs/generator/maskgit.yaml experiment.project="titok_generation" \
        experiment.name="titok_b64_maskgit" experiment.output_dir="titok_b64_maskgit" \
        dataset.params.pretokenization=<token folder>
    torchrun --nproc_per_node=8 projects/titok_rar/scripts/train_maskgit.py config=...    (DDP)

Always MaskGIT (generator=maskgit); model.generator.model_type ViT / UViT picks ImageBert / UViTBert as there.
dataset.params.pretokenization is a token folder (projects/titok_rar/pretokenize.py), not the original's JSONL.
Outputs as train_generator.py (final/generator.safetensors with the released key names + generator.yaml).
"""
from projects.titok_rar.scripts._original import train_generator_entry

if __name__ == "__main__":
    train_generator_entry("maskgit", "scripts/train_maskgit.py", __doc__)
