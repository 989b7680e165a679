"""Toy scale, importable by every project: what the CPU-sized reproductions use and nothing at paper scale does.

    dataset.py          coloured, captioned 32x32 digits from sklearn's `load_digits` (the toy data of every project)
    prepare.py          writes them as an image folder with metadata.jsonl (step script)
    digits_formats.py   the same folder as WebDataset shards and LMDB (step script)
    features.py         the digits CNN: the feature extractor of toy FD/KID and the classifier behind prompt accuracy
    train_features.py   trains it (step script)
    prompt_accuracy.py  does a sample show the digit and colour its caption asked for
    train_diffusion.py  the default target's small digits diffusion model (step script)
    sampler_compare.py  samplers x steps x guidance on it: FD, prompt accuracy, grids, plots (step script)
"""
