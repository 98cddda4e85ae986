"""Make the README / MODEL_CARD pictures from public-domain example images and the bundled model.

Usage: python scripts/make_docs_images.py [--out docs]
Contents: photos from the scikit-image wheel on PyPI (fetched into the cache); styles: generated
stroke paintings. samples.jpg: rows contents, columns styles; demo.jpg: the first pair; comparison.jpg:
content | style | mambast | Magenta per row (needs onnxruntime).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from PIL import Image

    from mambast import MambaST
    from mambast.examples import CONTENT, stroke_painting
    from mambast.hub import PackageFile, fetch_package_file
    from mambast.inference.stylizer import stylize_tensor
    from mambast.io import load_image, pil_to_tensor, tensor_to_pil

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--cell", type=int, default=192)
    args = ap.parse_args()

    def skimage(member, sha1):
        return load_image(fetch_package_file(PackageFile("scikit-image", "0.25.2", member, sha1, "sha1")))

    contents = [load_image(fetch_package_file(CONTENT)),
                skimage("skimage/data/coffee.png", "12b3dd17187374ea93c22228e8e5c62939999148"),
                skimage("skimage/data/astronaut.png", "ac0142571c61bb07e21a17e634596b6dc73f510f")]
    styles = [stroke_painting(seed=0), stroke_painting(seed=3, strokes=600)]
    model = MambaST.from_pretrained("default")
    c = args.cell
    thumb = lambda im: im.resize((c, c), Image.BICUBIC)  # noqa: E731
    grid = Image.new("RGB", ((len(styles) + 1) * c, (len(contents) + 1) * c), "white")
    for j, s in enumerate(styles):
        grid.paste(thumb(s), ((j + 1) * c, 0))
    for i, ct in enumerate(contents):
        grid.paste(thumb(ct), (0, (i + 1) * c))
        for j, s in enumerate(styles):
            y = stylize_tensor(model, pil_to_tensor(ct), pil_to_tensor(s), size=384, seed=0)
            grid.paste(thumb(tensor_to_pil(y)), ((j + 1) * c, (i + 1) * c))
            if i == 0 and j == 0:
                tensor_to_pil(y).save(args.out / "demo.jpg", quality=88)
    args.out.mkdir(parents=True, exist_ok=True)
    grid.save(args.out / "samples.jpg", quality=88)
    print(f"wrote {args.out / 'samples.jpg'} and {args.out / 'demo.jpg'}")
    comparison(model, contents, styles, args)


def comparison(model, contents, styles, args) -> None:
    """comparison.jpg: rows of content | style | mambast | Magenta (the peer of benchmarks/quality.py; needs
    onnxruntime), on the same public-domain pictures: the evaluation images are not ours to publish."""
    from PIL import Image

    from mambast.inference.stylizer import stylize_tensor
    from mambast.io import pil_to_tensor, tensor_to_pil
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from quality import Magenta

    magenta = Magenta("cpu")
    c = args.cell
    thumb = lambda im: im.resize((c, c), Image.BICUBIC)  # noqa: E731
    pairs = [(ct, styles[i % len(styles)]) for i, ct in enumerate(contents)]
    sheet = Image.new("RGB", (4 * c, len(pairs) * c), "white")
    for i, (ct, st) in enumerate(pairs):
        x, s = pil_to_tensor(ct), pil_to_tensor(st)
        ours = stylize_tensor(model, x, s, size=384, seed=0)
        peer = magenta(x, s, seed=0)
        for j, im in enumerate((ct, st, tensor_to_pil(ours), tensor_to_pil(peer))):
            sheet.paste(thumb(im), (j * c, i * c))
    sheet.save(args.out / "comparison.jpg", quality=88)
    print(f"wrote {args.out / 'comparison.jpg'} (columns: content, style, mambast, Magenta)")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
