r"""bytedance/1d-tokenizer's `scripts/train_maskgen.py`, as typed there: trains MaskGen-VQ with
projects/titok_rar/train_generator.py.

    accelerate launch projects/titok_rar/scripts/train_maskgen.py \
        config=projects/titok_rar/configs/generator/maskgen_vq_l.yaml experiment.output_dir="maskgen_vq_l" \
        model.text_encoder.pretrained=<open_clip weights file> dataset.params.pretokenization=<token folder>

Always MaskGen (generator=maskgen). Differences from the original: the captions come with the token folder
(projects/titok_rar/pretokenize.py, captions.json) instead of the image-text WebDataset, the CLIP text encoder is a
local open_clip file (no hub), and only MaskGen-VQ is implemented (not the KL variants).
Outputs as train_generator.py (final/generator.safetensors + generator.yaml [+ text_encoder.safetensors]).
"""
from projects.titok_rar.scripts._original import train_generator_entry

if __name__ == "__main__":
    train_generator_entry("maskgen", "scripts/train_maskgen.py", __doc__)
