"""Win rate of one set of samples over another drawn from the same prompts and seeds (a fine-tune vs its base).

Images are paired by file name (sample.py names sample i <i:06d>.png for prompt i and seed seed+i, so two
folders sampled with the same prompts file and seed pair up). Each image is scored against its prompt, by the
digits CNN at toy scale (1 if it shows the digit and colour asked for, else 0) or by CLIP score at paper scale
(cosine of CLIP image and caption embeddings, a local transformers CLIP folder). win_rate = P(a > b) +
P(a = b) / 2 over the pairs; also mean scores of both. Written in shared.evaluate's JSON format, so
shared/tables.py can table it.

    python projects/glide_finetune/winrate.py a=results/toy/glide/samples/finetune__finetune__glide_27_g3.0 \
        b=results/toy/glide/samples/base__finetune__glide_27_g3.0 \
        scorer=digits:results/toy/digits_features/features.safetensors \
        out=results/toy/glide/eval/winrate_finetune.json
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.config import cli, option, resolve
from shared.io import write_json


@dataclass
class Config:
    scale: str = "toy"
    a: str = option("", help="sample folder whose win rate is reported (e.g. the fine-tune)")
    b: str = option("", help="sample folder it is compared with (e.g. the base), same prompts and seeds")
    scorer: str = option("digits:results/toy/digits_features/features.safetensors",
                         help="digits:<weights> (prompt correctness) | clip:<transformers CLIP folder>")
    opponent: str = option("", help="what b is, the same for every prompt set (e.g. base__glide_27_g3.0): the "
                           "column's reference, so win rates on several prompt sets share a table (default: b's "
                           "folder name)")
    experiment: str = ""
    out: str = ""
    batch_size: int = 64
    device: str = "cpu"


PRESETS = {"tiny": {}, "toy": {}, "paper": {"scorer": "clip:downloads/glide/clip_vit_b16", "device": "cuda"}}


def paired(a: Path, b: Path) -> list[tuple[Path, Path, str]]:
    pairs = []
    for pa in sorted(a.glob("*.png")):
        pb = b / pa.name
        cap_a, cap_b = pa.with_suffix(".txt"), pb.with_suffix(".txt")
        if not pb.is_file() or not cap_a.is_file():
            continue
        prompt = cap_a.read_text().strip()
        if cap_b.is_file() and cap_b.read_text().strip() != prompt:
            raise ValueError(f"{pa.name}: prompt {prompt!r} in {a} but {cap_b.read_text().strip()!r} in {b}; the "
                             f"folders were not sampled from the same prompts")
        pairs.append((pa, pb, prompt))
    if not pairs:
        raise ValueError(f"{a} and {b} share no <name>.png with a caption file")
    return pairs


def scores(paths: list[Path], prompts: list[str], scorer: str, batch_size: int, device: str) -> tuple[np.ndarray, str]:
    from shared.metrics.images import read_image

    kind, _, path = scorer.partition(":")
    if kind == "digits":
        from shared.toy import features as digits_features
        from shared.toy.dataset import parse_caption

        net = digits_features.load(path, device)
        out = []
        for i in range(0, len(paths), batch_size):
            x = torch.from_numpy(np.stack([read_image(p) for p in paths[i:i + batch_size]])).permute(0, 3, 1, 2)
            with torch.no_grad():
                d, c = net(x.float().to(device))
            for j, p in enumerate(prompts[i:i + batch_size]):
                asked = parse_caption(p)
                if asked is None:
                    raise ValueError(f"prompt {p!r} names no digit and colour; the digits scorer cannot judge it")
                out.append(float(d[j].argmax().item() == asked[0] and c[j].argmax().item() == asked[1]))
        return np.array(out), net.extractor_id
    if kind == "clip":
        from shared.metrics.clip_score import ClipScorer, model_id

        clip = ClipScorer(path, device=device)
        out = [clip.cosine([read_image(p) for p in paths[i:i + batch_size]], prompts[i:i + batch_size])
               for i in range(0, len(paths), batch_size)]
        return np.concatenate(out), f"clip:{model_id(path)}"
    raise ValueError(f"scorer={scorer!r}: expected digits:<weights> or clip:<folder>")


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if not cfg.a or not cfg.b:
        raise ValueError("give a=<sample folder> and b=<sample folder>")
    pairs = paired(Path(cfg.a), Path(cfg.b))
    prompts = [p for _, _, p in pairs]
    sa, extractor = scores([p for p, _, _ in pairs], prompts, cfg.scorer, cfg.batch_size, cfg.device)
    sb, _ = scores([p for _, p, _ in pairs], prompts, cfg.scorer, cfg.batch_size, cfg.device)
    win = float(np.mean((sa > sb) + 0.5 * (sa == sb)))
    # a win rate is paired by construction: what must match across a table's rows is the opponent, not its prompts
    ref = f"paired:{cfg.opponent or Path(cfg.b).name}"
    entry = {"reference_id": ref, "extractor_id": extractor, "num_samples": len(pairs)}
    result = {"experiment": cfg.experiment or f"{Path(cfg.a).name} vs {Path(cfg.b).name}", "checkpoint": "none",
              "sampler": "none", "steps": 0, "scale": cfg.scale, "images": cfg.a, "reference": cfg.b,
              "resolution": None, "num_images_found": len(pairs), "num_images_read": len(pairs), "num_unreadable": 0,
              "unreadable": [],
              "metrics": [{"metric": "win_rate", "value": win, **entry},
                          {"metric": "score_a", "value": float(sa.mean()), **entry},
                          {"metric": "score_b", "value": float(sb.mean()), **entry}]}
    if cfg.out:
        write_json(cfg.out, result)
    print(f"{result['experiment']}: win rate {win:.3f} over {len(pairs)} pairs (scores {sa.mean():.3f} vs "
          f"{sb.mean():.3f})" + (f" -> {cfg.out}" if cfg.out else ""))
    return result


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
