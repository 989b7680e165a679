r"""bytedance/1d-tokenizer's `scripts/train_rar.py`, as typed there: trains RAR with projects/titok_rar/train_generator.py.

    accelerate launch projects/titok_rar/scripts/train_rar.py config=projects/titok_rar/configs/generator/rar.yaml \
        experiment.project="rar" experiment.name="rar_rar-b" experiment.output_dir="rar_rar-b" \
        model.generator.hidden_size=768 model.generator.num_hidden_layers=24 model.generator.num_attention_heads=16 \
        model.generator.intermediate_size=3072 training.per_gpu_batch_size=64 \
        dataset.params.pretokenization=<token folder>
    torchrun --nproc_per_node=8 projects/titok_rar/scripts/train_rar.py config=...        (DDP)

Always RAR (generator=rar), whatever the YAML's `generator:` says, as the original script builds a RAR. The one
change to the command: dataset.params.pretokenization is a token folder (projects/titok_rar/pretokenize.py), not
the original's JSONL (refused, naming pretokenize.py). Outputs as train_generator.py: config.yaml, metrics.jsonl,
checkpoints/ (resumed from), final/generator.safetensors (the released checkpoints' key names) + generator.yaml.
"""
from projects.titok_rar.scripts._original import train_generator_entry

if __name__ == "__main__":
    train_generator_entry("rar", "scripts/train_rar.py", __doc__)
