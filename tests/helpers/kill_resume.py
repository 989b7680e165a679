"""One kill/resume harness for every training step script: SIGKILL a run, start it again, compare with a run that
was never interrupted, bit for bit.

    from helpers.kill_resume import SCRIPTS, kill_resume              # (tests/ is on the test path)
    report = kill_resume(SCRIPTS["train_sd"], work, tmp_path, kill_at=5)          # killed after optimizer step 5
    report = kill_resume(SCRIPTS["train_sd"], work, tmp_path, mid_write=2)        # killed inside its 2nd checkpoint
    assert report.identical, report.describe()

How the kill works. The killed run is a separate process: a child forked from a "zygote" interpreter started
from this file (`python tests/helpers/kill_resume.py --serve`), which has imported the scripts' modules once. The
child installs a global optimizer-step hook that SIGKILLs it after the N-th optimizer step of any optimizer, then
runs the module as `__main__`, exactly as `python -m <module>` would. So it works for scripts on
shared.train.Trainer and for scripts with their own loop (shared/toy/train_features.py), and the kill lands
between checkpoints wherever they are. `mid_write=N` instead sets shared.train.checkpoint's fault hook, which
SIGKILLs the process during its N-th checkpoint write (weights on disk, meta.json not yet written). The
uninterrupted reference and the resumed run are in-process `main(cfg)` calls (same code path as the command line:
`parse_argv`), so a case costs its training steps, not interpreter starts.

What is compared: every safetensors file of the run's newest checkpoint (models, EMAs), or the script's own output
files (`Script.outputs`) for scripts without checkpoints. Equality is `torch.equal` per tensor. And the training
rows of metrics.jsonl (the Trainer's per-step rows: losses, grad norms, LRs, a script's own logged values; times,
speeds, memory left out): the resumed run's file must hold the uninterrupted run's values exactly, step by step.

Adding a script: one `Script(...)` entry in SCRIPTS: its module, the options for a tiny run (a function of the
fixtures folder `work` and the run folder), and the output files when it has no checkpoints. The fixtures it needs
are built by tests/test_train_kill.py's `work` fixture (`prepare_work`).
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import random
import select
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Script:
    name: str
    module: str
    options: Callable[[Path, Path], list[str]]  # (work, run_dir) -> key=value options of a tiny run
    outputs: tuple[str, ...] = ()  # files under run_dir to compare; () = the newest checkpoint's safetensors
    kill_range: tuple[int, int] = (3, 5)  # the kill is drawn from these optimizer steps (all optimizers counted):
    # after the first checkpoint (ckpt_every=2), before the end
    needs: tuple[str, ...] = ()  # fixtures under `work` (see prepare_work)
    known_issue: str = ""  # a resume bug found and not fixed yet: the test is a strict xfail with this reason


_TRAIN = ["progress=false", "log_every=1", "threads=1"]

SCRIPTS: dict[str, Script] = {s.name: s for s in [
    Script("train_sd", "projects.sd_flux_lab.train_sd",
           lambda w, r: ["scale=tiny", "base=preset", "arch=sd15", f"data_dir={w / 'lab/train'}", f"run_dir={r}",
                         "max_steps=6", "ckpt_every=2", "sample_steps=1", "validation_prompts=[a red]",
                         "validation_seeds=[0]", *_TRAIN], needs=("lab",)),
    Script("train_sd_buckets_ema", "projects.sd_flux_lab.train_sd",
           lambda w, r: ["scale=tiny", "base=preset", "arch=sdxl", f"data_dir={w / 'lab/train'}", f"run_dir={r}",
                         "max_steps=6", "ckpt_every=2", "buckets=true", "ema_decay=0.9", "caption_dropout=0.3",
                         "hflip=0.5", "crop=random", "sample_steps=1", "validation_prompts=[a red]",
                         "validation_seeds=[0]", *_TRAIN], needs=("lab",)),
    Script("train_vae", "projects.sd_flux_lab.train_vae",
           lambda w, r: ["scale=tiny", f"data_dir={w / 'lab/train'}", f"run_dir={r}", "max_steps=6", "ckpt_every=2",
                         "gan_weight=0.1", "batch_size=4", *_TRAIN], kill_range=(5, 11), needs=("lab",)),
    Script("train_transformer", "projects.sd_flux_lab.train_transformer",
           lambda w, r: ["scale=tiny", f"data_dir={w / 'lab/train'}", f"run_dir={r}", "max_steps=6", "ckpt_every=2",
                         "sample_steps=1", "validation_prompts=[a red]", "validation_seeds=[0]", *_TRAIN],
           needs=("lab",)),
    Script("train_flux", "projects.sd_flux_lab.train_flux",
           lambda w, r: ["scale=tiny", f"pipeline={w / 'flux2'}", f"data_dir={w / 'lab/train'}", f"run_dir={r}",
                         "max_steps=6", "ckpt_every=2", "export_pipeline=false", "progress=false", "log_every=1"],
           needs=("lab", "flux2")),
    Script("dmd2_train", "projects.dmd2.train",
           lambda w, r: ["scale=tiny", "recipe=digits_1step_gan", f"teacher={w / 'teacher'}",
                         f"data={w / 'edm/real.lmdb'}", f"run_dir={r}", "max_steps=6", "ckpt_every=2", "keep_last=3",
                         "threads=1", "log_every=1"], kill_range=(5, 9), needs=("dmd2",)),
    Script("dmd2_train_teacher", "projects.dmd2.train_teacher",
           lambda w, r: ["scale=tiny", f"data={w / 'edm/real.lmdb'}", f"run_dir={r}", "max_steps=6", "ckpt_every=2",
                         "ema_decay=0.9", "threads=1"], needs=("dmd2",)),
    Script("train_features", "shared.toy.train_features",
           lambda w, r: ["scale=tiny", f"data_dir={w / 'digits'}", f"out_dir={r}", "threads=1"],
           outputs=("features.safetensors",), kill_range=(1, 2), needs=("digits",)),
    Script("train_diffusion", "shared.toy.train_diffusion",  # the default target's longest step
           lambda w, r: ["scale=tiny", f"data_dir={w / 'digits'}", f"out_dir={r}", "max_steps=6", "ckpt_every=2",
                         *_TRAIN], needs=("digits",)),
    Script("glide_train", "projects.glide_finetune.train",
           lambda w, r: ["scale=tiny", f"data_dir={w / 'digits/train'}", f"tokenizer={w / 'glide_tok'}",
                         f"run_dir={r}", "max_steps=6", "ckpt_every=2", "progress=false"], needs=("glide",)),
    Script("titok_train_tokenizer", "projects.titok_rar.train_tokenizer",
           lambda w, r: [f"config={REPO / 'projects/titok_rar/configs/toy/vqgan_digits.yaml'}", "scale=tiny",
                         "threads=1", "training.max_train_steps=6", "training.per_gpu_batch_size=8",
                         "experiment.save_every=2", "experiment.log_every=1", f"experiment.output_dir={r}",
                         f"dataset.params.train_shards_path_or_url={w / 'titok/shards/train'}",
                         "model.vqgan.hidden_channels=16", "losses.discriminator_start=1",
                         f"losses.perceptual_loss=digits:{w / 'feat/features.safetensors'}"],
           kill_range=(6, 9), needs=("titok",)),
    # TiTok stage 1 (decoder logits vs a frozen VQGAN's codes) and stage 2 (encoder frozen, pixel decoder + GAN)
    Script("titok_train_tokenizer_stage1", "projects.titok_rar.train_tokenizer",
           lambda w, r: _titok_stage(w, r, "titok_stage1.yaml"), needs=("titok_stages",)),
    Script("titok_train_tokenizer_stage2", "projects.titok_rar.train_tokenizer",
           lambda w, r: _titok_stage(w, r, "titok_stage2.yaml", f"experiment.init_weight={w / 'titok_s1/final'}",
                                     "losses.discriminator_start=1",
                                     f"losses.perceptual_loss=digits:{w / 'feat/features.safetensors'}"),
           kill_range=(6, 9), needs=("titok_stages",)),
    # RAR with the annealed order (random-order probability 1 -> 0 over steps 1..5, so it changes across the
    # resume), ten-crop tokens (a per-step crop drawn from the trainer's "crops" generator), label dropout
    Script("titok_train_generator_rar", "projects.titok_rar.train_generator",
           lambda w, r: _generator(w, r, "rar", "order=annealed", "model.generator.randomness_anneal_start=1",
                                   "model.generator.randomness_anneal_end=5"), needs=("gen_tokens",)),
    Script("titok_train_generator_maskgit", "projects.titok_rar.train_generator",
           lambda w, r: _generator(w, r, "maskgit"), needs=("gen_tokens",)),
    Script("titok_train_generator_maskgen", "projects.titok_rar.train_generator",  # with its (trained) text encoder
           lambda w, r: _generator(w, r, "maskgen"), needs=("gen_tokens",)),
]}


def _titok_stage(work: Path, run: Path, recipe: str, *extra: str) -> list[str]:
    return [f"config={REPO / 'projects/titok_rar/configs/toy' / recipe}", "scale=tiny", "threads=1",
            "training.max_train_steps=6", "training.per_gpu_batch_size=8", "experiment.save_every=2",
            "experiment.log_every=1", f"experiment.output_dir={run}",
            f"dataset.params.train_shards_path_or_url={work / 'titok/shards/train'}",
            "model.vq_model.vit_enc_model_size=tiny", "model.vq_model.vit_dec_model_size=tiny",
            "model.vq_model.num_latent_tokens=4", f"model.vq_model.pretrained_tokenizer_weight={work / 'titok_vq'}",
            *extra]


def _generator(work: Path, run: Path, kind: str, *extra: str) -> list[str]:
    return [f"config={REPO / f'projects/titok_rar/configs/generator/tiny_{kind}.yaml'}", "scale=tiny", "threads=1",
            "progress=false", "training.max_train_steps=6", "experiment.save_every=2", "experiment.log_every=1",
            f"experiment.output_dir={run}", f"dataset.params.pretokenization={work / 'gen_tokens'}", *extra]


def prepare_work(work: Path, needs: Sequence[str]) -> Path:
    """Build the tiny fixtures the scripts need under `work` (each once; kept across calls)."""
    need = set(needs)
    if need & {"digits", "lab", "dmd2", "glide", "titok"} and not (work / "digits").is_dir():
        from shared.toy import prepare as digits_prepare
        digits_prepare.main({"scale": "tiny", "out_dir": str(work / "digits")})
    if "lab" in need and not (work / "lab").is_dir():
        from projects.sd_flux_lab import prepare
        prepare.main({"scale": "tiny", "digits_dir": str(work / "digits"), "out_dir": str(work / "lab")})
    if "flux2" in need and not (work / "flux2").is_dir():
        from projects.sd_flux_lab import flux
        flux.main({"scale": "tiny", "out_dir": str(work / "flux2")})
    if "dmd2" in need and not (work / "teacher").is_dir():
        from projects.dmd2 import prepare
        from projects.dmd2.tiny import save_tiny_edm
        prepare.main({"scale": "tiny", "kind": "edm", "images": str(work / "digits/train"),
                      "eval_images": str(work / "digits/test"), "out_dir": str(work / "edm")})
        save_tiny_edm(work / "teacher", seed=0)
    if "glide" in need and not (work / "glide_tok").is_dir():
        from projects.glide_finetune.tokenizer import main as glide_tokenizer
        glide_tokenizer({"scale": "tiny", "captions": str(work / "digits/train"), "out_dir": str(work / "glide_tok")})
    if "titok" in need and not (work / "titok").is_dir():
        from projects.titok_rar import prepare as titok_prepare
        from shared.toy import train_features
        titok_prepare.main({"scale": "tiny", "digits": str(work / "digits"), "out_dir": str(work / "titok")})
        train_features.main({"scale": "tiny", "data_dir": str(work / "digits"), "out_dir": str(work / "feat")})
    if "titok_stages" in need and not (work / "titok_s1").is_dir():
        import torch

        from projects.titok_rar import train_tokenizer
        from projects.titok_rar.vqgan import MaskGITVQGAN, VQGANConfig
        prepare_work(work, ["titok"])
        torch.manual_seed(0)  # an untrained VQGAN of the toy shape (vqgan_digits.yaml) is teacher enough here
        MaskGITVQGAN(VQGANConfig(channel_mult=(1, 1, 2), num_res_blocks=1, hidden_channels=16, z_channels=16,
                                 resolution=32, codebook_size=128, norm_groups=8)).save_pretrained(work / "titok_vq")
        run_in_process(SCRIPTS["titok_train_tokenizer_stage1"],  # stage 2's init_weight: one step of stage 1
                       _titok_stage(work, work / "titok_s1", "titok_stage1.yaml") + ["training.max_train_steps=1"])
    if "gen_tokens" in need and not (work / "gen_tokens").is_dir():
        import numpy as np

        from projects.titok_rar.generator_common import toy_caption
        from projects.titok_rar.token_data import write_tokens
        rng = np.random.default_rng(0)  # random tokens of a 16-code tokenizer: what is trained does not matter here
        labels = rng.integers(0, 80, 48)
        write_tokens(work / "gen_tokens", rng.integers(0, 16, (48, 2, 16)), labels,  # two crops per image
                     captions=[toy_caption(int(c)) for c in labels],
                     meta={"codebook_size": 16, "tokenizer": "none (random tokens)"})
    return work


def run_in_process(script: Script, argv: list[str]):
    """`python -m <module> argv...` in this interpreter, through the same parse as the command line."""
    import torch
    from accelerate.state import AcceleratorState

    from shared.config import parse_argv

    threads = torch.get_num_threads()
    module = importlib.import_module(script.module)
    # Global RNGs in a state no fresh interpreter has: a script whose weights depend on what the process drew before
    # main() (models built before anything seeds) then differs from the killed command-line run, as it would
    # between two real runs. (Fixed, so a failure reproduces; torch's own start seed is 67280421310721.)
    import numpy as np
    random.seed(987654321)
    np.random.seed(987654321)
    torch.manual_seed(987654321)
    try:
        return module.main(parse_argv(argv))
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)


class _Zygote:
    """A fresh interpreter that imports the scripts' modules once and forks one child per killed run, so each case
    costs its training steps, not an interpreter start and a diffusers import (~8 s on a quiet 2-core machine)."""

    def __init__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], cwd=REPO, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, request: dict, timeout: float) -> int:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        if not select.select([self.proc.stdout], [], [], timeout)[0]:  # the zygote answers when its child ended
            self.proc.kill()
            raise TimeoutError(f"{request['module']} did not end within {timeout} s (log: {request['log']})")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"kill_resume zygote died (rc {self.proc.poll()})")
        return int(json.loads(line)["rc"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)


_zygote: _Zygote | None = None


def run_killed(script: Script, argv: list[str], log: Path, *, kill_at: int = 0, mid_write: int = 0,
               timeout: float = 300) -> int:
    """Run the script as `python -m <module>` would, in a forked child of the zygote, SIGKILLed after optimizer
    step `kill_at` or during checkpoint write `mid_write`; returns the exit status (-9 when killed)."""
    global _zygote
    from shared.train.checkpoint import FAULT_ENV

    if _zygote is None or _zygote.proc.poll() is not None:
        _zygote = _Zygote()
        atexit.register(_zygote.close)
    env = {FAULT_ENV: f"die@{mid_write}" if mid_write else ""}
    return _zygote.run({"module": script.module, "argv": argv, "kill_at": kill_at, "env": env, "log": str(log)},
                       timeout)


def compared_files(script: Script, run_dir: Path) -> dict[str, Path]:
    if script.outputs:
        return {name: run_dir / name for name in script.outputs}
    from shared.train import Checkpointer

    latest = Checkpointer(run_dir / "checkpoints").latest()
    if latest is None:
        return {}
    return {f"{latest.path.name}/{p.name}": p for p in sorted(latest.path.glob("*.safetensors"))}


@dataclass
class Report:
    script: str
    kill: str
    returncode: int
    mismatches: list[str] = field(default_factory=list)
    compared: int = 0
    resumed_step: int = 0  # the checkpoint the resumed run started from (0: none; scripts without checkpoints)
    rows_compared: int = 0  # training rows of metrics.jsonl compared (0 for scripts without the Trainer's rows)
    killed_output: str = ""

    @property
    def identical(self) -> bool:
        return self.returncode == -signal.SIGKILL and self.compared > 0 and not self.mismatches

    def describe(self) -> str:
        return (f"{self.script} ({self.kill}): rc {self.returncode}, resumed from step {self.resumed_step}, "
                f"{self.compared} files and {self.rows_compared} metrics rows compared, "
                f"mismatches: {self.mismatches or 'none'}\n{self.killed_output[-2000:]}")


def compare(script: Script, reference: Path, resumed: Path) -> tuple[int, list[str]]:
    """(tensor files compared, 'file: tensor max|diff|' for every tensor that differs or is missing)."""
    import torch
    from safetensors.torch import load_file

    want, got = compared_files(script, reference), compared_files(script, resumed)
    bad = [f"{k}: missing after resume" for k in want if k not in got]
    bad += [f"{k}: not in the uninterrupted run" for k in got if k not in want]
    n = 0
    for k in want.keys() & got.keys():
        a, b = load_file(str(want[k])), load_file(str(got[k]))
        n += 1
        if a.keys() != b.keys():
            bad.append(f"{k}: tensor names differ")
            continue
        for t in a:
            if not torch.equal(a[t], b[t]):
                bad.append(f"{k}:{t} max|diff| {(a[t].double() - b[t].double()).abs().max().item():.3g}")
    return n, sorted(bad)


def _measured(key: str) -> bool:
    """Values of the machine, not of the training: wall times, speeds, memory."""
    return key == "time" or key.endswith(("per_sec", "_seconds", "_mb", "_gb")) or "mem" in key


def training_rows(run_dir: Path) -> dict[int, dict]:
    """metrics.jsonl's per-step training rows (those the Trainer writes: they carry the LR), measurements of the
    machine (times, speeds, memory) left out."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    return {r["step"]: {k: v for k, v in r.items() if not _measured(k)} for r in rows
            if any(k == "lr" or k.startswith("lr/") for k in r)}


def compare_metrics(reference: Path, resumed: Path) -> tuple[int, list[str]]:
    """(training rows compared, 'metrics step N: key a vs b' for every logged value that differs after the resume)."""
    want, got = training_rows(reference), training_rows(resumed)
    bad = [f"metrics step {s}: missing after resume" for s in sorted(want.keys() - got.keys())]
    for s in sorted(want.keys() & got.keys()):
        a, b = want[s], got[s]
        bad += [f"metrics step {s}: {k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(a.keys() | b.keys())
                if a.get(k) != b.get(k)]
    return len(want), bad


def kill_resume(script: Script, work: Path, tmp: Path, *, kill_at: int | None = None, mid_write: int = 0,
                seed: int | None = None, reference: Path | None = None) -> Report:
    """Uninterrupted run (unless `reference` is given), killed run + in-process resume, comparison."""
    if kill_at is None and not mid_write:
        seed = int(os.environ.get("KILL_RESUME_SEED", "0")) if seed is None else seed
        kill_at = random.Random(f"{seed}:{script.name}").randint(*script.kill_range)
    if reference is None:
        reference = tmp / f"{script.name}_reference"
        run_in_process(script, script.options(work, reference))
    run = tmp / f"{script.name}_killed"
    argv = script.options(work, run)
    log = tmp / f"{script.name}_killed.log"
    rc = run_killed(script, argv, log, kill_at=kill_at or 0, mid_write=mid_write)
    kill = f"mid-write of checkpoint {mid_write}" if mid_write else f"after optimizer step {kill_at}"
    report = Report(script.name, kill, rc, killed_output=log.read_text() if log.exists() else "")
    if rc != -signal.SIGKILL:
        return report
    from shared.train import Checkpointer

    latest = Checkpointer(run / "checkpoints").latest() if (run / "checkpoints").is_dir() else None
    report.resumed_step = latest.step if latest else 0
    run_in_process(script, argv)
    report.compared, report.mismatches = compare(script, reference, run)
    report.rows_compared, bad = compare_metrics(reference, run)  # every step saw the same batch, noise, dropout
    report.mismatches += bad
    return report


def _child(request: dict) -> None:
    """In the forked child: output to the log, the kill hook, then the module as __main__."""
    import runpy

    from torch.optim.optimizer import register_optimizer_step_post_hook

    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    for k, v in request["env"].items():
        if v:
            os.environ[k] = v
        else:
            os.environ.pop(k, None)
    kill_at, steps = int(request["kill_at"]), [0]

    def hook(optimizer, args, kwargs):
        steps[0] += 1
        if kill_at and steps[0] >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    register_optimizer_step_post_hook(hook)
    sys.argv = [request["module"], *request["argv"]]
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve() -> None:
    """Zygote side: import every script's module (no threads started), then fork one child per request line."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))
    for s in SCRIPTS.values():
        importlib.import_module(s.module)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, status = os.waitpid(pid, 0)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"rc": rc}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _serve()
