"""Caption a folder of images with BLIP, extract keywords, and sort the images into keyword folders.

    caption=true    write `<stem>.cap` next to each image (shared.data reads .cap files as captions)
    organize=true   copy (or `move=true`) each image, with its caption file, to `<output_dir>/<keyword>/`, where
                    keyword = the image's caption keyword used by the most images overall (at least `min_count`
                    of them; ties alphabetical); images with none go to `<output_dir>/_uncategorized/` (a `_`
                    folder adds nothing to shared.data's folder prompts)
Keywords need no model: lower-cased words of a caption minus an English stopword list (and BLIP's usual filler
words), plural "-s" folded into the singular. `<output_dir>/keywords.json` lists captions, keywords, counts and
where each image went. Images are read through the shared decoder (16-bit, palette and alpha images decode
correctly); unreadable ones (truncated, empty, not an image, dangling link) are skipped, counted per reason, left
where they are, and listed under `skipped` / `skip_reasons` in keywords.json. BLIP loads from a LOCAL folder
(BlipForConditionalGeneration + BlipProcessor, e.g. a copy of Salesforce/blip-image-captioning-base);
`model=random` builds a tiny random one (tests, smoke).

    python projects/sd_flux_lab/categorize.py input_dir=photos model=downloads/blip caption=true organize=true
    python -m projects.sd_flux_lab.categorize scale=tiny input_dir=photos output_dir=sorted min_count=2
"""
from __future__ import annotations

import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from shared.data import BadSample, SkipCounter, decode_image, probe_image, read_file

from shared.config import ConfigError, cli, resolve, save_resolved
from shared.io import write_json

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
UNCATEGORIZED = "_uncategorized"

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves
one two three several many lot lots very
image picture photo photograph shot view close closeup front top side background foreground
there's it's arafed araffe arafly
""".split())
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _singular(word: str) -> str:
    """Fold a plain plural ('dogs', 'boxes', 'puppies') into its singular; leave 'glass', 'bus', 'this'."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def extract_keywords(caption: str, min_length: int = 3) -> list[str]:
    """Content words of a caption, in order of first appearance, without repeats."""
    out: list[str] = []
    for word in _WORD.findall(caption.lower()):
        if word in STOPWORDS or len(word) < min_length or "'" in word:
            continue
        word = _singular(word)
        if word not in STOPWORDS and word not in out:
            out.append(word)
    return out


def assign_folders(keywords: dict[str, list[str]], min_count: int) -> tuple[dict[str, str], Counter]:
    """name -> folder: the image's keyword that most images share (>= min_count), else UNCATEGORIZED."""
    counts = Counter(k for words in keywords.values() for k in set(words))
    folders = {}
    for name, words in keywords.items():
        ok = [w for w in words if counts[w] >= min_count]
        folders[name] = min(ok, key=lambda w: (-counts[w], w)) if ok else UNCATEGORIZED
    return folders, counts


@dataclass
class Config:
    scale: str = "paper"
    input_dir: str = "data/paper/uncaptioned"
    model: str = "downloads/blip"  # local BLIP folder; "random" = a tiny random BLIP (tests)
    caption: bool = True  # write <stem>.cap files next to the images
    overwrite_captions: bool = False  # re-caption images that already have a .cap file
    organize: bool = False
    output_dir: str = "results/paper/sd_flux_lab/categorized"
    min_count: int = 2
    move: bool = False  # organize by moving instead of copying
    prompt: str = ""  # conditional captioning prefix, e.g. "a photography of"
    max_new_tokens: int = 30
    num_beams: int = 3
    batch_size: int = 8
    device: str = "auto"


PRESETS = {
    "tiny": {"model": "random", "max_new_tokens": 8, "num_beams": 1, "batch_size": 4,
             "output_dir": "results/tiny/sd_flux_lab/categorized"},
    "toy": {"model": "random", "output_dir": "results/toy/sd_flux_lab/categorized"},
    "paper": {},
}

TINY_WORDS = ("a dog cat red blue green house tree car on the in of with sitting standing small large white black "
              "two man woman field road table grass sky water next to")


def tiny_blip(seed: int = 0):
    """(model, processor): a random BLIP captioner with a real WordPiece vocabulary (seconds on CPU)."""
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    words = list(dict.fromkeys(TINY_WORDS.split()))
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *words])}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]")
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"tiny BLIP tokenizer has {len(tokenizer)} tokens, expected {len(vocab)}")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "encoder_hidden_size": 32,
                     "bos_token_id": vocab["[DEC]"], "pad_token_id": vocab["[PAD]"], "sep_token_id": vocab["[SEP]"],
                     "eos_token_id": vocab["[SEP]"]},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=32)
    return BlipForConditionalGeneration(config).eval(), processor


def load_blip(path: str):
    from transformers import BlipForConditionalGeneration, BlipProcessor

    if path == "random":
        return tiny_blip()
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"model={path}: no config.json (expected a local BLIP captioning folder)")
    return (BlipForConditionalGeneration.from_pretrained(path, local_files_only=True).eval(),
            BlipProcessor.from_pretrained(path, local_files_only=True))


def caption_images(paths: list[Path], model, processor, cfg, skips: SkipCounter | None = None) -> dict[Path, str]:
    """{path: caption} for the images that decode; the others are recorded in `skips` (reason, file) and left
    out, so one bad file does not stop a folder of thousands."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    model.to(device)
    skips = skips if skips is not None else SkipCounter(log_first=0)
    out: dict[Path, str] = {}
    for i in tqdm(range(0, len(paths), cfg.batch_size), desc="captioning"):
        good, images = [], []
        for p in paths[i:i + cfg.batch_size]:
            skips.add_seen()
            try:
                images.append(decode_image(read_file(p), str(p)))
                good.append(p)
            except BadSample as e:
                skips.record(e.reason, p.name, e.detail)
        if not images:
            continue
        kw = {"text": [cfg.prompt] * len(images)} if cfg.prompt else {}
        inputs = processor(images=images, return_tensors="pt", **kw).to(device)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams)
        out.update(zip(good, (" ".join(t.split()) for t in processor.batch_decode(ids, skip_special_tokens=True))))
    return out


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    src = Path(cfg.input_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"input_dir={src}: not a folder")
    if cfg.min_count < 1:
        raise ConfigError(f"min_count={cfg.min_count}: must be >= 1")
    paths = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    if not paths:
        raise ValueError(f"input_dir={src}: no images ({', '.join(IMAGE_EXTS)})")

    from shared.data import read_caption_file

    captions: dict[str, str] = {}
    skips = SkipCounter(log_first=0)
    skipped: dict[str, str] = {}
    todo = [p for p in paths if cfg.overwrite_captions or not p.with_suffix(".cap").is_file()
            or not read_caption_file(p.with_suffix(".cap"))]
    for p in paths:
        if p not in todo:
            try:  # already captioned: a header check, so a file that went bad since is not sorted as good
                probe_image(p)
            except BadSample as e:
                skips.add_seen()
                skips.record(e.reason, p.name, e.detail)
                continue
            skips.add_seen()
            captions[p.name] = read_caption_file(p.with_suffix(".cap"))
    new: dict[Path, str] = {}
    if todo:
        model, processor = load_blip(cfg.model)
        new = caption_images(todo, model, processor, cfg, skips)
        for p, text in new.items():
            captions[p.name] = text
            if cfg.caption:
                p.with_suffix(".cap").write_text(text + "\n", encoding="utf-8")
    for reason, names in skips.files.items():
        skipped.update({name: reason for name in names})
    paths = [p for p in paths if p.name in captions]  # the skipped ones stay where they are
    keywords = {name: extract_keywords(captions[name]) for name in sorted(captions)}
    folders, counts = assign_folders(keywords, cfg.min_count)

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out, name="categorize.yaml")
    if cfg.organize:
        for p in paths:
            dest = out / folders[p.name]
            dest.mkdir(parents=True, exist_ok=True)
            op = shutil.move if cfg.move else shutil.copy2
            cap = p.with_suffix(".cap")
            if cap.is_file():
                op(str(cap), str(dest / cap.name))
            op(str(p), str(dest / p.name))
    summary = {"input_dir": str(src), "organized": cfg.organize, "min_count": cfg.min_count,
               "keyword_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
               "images": {name: {"caption": captions[name], "keywords": keywords[name], "folder": folders[name]}
                          for name in sorted(captions)},
               "skipped": dict(sorted(skipped.items())), "skip_reasons": dict(sorted(skips.counts.items()))}
    write_json(out / "keywords.json", summary)
    groups = Counter(folders.values())
    print(f"{len(paths)} images, {len(new)} captioned; folders: "
          + ", ".join(f"{k}={v}" for k, v in sorted(groups.items())))
    if skips.bad:
        print(f"skipped: {skips.summary()}\n{skips.listing()}")
    return summary


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__, positional=["input_dir"])  # as the original: categorize.py DIR --organize
