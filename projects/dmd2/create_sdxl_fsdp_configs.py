"""DMD2's `python main/sdxl/create_sdxl_fsdp_configs.py --folder DIR --master_ip IP --num_machines 8
--sharding_strategy 4`: one accelerate launch config per machine (`DIR/config_rank<i>.yaml`) for a multi-node
FSDP run started by hand, plus the command each machine runs.

Here FSDP is a training option (`fsdp=<preset>` of train.py, shared/train/fsdp.py: the UNet blocks wrapped, full
state dicts in checkpoints), so the files carry only the launch topology (machine rank, main process IP and port,
machines, 8 processes each) and the FSDP preset goes on the train.py command. `--sharding_strategy`: 1 FULL_SHARD
-> fsdp=full_shard, 2 SHARD_GRAD_OP -> shard_grad_op, 3 NO_SHARD -> DDP (fsdp=''), 4 HYBRID_SHARD and
5 HYBRID_SHARD_ZERO2 -> full_shard (these presets have no hybrid mesh: parameters are sharded over all GPUs of
all machines; said on the console). On SLURM, `snakemake --profile slurm` or shared.launch starts the processes
and no file is needed.

    python projects/dmd2/create_sdxl_fsdp_configs.py --folder fsdp_configs/ --master_ip 10.0.0.1 --num_machines 8 \
        --sharding_strategy 4
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from shared.config import ConfigError, cli, option, resolve
from shared.io import write_text

# the original's numbering (torch's ShardingStrategy) -> (our preset, what it means here)
STRATEGIES = {1: ("full_shard", "FULL_SHARD"), 2: ("shard_grad_op", "SHARD_GRAD_OP"), 3: ("", "NO_SHARD (DDP)"),
              4: ("full_shard", "HYBRID_SHARD"), 5: ("shard_grad_op", "HYBRID_SHARD_ZERO2")}


@dataclass
class Config:
    scale: str = "paper"
    folder: str = option("", help="where config_rank<i>.yaml go")
    master_ip: str = option("", help="IP of machine 0")
    main_process_port: int = option(2345, min=1, max=65535)
    num_machines: int = option(8, min=1)
    gpus_per_machine: int = option(8, min=1)
    sharding_strategy: int = option(1, choices=tuple(STRATEGIES))
    recipe: str = option("sdxl_4step", help="the train.py recipe printed in the command")


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def launch_config(cfg, rank: int) -> dict:
    return {"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU", "machine_rank": rank,
            "main_process_ip": cfg.master_ip, "main_process_port": cfg.main_process_port,
            "num_machines": cfg.num_machines, "num_processes": cfg.gpus_per_machine * cfg.num_machines,
            "mixed_precision": "no", "rdzv_backend": "static", "same_network": True, "use_cpu": False}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if not cfg.folder or not cfg.master_ip:
        raise ConfigError("--folder and --master_ip are required")
    preset, name = STRATEGIES[cfg.sharding_strategy]
    if cfg.sharding_strategy in (4, 5):
        print(f"note: {name} (sharding_strategy {cfg.sharding_strategy}) runs as fsdp={preset} here: our FSDP2 presets "
              f"have no hybrid (per-node) mesh, so parameters shard over all {cfg.num_machines * cfg.gpus_per_machine} "
              f"GPUs (less memory per GPU, more traffic between machines)")
    fsdp = f"fsdp={preset}" if preset else "fsdp=''"
    paths = []
    for rank in range(cfg.num_machines):
        path = Path(cfg.folder) / f"config_rank{rank}.yaml"
        write_text(path, f"# machine {rank} of {cfg.num_machines}; FSDP is train.py's option: {fsdp}\n"
                   + yaml.safe_dump(launch_config(cfg, rank), sort_keys=False))
        paths.append(path)
    print(f"{len(paths)} configs in {cfg.folder}; on machine i run:\n  accelerate launch --config_file "
          f"{Path(cfg.folder) / 'config_rank<i>.yaml'} -m projects.dmd2.train recipe={cfg.recipe} scale=paper "
          f"{fsdp} teacher=... data=... run_dir=...")
    return paths


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
