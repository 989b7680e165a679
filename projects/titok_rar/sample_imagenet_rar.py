r"""bytedance/1d-tokenizer's `sample_imagenet_rar.py`, as typed there: class-balanced RAR samples for gFID through
projects/titok_rar/sample.py.

    torchrun --nproc_per_node=8 projects/titok_rar/sample_imagenet_rar.py \
        config=projects/titok_rar/configs/generator/rar.yaml experiment.output_dir="rar_b" \
        experiment.generator_checkpoint="rar_b.bin" model.vq_model.pretrained_tokenizer_weight=<VQGAN .bin> \
        model.generator.hidden_size=768 model.generator.num_hidden_layers=24 model.generator.num_attention_heads=16 \
        model.generator.intermediate_size=3072 model.generator.randomize_temperature=1.0 \
        model.generator.guidance_scale=16.0 model.generator.guidance_scale_pow=2.75
    python projects/titok_rar/sample_imagenet_rar.py config=...          (one process; shards also by SLURM array)

As there: 50 images per class of model.generator.condition_num_classes (50,000 for ImageNet), <i:06d>.png in
experiment.output_dir, split over the ranks, then `<output_dir>.npz` (arr_0, for OpenAI's evaluator.py); here also
<output_dir>/samples.npz (+ arr_1 labels) and samples.json (NFE, images/s). The tokenizer is
model.vq_model.pretrained_tokenizer_weight (or experiment.tokenizer_checkpoint). Differences: the weight files are
local paths (the original downloads them from the hub: here download.py item=rar_b / maskgit_vqgan first);
sample i uses seed `seed + i` (the original seeds each rank), so any sharding gives the same images; RAR samples
with the KV cache (kv_cache=false for the original's uncached loop, same tokens).
"""
from projects.titok_rar.scripts._original import sample_entry

if __name__ == "__main__":
    sample_entry("rar", "sample_imagenet_rar.py", __doc__,
                 "python projects/titok_rar/download.py item=rar_b out_dir=downloads/titok_rar/generators/"
                 "rar_b; item=maskgit_vqgan for the tokenizer")
