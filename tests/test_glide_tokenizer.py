"""GLIDE tokenizer: padding with the end token (mask False), lower-casing, truncation, the empty prompt; a small
byte-level BPE for toy scale; the released ids when GPT-2's files are present."""
import json
import os
from pathlib import Path

import pytest

from projects.glide_finetune.tokenizer import END_TOKEN, GPT2_VOCAB_SIZE, load_tokenizer, main, train_tokenizer
from shared.toy.dataset import COLOUR_NAMES, caption

REPO = Path(__file__).resolve().parents[1]
REF = json.loads((REPO / ".." / "shared" / "reference" / "glide_checkpoints.json").resolve().read_text())["tokenizer"]
GPT2_DIR = Path(os.environ.get("GLIDE_GPT2_DIR", REPO / "downloads" / "glide" / "gpt2_tokenizer"))


@pytest.fixture(scope="module")
def toy_tok(tmp_path_factory):
    caps = [caption(d, c) for d in range(10) for c in COLOUR_NAMES]
    return train_tokenizer(caps, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=300)


def test_padding_mask_and_lowercasing(toy_tok):
    assert toy_tok.n_vocab == 300 and toy_tok.end_token == 299  # <|endoftext|> is the last id, as in GPT-2
    ids = toy_tok.encode("a red handwritten seven")
    assert toy_tok.encode("A RED Handwritten Seven") == ids
    assert toy_tok.decode(ids) == "a red handwritten seven"
    assert all(i < toy_tok.end_token for i in ids)
    tokens, mask = toy_tok.padded_tokens_and_mask(ids, 16)
    assert len(tokens) == 16 and tokens[:len(ids)] == ids and set(tokens[len(ids):]) == {toy_tok.end_token}
    assert mask == [True] * len(ids) + [False] * (16 - len(ids))
    short, short_mask = toy_tok.padded_tokens_and_mask(ids, 3)  # truncated to the context
    assert short == ids[:3] and short_mask == [True] * 3
    tokens, mask = toy_tok.batch(["a red handwritten seven", ""], 16)
    assert tokens.shape == mask.shape == (2, 16) and tokens.dtype.is_floating_point is False
    assert tokens[1].eq(toy_tok.end_token).all() and not mask[1].any()  # the unconditional row
    assert mask[0].sum() == len(ids)


def test_tokenizer_step_and_bad_folder(tmp_path, digits_tiny):
    tok = main({"scale": "tiny", "captions": str(digits_tiny / "train"), "out_dir": str(tmp_path / "tok")})
    assert tok.n_vocab == 300 and (tmp_path / "tok" / "vocab.json").is_file()
    assert (tmp_path / "tok" / "merges.txt").is_file() and (tmp_path / "tok" / "tokenizer_config.yaml").is_file()
    with pytest.raises(FileNotFoundError, match="needs a BPE vocabulary"):
        load_tokenizer(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "vocab.json").write_text(json.dumps({"a": 0}))
    (tmp_path / "bad" / "merges.txt").write_text("")
    with pytest.raises(ValueError, match=f"has no {END_TOKEN}"):
        load_tokenizer(tmp_path / "bad")


@pytest.mark.skipif(not GPT2_DIR.is_dir(), reason=f"GPT-2 vocab/merges not at {GPT2_DIR} (download rule "
                                                   f"glide_download item=gpt2_tokenizer; or set GLIDE_GPT2_DIR)")
def test_released_prompt_ids():
    tok = load_tokenizer(GPT2_DIR)
    ex = REF["example"]
    assert tok.n_vocab == REF["n_vocab"] == GPT2_VOCAB_SIZE and tok.end_token == REF["end_token(pad)"]
    assert tok.encode(ex["prompt"]) == ex["ids"]
    tokens, mask = tok.padded_tokens_and_mask(tok.encode(ex["prompt"]), 128)
    assert tokens[:20] == ex["padded_128_first20"] and sum(mask) == len(ex["ids"])
