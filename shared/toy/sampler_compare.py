"""Compare samplers x step counts on a trained class-conditional pixel diffusion model.

The model folder is a diffusers DDPMPipeline folder: unet/ (a UNet2DModel with class embeddings), scheduler/
(its training noise schedule) and labels.json (the label encoding; shared/toy/train_diffusion.py writes all
three). Every (sampler, steps) pair starts from the same noise and generator seed.

Outputs in out_dir:
    grid.png      rows = samplers, columns = step counts; each cell shows `grid_per_cell` samples (digit i in
                  colour i); the `reference` row (many-step DDPM) below, in the first column
    results.md    time per image, model evaluations, Frechet distance (digits features vs the reference
    results.csv   split) and label accuracy from the digits classifier, one row per sampler x steps (+ reference;
                  results.md also has the guidance sweep; results.html = the table as a page, for the report).
                  FD carries a 95% bootstrap interval over the row's samples (`bootstrap` resamples,
                  shared/metrics/bootstrap.py), and `fd_minus_reference` the row's FD minus the reference row's
                  with the interval of that difference: every row samples the same labels from the same noise
                  seeds, so the two rows are resampled in pairs (an interval that excludes 0 = a real gap).
    fd_vs_nfe.png, accuracy_vs_nfe.png            quality against NFE per sampler (+ .csv, shared/plots.py)
    fd_vs_guidance.png, accuracy_vs_guidance.png  with guidance_sweep: quality against the guidance scale
    eval/<sampler>_<steps>.json   each row in shared/evaluate.py's format (+ NFE, s/image, parameters, training
                                  steps under `info`), for shared/tables.py's leaderboard

A model that works at a lower resolution than the data (labels.json `image_size`) has its samples upsampled
(bicubic) to the data's size before scoring and in the grid.
    images/<sampler>_<steps>/*.png + .txt captions   (only with save_images=true; shared/evaluate.py reads them)

    python -m shared.toy.sampler_compare model_dir=results/toy/digits_diffusion/model steps=[5,10,25]
    python shared/toy/sampler_compare.py samplers=[ddpm,dpm++] prompts='[a red handwritten seven]' guidance_scale=2
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image, ImageDraw, ImageFont

from shared import plots
from shared.config import cli, option, resolve, save_resolved
from shared.toy import features as digits_features
from shared.toy.dataset import caption, load_arrays, parse_caption
from shared.io import atomic_path, read_json, write_json, write_text
from shared.metrics import frechet_from_features
from shared.metrics.bootstrap import frechet_bootstrap, resample_indices, summary
from shared.metrics.images import image_files, set_id
from shared.toy.prompt_accuracy import PromptAccuracy
from shared.samplers.registry import get_preset
from shared.samplers.sampling import sample
from shared.tables import markdown_to_html

LABEL_WIDTH = 80  # px left of the grid for sampler names
HEADER_HEIGHT = 16  # px above the grid for step counts
PAD = 2  # px between cells
COLUMNS = ("sampler", "steps", "nfe", "images", "seconds_per_image", "fd", "fd_ci_low", "fd_ci_high",
           "fd_minus_reference", "fd_minus_reference_ci_low", "fd_minus_reference_ci_high", "digit_accuracy",
           "colour_accuracy", "label_accuracy")


@dataclass
class Config:
    model_dir: str = "results/toy/digits_diffusion/model"
    out_dir: str = "results/toy/sampler_compare"
    scale: str = "toy"
    samplers: list[str] = field(default_factory=lambda: ["ddim", "euler", "dpm++", "heun", "unipc"])
    steps: list[int] = field(default_factory=lambda: [5, 10, 25])
    reference: str = field(default="", metadata={"help": "sampler:steps of a many-step baseline row, e.g. ddpm:250"})
    guidance_sweep: list[float] = field(default_factory=list)  # guidance scales for quality_vs_guidance.png
    guidance_sampler: str = "dpm++:25"  # sampler:steps of the guidance sweep
    labels: list[int] = field(default_factory=list)  # class labels; empty (and no prompts) = every class
    prompts: list[str] = field(default_factory=list)  # or captions like "a red handwritten seven"
    per_label: int = 1  # samples per label (the metrics use them all)
    guidance_scale: float = 1.0  # > 1: classifier-free guidance against the null label
    grid_per_cell: int = 8
    features: str = "results/toy/digits_features/features.safetensors"
    reference_dir: str = "data/toy/digits/test"
    batch_size: int = 160
    save_images: bool = False
    seed: int = 0
    bootstrap: int = option(200, help="bootstrap resamples for the FD intervals; 0 = none", min=0)
    threads: int = 0  # 0 = torch default
    # The same x0 clamp for every sampler. The model's DDPM/DDIM scheduler configs clip x0 to the data range at
    # each step (clip_sample=True, what train_diffusion saves); diffusers' Euler, Heun, DPM++ and UniPC have no such
    # option, so without this the table compares clamped DDPM with unclamped ODE solvers.
    clip_denoised: str = option("schedule", help="'schedule' = the scheduler config's clip_sample_range when it "
                                "sets clip_sample, applied to every sampler; 'none'; or a number (clamp to [-c, c])")


PRESETS = {
    "tiny": {"samplers": ["ddim", "euler"], "steps": [2, 3], "labels": [3, 17, 42, 77], "grid_per_cell": 2,
             "guidance_sweep": [1.0, 2.0], "guidance_sampler": "ddim:2"},
    # toy: ddpm and guidance 2 alongside the ODE samplers: at the toy training budget the ODE samplers stay noisy at
    # few steps, and the table should show that next to what works
    # toy: the question is whether the fast ODE samplers at 10-25 steps get close to many-step ancestral DDPM
    "toy": {"samplers": ["ddpm", "ddim", "euler", "dpm++", "heun", "unipc"], "reference": "ddpm:250",
            "guidance_scale": 2.0, "guidance_sweep": [1.0, 1.5, 2.0, 3.0, 4.0]},
    "paper": {"per_label": 10, "steps": [5, 10, 25, 50, 100],
              "samplers": ["ddpm", "ddim", "plms", "euler", "euler_a", "dpm++", "heun", "unipc"]},
}


def resolve_labels(cfg, encoding: dict) -> list[int]:
    """Class labels to sample, from `prompts`, `labels`, or every class of the label encoding."""
    n_colours = len(encoding["colours"])
    if cfg.prompts and cfg.labels:
        raise ValueError("give labels or prompts, not both")
    if cfg.prompts:
        out = []
        for prompt in cfg.prompts:
            asked = parse_caption(prompt)
            if asked is None:
                raise ValueError(f"prompt {prompt!r} names no digit and colour (e.g. 'a red handwritten seven')")
            out.append(asked[0] * n_colours + asked[1])
        return out
    num_classes = encoding["num_digits"] * n_colours
    for label in cfg.labels:
        if not 0 <= label < num_classes:
            raise ValueError(f"label {label} out of range 0..{num_classes - 1}")
    return list(cfg.labels) or list(range(num_classes))


def to_uint8(x: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Model space (-1..1) -> uint8 (B, C, H, W), resized (bicubic) to `size` px when the model works smaller."""
    if size and x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def parse_reference(text: str) -> tuple[str, int] | None:
    """'ddpm:250' -> ("ddpm", 250); '' -> None."""
    if not text:
        return None
    name, sep, steps = text.partition(":")
    if not sep or not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"reference={text!r}: expected sampler:steps, e.g. ddpm:250")
    get_preset(name)
    return name, int(steps)


def grid_samples(labels: list[int], n_colours: int, count: int) -> list[int]:
    """Indices of the samples a grid cell shows: digit i in colour i (0 red, 1 green, 2 blue, ...) where those
    labels were sampled, so one row shows several digits and colours; else the first samples."""
    wanted = [(i % 10) * n_colours + i % n_colours for i in range(count)]
    first = {}
    for i, label in enumerate(labels):
        first.setdefault(label, i)
    picked = [first[w] for w in wanted if w in first]
    rest = [i for i in range(len(labels)) if i not in picked]
    return (picked + rest)[:count]


def grid_size(rows: int, cols: int, per_cell: int, image_size: int) -> tuple[int, int]:
    """(width, height) in pixels of the comparison grid."""
    return (LABEL_WIDTH + cols * per_cell * image_size + (cols + 1) * PAD,
            HEADER_HEIGHT + rows * image_size + (rows + 1) * PAD)


def draw_grid(cells: dict[tuple[str, int], torch.Tensor], samplers: list[str], steps: list[int],
              extra_rows: list[tuple[str, torch.Tensor]] = ()) -> Image.Image:
    """Rows = samplers, columns = step counts; `extra_rows` (label, images) go below, in the first column."""
    first = next(iter(cells.values()))
    per_cell, size = first.shape[0], first.shape[-1]
    width, height = grid_size(len(samplers) + len(extra_rows), len(steps), per_cell, size)
    canvas = Image.new("RGB", (width, height), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=11)
    for c, n in enumerate(steps):
        draw.text((LABEL_WIDTH + PAD + c * (per_cell * size + PAD), 2), f"{n} steps", font=font, fill="white")
    rows = [(name, [(c, cells[(name, n)]) for c, n in enumerate(steps)]) for name in samplers]
    rows += [(label, [(0, images)]) for label, images in extra_rows]
    for r, (label, strips) in enumerate(rows):
        y = HEADER_HEIGHT + PAD + r * (size + PAD)
        draw.text((2, y + size // 2 - 6), label, font=font, fill="white")
        for c, images in strips:
            strip = images.permute(2, 0, 3, 1).reshape(size, images.shape[0] * size, -1).numpy()
            canvas.paste(Image.fromarray(strip), (LABEL_WIDTH + PAD + c * (per_cell * size + PAD), y))
    return canvas


def markdown_table(rows: list[dict], title: str, columns: tuple[str, ...] = COLUMNS) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else ("–" if v is None else str(v))

    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def add_reference_difference(rows: list[dict], boot: dict, reference: tuple[str, int], guidance: float) -> None:
    """Each row's FD minus the reference row's, with the 95% interval of that difference over paired resamples."""
    ref_row = next(r for r in rows if (r["sampler"], r["steps"]) == reference)
    ref_values = boot.get((*reference, guidance))
    for r in rows:
        values = boot.get((r["sampler"], r["steps"], guidance))
        if r is ref_row or values is None or ref_values is None:
            continue
        r["fd_minus_reference"] = r["fd"] - ref_row["fd"]
        r["fd_minus_reference_ci_low"], r["fd_minus_reference_ci_high"] = \
            summary(r["fd_minus_reference"], values - ref_values, 0)["ci"]


def write_plots(rows: list[dict], guidance_rows: list[dict], reference: tuple[str, int] | None, out: Path,
                caption: str) -> list[Path]:
    """quality_vs_nfe.png (FD and prompt accuracy against NFE, one line per sampler, the many-step reference as a
    dashed line) and, with a guidance sweep, quality_vs_guidance.png; each with its CSV (shared/plots.py)."""
    written = []
    swept = [r for r in rows if reference is None or (r["sampler"], r["steps"]) != reference]
    ref_row = next((r for r in rows if reference is not None and (r["sampler"], r["steps"]) == reference), None)
    for metric, label, better, stem in (("fd", "FD to the test split (digits features)", "lower", "fd_vs_nfe"),
                                        ("label_accuracy", "prompt accuracy (digit and colour)", "higher",
                                         "accuracy_vs_nfe")):
        series: dict[str, list] = {}
        for r in swept:
            series.setdefault(r["sampler"], []).append((r["nfe"], r[metric]))
        ref = {f"{ref_row['sampler']} x{ref_row['steps']} ({ref_row['nfe']} NFE)": ref_row[metric]} \
            if ref_row else None
        written.append(plots.lines(series, out / f"{stem}.png", xlabel="NFE (network evaluations per image)",
                                   ylabel=label, better=better, logx=True, reference=ref,
                                   title=f"Samplers on the digits diffusion model ({caption})"))
    if guidance_rows:
        name, steps = guidance_rows[0]["sampler"], guidance_rows[0]["steps"]
        for metric, label, better, stem in (("fd", "FD to the test split (digits features)", "lower",
                                             "fd_vs_guidance"),
                                            ("label_accuracy", "prompt accuracy (digit and colour)", "higher",
                                             "accuracy_vs_guidance")):
            written.append(plots.lines({f"{name}, {steps} steps": [(r["guidance_scale"], r[metric])
                                                                   for r in guidance_rows]},
                                       out / f"{stem}.png", xlabel="classifier-free guidance scale (1 = none)",
                                       ylabel=label, better=better, title="Quality vs guidance"))
    return written


def evaluation_json(row: dict, cfg, info: dict, ids: dict) -> dict:
    """One comparison row in shared/evaluate.py's format (what shared/tables.py's tables and leaderboard read),
    with the leaderboard's extra columns under `info`."""
    n = row["images"]
    return {
        "experiment": "digits_diffusion", "checkpoint": str(cfg.model_dir), "sampler": row["sampler"],
        "steps": row["steps"], "scale": cfg.scale, "images": "", "reference": str(cfg.reference_dir),
        "resolution": "", "num_images_found": n, "num_images_read": n, "num_unreadable": 0, "unreadable": [],
        "metrics": [{"metric": "fd", "value": row["fd"], "num_samples": n, **ids,
                     **({"ci": [row["fd_ci_low"], row["fd_ci_high"]], "ci_level": 0.95}
                        if row.get("fd_ci_low") is not None else {})},
                    {"metric": "prompt_accuracy", "value": row["label_accuracy"], "num_samples": n,
                     "reference_id": None, "extractor_id": ids["extractor_id"], "digit": row["digit_accuracy"],
                     "colour": row["colour_accuracy"]}],
        "info": {"method": f"pixel DDPM-trained UNet + {row['sampler']}", "project": "samplers",
                 "paper": PAPERS.get(row["sampler"], ""), "nfe": row["nfe"],
                 "seconds_per_image": row["seconds_per_image"], "guidance_scale": cfg.guidance_scale, **info},
    }


# Where each sampler comes from (the leaderboard's "paper" column).
PAPERS = {"ddpm": "Ho et al. 2020 (DDPM)", "ddim": "Song et al. 2021 (DDIM)", "euler": "Karras et al. 2022 (EDM)",
          "heun": "Karras et al. 2022 (EDM)", "dpm++": "Lu et al. 2022 (DPM-Solver++)",
          "unipc": "Zhao et al. 2023 (UniPC)", "plms": "Liu et al. 2022 (PNDM)", "euler_a": "Karras et al. 2022"}


def _save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def clip_limit(setting: str, schedule: dict) -> float | None:
    """The x0 clamp every sampler gets (`clip_denoised` of Config), or None for no clamp."""
    if setting == "schedule":
        return float(schedule.get("clip_sample_range", 1.0)) if schedule.get("clip_sample") else None
    if setting == "none":
        return None
    try:
        limit = float(setting)
    except ValueError:
        raise ValueError(f"clip_denoised={setting!r}: expected 'schedule', 'none' or a positive number") from None
    if not limit > 0:
        raise ValueError(f"clip_denoised={setting!r}: the clamp must be a positive number")
    return limit


@torch.no_grad()
def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    for name in cfg.samplers:
        get_preset(name)  # fail on a typo before any sampling
    clip_limit(cfg.clip_denoised, {})  # and on a bad clamp
    model_dir, out = Path(cfg.model_dir), Path(cfg.out_dir)
    encoding = read_json(model_dir / "labels.json")
    unet = UNet2DModel.from_pretrained(model_dir / "unet").eval()
    schedule = dict(DDPMScheduler.load_config(model_dir / "scheduler"))
    clip = clip_limit(cfg.clip_denoised, schedule)
    net = digits_features.load(cfg.features)
    labels = resolve_labels(cfg, encoding)
    n_colours = len(encoding["colours"])

    ref_images = torch.from_numpy(load_arrays(cfg.reference_dir)[0]).permute(0, 3, 1, 2).float()
    ref_feats = torch.cat([net.features(ref_images[i:i + 256]) for i in range(0, len(ref_images), 256)]).numpy()
    ref_mu, ref_sigma = ref_feats.astype("float64").mean(0), np.cov(ref_feats.astype("float64"), rowvar=False)

    all_labels = torch.tensor(labels).repeat_interleave(cfg.per_label)
    captions = [caption(int(label) // n_colours, encoding["colours"][int(label) % n_colours]) for label in all_labels]
    shape_tail = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    evaluations = 0

    def denoiser(x, t, class_labels):
        nonlocal evaluations
        evaluations += 1
        return unet(x, t, class_labels=class_labels).sample

    denoiser(torch.zeros(1, *shape_tail), torch.zeros(1, dtype=torch.long), all_labels[:1])  # warm-up, untimed

    image_size = int(encoding.get("image_size", unet.config.sample_size))

    def run(name: str, n_steps: int, guidance: float) -> tuple[dict, torch.Tensor]:
        """Sample every label with one sampler, step count and guidance scale; score the images."""
        nonlocal evaluations
        evaluations, elapsed, images = 0, 0.0, []
        generator = torch.Generator().manual_seed(cfg.seed)
        for start in range(0, len(all_labels), cfg.batch_size):
            batch = all_labels[start:start + cfg.batch_size]
            guide = {"uncond": {"class_labels": torch.full_like(batch, encoding["null_label"])},
                     "guidance_scale": guidance} if guidance != 1.0 else {}
            t0 = time.perf_counter()
            x = sample(denoiser, (len(batch), *shape_tail), name, n_steps, generator=generator,
                       cond={"class_labels": batch}, schedule=schedule, progress=False, clip_denoised=clip, **guide)
            elapsed += time.perf_counter() - t0
            images.append(to_uint8(x, image_size))
        images = torch.cat(images)
        nfe = evaluations // -(-len(all_labels) // cfg.batch_size)
        feats, digit_logits, colour_logits = [], [], []
        for i in range(0, len(images), 256):
            f = net.features(images[i:i + 256].float())
            feats.append(f)
            digit_logits.append(net.digit_head(f))
            colour_logits.append(net.colour_head(f))
        accuracy = PromptAccuracy()
        accuracy.update(torch.cat(digit_logits).numpy(), torch.cat(colour_logits).numpy(), captions)
        acc = accuracy.compute()
        feats = torch.cat(feats).numpy()
        fd = frechet_from_features(feats, ref_feats) if len(images) > 1 else float("nan")
        row = {"sampler": name, "steps": n_steps, "nfe": nfe, "images": len(images),
               "seconds_per_image": elapsed / len(images), "fd": fd, "fd_ci_low": None, "fd_ci_high": None,
               "fd_minus_reference": None, "fd_minus_reference_ci_low": None, "fd_minus_reference_ci_high": None,
               "digit_accuracy": acc["digit"], "colour_accuracy": acc["colour"], "label_accuracy": acc["joint"]}
        if cfg.bootstrap and len(images) > 1:
            # the same draws for every row (same n and seed): rows are resampled in pairs
            boot[(name, n_steps, guidance)] = frechet_bootstrap(feats, ref_mu, ref_sigma,
                                                                resample_indices(len(feats), cfg.bootstrap))
            row["fd_ci_low"], row["fd_ci_high"] = summary(fd, boot[(name, n_steps, guidance)], 0)["ci"]
        print(f"{name:>12} {n_steps:>4} steps, guidance {guidance:g}: {row['seconds_per_image'] * 1000:.1f} "
              f"ms/image, FD {fd:.3f}, label accuracy {acc['joint']:.3f}", flush=True)
        return row, images

    grid_index = grid_samples(all_labels.tolist(), n_colours, cfg.grid_per_cell)
    runs = [(name, n_steps) for name in cfg.samplers for n_steps in cfg.steps]
    reference = parse_reference(cfg.reference)
    if reference is not None:
        runs.append(reference)
    rows, cells, boot = [], {}, {}
    for name, n_steps in runs:
        row, images = run(name, n_steps, cfg.guidance_scale)
        rows.append(row)
        cells[(name, n_steps)] = images[grid_index]
        if cfg.save_images:
            folder = out / "images" / f"{name}_{n_steps}"
            for i, (im, text) in enumerate(zip(images, captions)):
                _save_png(Image.fromarray(im.permute(1, 2, 0).numpy()), folder / f"{i:05d}.png")
                write_text(folder / f"{i:05d}.txt", text + "\n")

    if reference is not None and cfg.bootstrap:
        add_reference_difference(rows, boot, reference, cfg.guidance_scale)

    guidance_rows = []
    if cfg.guidance_sweep:
        name, n_steps = parse_reference(cfg.guidance_sampler)
        for g in cfg.guidance_sweep:
            row, _ = run(name, n_steps, float(g))
            guidance_rows.append({"guidance_scale": float(g), **row})

    extra = [(f"{reference[0]} x{reference[1]}", cells[reference])] if reference is not None else []
    _save_png(draw_grid(cells, list(cfg.samplers), list(cfg.steps), extra), out / "grid.png")
    title = (f"Samplers on {model_dir} ({cfg.scale} scale, {len(all_labels)} images per row, "
             f"guidance {cfg.guidance_scale})")
    md = markdown_table(rows, title)
    if guidance_rows:
        md += "\n" + markdown_table(guidance_rows, f"Guidance sweep: {guidance_rows[0]['sampler']}, "
                                     f"{guidance_rows[0]['steps']} steps", ("guidance_scale", *COLUMNS))
    write_text(out / "results.md", md)
    write_text(out / "results.html", markdown_to_html(markdown_table(rows, title)))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "results.csv", buf.getvalue())
    write_plots(rows, guidance_rows, reference, out, f"{cfg.scale} scale, guidance {cfg.guidance_scale:g}")
    info = {"parameters": sum(p.numel() for p in unet.parameters()), "train_steps": encoding.get("train_step"),
            "resolution": f"{unet.config.sample_size} px model, scored at {image_size} px"}
    ids = {"reference_id": set_id(Path(cfg.reference_dir), image_files(Path(cfg.reference_dir))),
           "extractor_id": net.extractor_id}
    for row in rows:
        write_json(out / "eval" / f"{row['sampler']}_{row['steps']}.json", evaluation_json(row, cfg, info, ids))
    save_resolved(cfg, out)
    print(f"wrote {out / 'grid.png'}, {out / 'results.md'}, {out / 'results.csv'}")
    return rows


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
