"""An example content/style pair for the demo, made at run time (nothing is committed).

Content: a public-domain photo from the scikit-image wheel on PyPI (fetched once into the cache).
Style: an abstract painting of random brush strokes drawn here from a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .hub import PackageFile, cache_dir, fetch_package_file

CONTENT = PackageFile("scikit-image", "0.25.2", "skimage/data/chelsea.png",
                      "df9eb3dbf4887aa5f75fdcbae5facea0522ca15f", "sha1")


PALETTE = ((22, 38, 92), (44, 96, 160), (238, 196, 70), (230, 120, 40), (250, 236, 200), (30, 120, 110),
           (180, 50, 40), (12, 18, 30))


def stroke_painting(size: int = 512, strokes: int = 2500, seed: int = 0, palette=PALETTE):
    """An abstract 'painting': thick oriented strokes of `palette` (RGB triples; the first is the ground; by
    default warm and cool colours), layered coarse to fine."""
    from PIL import Image, ImageDraw, ImageFilter
    rng = np.random.default_rng(seed)
    palette = np.array(palette)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in palette[0]))
    draw = ImageDraw.Draw(img)
    for i in range(strokes):
        scale = 1.0 - 0.8 * i / strokes  # coarse strokes first, fine ones on top
        x, y = rng.uniform(0, size, 2)
        angle = np.sin(x / size * 6.0) + np.cos(y / size * 5.0) + rng.normal(0, 0.25)  # a flowing field
        length = size * 0.12 * scale * rng.uniform(0.5, 1.0)
        dx, dy = np.cos(angle) * length, np.sin(angle) * length
        colour = palette[rng.integers(len(palette))] + rng.normal(0, 12, 3)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=tuple(int(v) for v in np.clip(colour, 0, 255)),
                  width=max(2, int(size * 0.03 * scale)))
    return img.filter(ImageFilter.SMOOTH_MORE)


def example_pair(cache=None) -> tuple[Path, Path]:
    """Paths of the example content photo and the generated style painting (created on first use)."""
    content = fetch_package_file(CONTENT, cache)
    style = cache_dir(cache) / "examples" / "strokes.png"
    if not style.exists():
        from .io import save_image
        save_image(stroke_painting(), style)
    return content, style
