"""TA-TiTok's text guidance: captions -> (B, L, D) token states the TA-TiTok decoder attends to, from a frozen text
encoder, saved beside a trained tokenizer so that decoding later sees the same embedding.

    from projects.titok_rar.text_guidance import build_text_guidance, load_text_guidance
    text = build_text_guidance({"kind": "open_clip", "model_name": "ViT-L-14-336-quickgelu",
                                "pretrained": "downloads/titok_rar/open_clip_vit_l14_336/open_clip_pytorch_model.bin"})
    text = build_text_guidance({"kind": "toy", "width": 32, "layers": 1, "heads": 2, "context_length": 8})
    guidance = text(["a red handwritten three"])          # (1, text.context_length, text.width)
    text.save(folder); load_text_guidance(folder)          # text_encoder.json [+ text_encoder.safetensors (toy)]

What the original feeds TA-TiTok (utils/train_utils.py, train_one_epoch with model_type="tatitok"): open_clip
ViT-L-14-336 (the "openai" weights; QuickGELU, so from a file the architecture is "ViT-L-14-336-quickgelu"), all 12
text blocks and ln_final, 77 x 768 per caption, frozen (create_clip_model). maskgen.OpenCLIPText.decoder_guidance
computes exactly that. At tiny/toy scale, where no CLIP weights can be downloaded, the text encoder is
maskgen.ToyTextEncoder (word-level, the digits captions' vocabulary) with its seeded random weights, frozen as CLIP
is, its final token states (after ln_final) as the guidance; those weights are saved with the tokenizer.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

SPEC_FILE, WEIGHTS_FILE = "text_encoder.json", "text_encoder.safetensors"
KINDS = ("open_clip", "toy")


def spec_of(section: Mapping[str, Any]) -> dict:
    """The build arguments from a `model.text_encoder` section (schema.TextEncoder): only what the kind reads."""
    kind = section.get("kind", "toy")
    if kind == "open_clip":
        if not section.get("pretrained"):
            raise ValueError("model.text_encoder.pretrained: the open_clip weights file (download.py "
                             "item=open_clip_vit_l14_336); TA-TiTok's text guidance is CLIP ViT-L/14-336's")
        return {"kind": kind, "model_name": section.get("model_name", "ViT-L-14-336-quickgelu"),
                "pretrained": str(section["pretrained"])}
    if kind == "toy":
        return {"kind": kind, **{k: int(section[k]) for k in ("width", "layers", "heads", "context_length")
                                 if k in section}}
    raise ValueError(f"model.text_encoder.kind={kind!r}; allowed: {', '.join(KINDS)}")


class TextGuidance(nn.Module):
    """A frozen text encoder giving TA-TiTok's guidance; `context_length` x `width` per caption."""

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__()
        from projects.titok_rar.maskgen import build_text_encoder
        self.spec = dict(spec)
        self.encoder = build_text_encoder(self.spec)
        self.encoder.requires_grad_(False).eval()
        if self.spec["kind"] == "open_clip":
            self.context_length = int(self.encoder.positional_embedding.shape[0])
        else:
            self.context_length = int(self.encoder.context_length)
        self.width = int(self.encoder.width)

    def train(self, mode: bool = True) -> "TextGuidance":
        return super().train(False)  # frozen, as the original's CLIP (eval, requires_grad False)

    @torch.no_grad()
    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        captions = [str(c) for c in captions]
        if self.spec["kind"] == "open_clip":
            return self.encoder.decoder_guidance(captions)
        return self.encoder(captions)[0]  # the final (ln_final) token states

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SPEC_FILE).write_text(json.dumps(self.spec, indent=1) + "\n")
        if self.spec["kind"] == "toy":  # its random weights are part of the tokenizer; CLIP's are the named file
            save_file({k: v.detach().contiguous().cpu() for k, v in self.encoder.state_dict().items()},
                      str(folder / WEIGHTS_FILE))


def build_text_guidance(section: Mapping[str, Any]) -> TextGuidance:
    return TextGuidance(spec_of(section))


def load_text_guidance(folder: str | Path) -> TextGuidance:
    """The text guidance saved beside a TA-TiTok (train_tokenizer.py writes it into final/), loaded strictly."""
    from projects.titok_rar.hub import load_strict, read_state_dict
    folder = Path(folder)
    path = folder / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {SPEC_FILE} (a TA-TiTok from train_tokenizer.py model.type=tatitok "
                                "has its text encoder's spec there)")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    text = TextGuidance(spec)
    if spec.get("kind") == "toy":
        load_strict(text.encoder, read_state_dict(folder / WEIGHTS_FILE), str(folder / WEIGHTS_FILE))
    return text


def load_text_guidance_for(tok, folder: str | Path, key: str) -> TextGuidance:
    """`load_text_guidance(folder)` checked against the TA-TiTok `tok` whose decoder reads it; a failure is a
    ConfigError naming the option `key` that gave `folder` (evaluate.py, sample.py)."""
    from shared.config import ConfigError
    try:
        text = load_text_guidance(folder)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{key}={folder}: the TA-TiTok decodes with its text guidance, which does not load: "
                          f"{e}") from None
    want = (tok.config.text_context_length, tok.config.text_embed_dim)
    if (text.context_length, text.width) != want:
        raise ConfigError(f"{key}={folder}: its text encoder gives {text.context_length} x {text.width} states, the "
                          f"tokenizer's decoder reads {want[0]} x {want[1]} (text_context_length x text_embed_dim)")
    return text
