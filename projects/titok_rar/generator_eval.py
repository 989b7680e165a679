"""Evaluate generated samples through shared.evaluate, and add the sampler's cost beside the quality.

    python projects/titok_rar/generator_eval.py images=results/toy/titok_rar/samples/rar_annealed__default \
        reference=data/toy/digits/train extractor=digits:results/toy/digits_features/features.safetensors \
        metrics=[fd,prompt_accuracy] experiment=rar_order checkpoint=rar_annealed sampler=rar steps=256 out=...

Takes every option of shared/evaluate.py; the JSON it writes gets two more entries from the folder's samples.json:
`nfe` (network passes per image) and `images_per_sec` (generation + decoding, measured by sample.py).
Beside FD/FID it reports precision and recall (k=3, as ADM's evaluator does for these papers' tables) whenever the
reference can give feature samples: an image folder, or a statistics .npz that holds them. The ADM reference
batch imported at paper scale holds only mu/sigma, so there it stays FID/IS.
"""
from __future__ import annotations

import sys
from pathlib import Path

from shared import evaluate as shared_evaluate
from shared.config import cli, resolve, save_resolved
from shared.io import read_json, write_json


def reference_has_features(reference: str, k: int) -> bool:
    """Whether precision/recall can be measured against `reference` (a folder, or a .npz with > k features)."""
    ref = Path(reference)
    if ref.is_dir():
        return True
    if ref.suffix != ".npz" or not ref.is_file():
        return False
    import numpy as np

    with np.load(ref, allow_pickle=False) as z:
        return "features" in z.files and len(z["features"]) > k


def with_precision_recall(cfg) -> None:
    """Add `precision_recall` to the metrics beside fd/fid where the reference allows it."""
    names = list(cfg.metrics)
    if {"fd", "fid"} & set(names) and "precision_recall" not in names and reference_has_features(cfg.reference,
                                                                                                  cfg.pr_k):
        cfg.metrics = names + ["precision_recall"]


def main(cfg=None):
    cfg = resolve(shared_evaluate.Config, cfg, shared_evaluate.PRESETS)
    if not cfg.images or not cfg.experiment:
        raise ValueError("images= and experiment= are needed (see shared/evaluate.py)")
    with_precision_recall(cfg)
    info_path = Path(cfg.images) / "samples.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: missing; run projects/titok_rar/sample.py to completion first")
    info = read_json(info_path)
    result = shared_evaluate.evaluate(cfg)
    n = result["num_images_read"]
    for name in ("nfe", "images_per_sec"):
        if info.get(name) is not None:
            result["metrics"].append({"metric": name, "value": float(info[name]), "num_samples": n,
                                      "reference_id": "none", "extractor_id": "none"})
    result["sampling"] = info.get("sampling", {})
    out = shared_evaluate.out_path(cfg)
    write_json(out, result)
    save_resolved(cfg, out.parent, name=f"{out.stem}.config.yaml")
    print(", ".join(f"{e['metric']}={e['value']:.4g}" for e in result["metrics"]), "->", out)
    return result


if __name__ == "__main__":
    cli(main, shared_evaluate.Config, shared_evaluate.PRESETS, __doc__)
