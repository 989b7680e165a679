"""GLIDE's text tokenizer: GPT-2 byte-level BPE, lower-cased, padded to text_ctx with the end token (mask False).

    tok = load_tokenizer("downloads/glide/gpt2_tokenizer") # vocab.json + merges.txt (or GLIDE's encoder.json(.gz) +
    tokens, mask = tok.padded_tokens_and_mask(tok.encode("An oil painting of a corgi"), 128)   #  vocab.bpe(.gz))
    tokens, mask = tok.batch(["a red handwritten seven", ""], 128)   # LongTensor / BoolTensor (B, 128)

The released models use GPT-2's 50257-token vocabulary; the end token 50256 (<|endoftext|>) pads, and the empty
prompt (all padding, mask all False) is the unconditional input of classifier-free guidance. Encoding goes
through transformers' GPT2TokenizerFast built from the vocab/merges files (the download rule fetches them).

At tiny/toy scale `train_tokenizer(captions, out_dir)` trains a small byte-level BPE with `tokenizers` on the
captions and writes the same two files (end token = the last id), so both scales load the same way.

    python projects/glide_finetune/tokenizer.py captions=data/toy/digits/train out_dir=results/toy/glide/tokenizer
"""
from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

END_TOKEN = "<|endoftext|>"
GPT2_VOCAB_SIZE = 50257
VOCAB_NAMES = ("vocab.json", "encoder.json", "encoder.json.gz")  # HF GPT-2 name, GLIDE's names
MERGES_NAMES = ("merges.txt", "vocab.bpe", "vocab.bpe.gz")


def _find(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _read_text(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode("utf-8") if path.suffix == ".gz" else path.read_text("utf-8")


class GlideTokenizer:
    def __init__(self, folder: str | Path):
        from transformers import GPT2TokenizerFast

        folder = Path(folder)
        vocab_file, merges_file = _find(folder, VOCAB_NAMES), _find(folder, MERGES_NAMES)
        if vocab_file is None or merges_file is None:
            raise FileNotFoundError(f"{folder}: needs a BPE vocabulary ({' or '.join(VOCAB_NAMES)}) and merges "
                                    f"({' or '.join(MERGES_NAMES)}); fetch GPT-2's with the download step "
                                    f"(item=gpt2_tokenizer) or train a small one with tokenizer.py")
        try:
            vocab = json.loads(_read_text(vocab_file))
        except json.JSONDecodeError as e:
            raise ValueError(f"{vocab_file}: not a JSON token -> id mapping ({e})") from None
        merges = [line for line in _read_text(merges_file).splitlines() if line and not line.startswith("#version")]
        if END_TOKEN not in vocab:
            raise ValueError(f"{vocab_file}: has no {END_TOKEN} token (GLIDE pads with it)")
        # vocab=/merges= as data: transformers 5 builds a 3-token vocabulary from vocab_file=/merges_file= silently
        self.hf = GPT2TokenizerFast(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges])
        self.folder = folder
        self.n_vocab = len(vocab)
        self.end_token = vocab[END_TOKEN]
        if len(self.hf) != self.n_vocab:
            raise ValueError(f"{folder}: the tokenizer has {len(self.hf)} tokens, the vocabulary file {self.n_vocab}")

    def __repr__(self) -> str:
        return f"GlideTokenizer({self.folder}, n_vocab={self.n_vocab}, end_token={self.end_token})"

    @property
    def identity(self) -> dict:
        """What identifies this tokenizer (for text-embedding cache keys)."""
        return {"tokenizer": str(self.folder.resolve()), "n_vocab": self.n_vocab}

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text.lower(), add_special_tokens=False)  # GLIDE's BPE lower-cases

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([i for i in ids if i != self.end_token])

    def padded_tokens_and_mask(self, tokens: Sequence[int], text_ctx: int) -> tuple[list[int], list[bool]]:
        tokens = list(tokens)[:text_ctx]
        pad = text_ctx - len(tokens)
        return tokens + [self.end_token] * pad, [True] * len(tokens) + [False] * pad

    def batch(self, texts: Sequence[str], text_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, text_ctx) long and mask (B, text_ctx) bool; "" gives the unconditional (all-padding) row."""
        rows = [self.padded_tokens_and_mask(self.encode(t) if t else [], text_ctx) for t in texts]
        return (torch.tensor([r[0] for r in rows], dtype=torch.long),
                torch.tensor([r[1] for r in rows], dtype=torch.bool))


def load_tokenizer(folder: str | Path) -> GlideTokenizer:
    return GlideTokenizer(folder)


def train_tokenizer(captions: Iterable[str], out_dir: str | Path, vocab_size: int = 320) -> GlideTokenizer:
    """A byte-level BPE (256 byte symbols + merges learnt from the lower-cased captions + <|endoftext|> as the
    last id, like GPT-2's), written as vocab.json + merges.txt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from shared.io import atomic_dir

    texts = [c.lower() for c in captions if c]
    if not texts:
        raise ValueError("train_tokenizer: no captions to learn merges from")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    out = Path(out_dir)
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory() as scratch:
        tok.model.save(scratch)
        vocab = json.loads((Path(scratch) / "vocab.json").read_text())
        vocab[END_TOKEN] = len(vocab)
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (tmp / "merges.txt").write_text((Path(scratch) / "merges.txt").read_text())
    return GlideTokenizer(out)


# ---- step script: train the toy tokenizer on a folder of captions -----------------------------------------------
@dataclass
class Config:
    scale: str = "toy"
    captions: str = field(default="data/toy/digits/train", metadata={"help": "folder of <id>.txt caption files"})
    out_dir: str = "results/toy/glide/tokenizer"
    vocab_size: int = 320


PRESETS = {"tiny": {"vocab_size": 300}, "toy": {}, "paper": {}}


def main(cfg=None):
    from shared.config import resolve, save_resolved

    cfg = resolve(Config, cfg, PRESETS)
    folder = Path(cfg.captions)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"captions={folder}: no .txt caption files there")
    tok = train_tokenizer((f.read_text().strip() for f in files), cfg.out_dir, cfg.vocab_size)
    save_resolved(cfg, cfg.out_dir, "tokenizer_config.yaml")
    print(f"{tok}: trained on {len(files)} captions")
    return tok


if __name__ == "__main__":
    from shared.config import cli

    cli(main, Config, PRESETS, __doc__)
