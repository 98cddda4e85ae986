"""Make the pictures of docs/controls.md from the public-domain example images and the bundled model.

Usage: python scripts/make_controls_images.py [--out docs] [--size 256] [--cell 176]
controls.jpg: one row per control (strength, style mixing, colour preservation, region masks), made with
`mambast.stylize`. controls-choices.jpg: each control beside the alternatives it was chosen over (strength and
mixing blended in pixels or in the style tokens instead of the fused tokens; colours kept by Gatys et al.'s
grey-image transfer or by matching the style's colours instead of our luminance transfer; a mask blended in
pixels instead of on the token grid). Contents: photos from the scikit-image wheel on PyPI (fetched into the
cache); styles: generated stroke paintings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARM = ((120, 20, 10), (200, 40, 30), (240, 120, 40), (250, 200, 80), (160, 60, 20), (250, 230, 190), (90, 10, 30))
COOL = ((10, 30, 80), (30, 80, 170), (60, 160, 220), (20, 120, 120), (150, 210, 240), (240, 250, 255), (40, 40, 120))


def example_images():
    """(contents, styles) as PIL images: cat, coffee, astronaut; the demo painting, a warm and a cool one."""
    from mambast.examples import CONTENT, stroke_painting
    from mambast.hub import PackageFile, fetch_package_file
    from mambast.io import load_image

    def skimage(member, sha1):
        return load_image(fetch_package_file(PackageFile("scikit-image", "0.25.2", member, sha1, "sha1")))
    contents = {"cat": load_image(fetch_package_file(CONTENT)),
                "coffee": skimage("skimage/data/coffee.png", "12b3dd17187374ea93c22228e8e5c62939999148"),
                "astronaut": skimage("skimage/data/astronaut.png", "ac0142571c61bb07e21a17e634596b6dc73f510f")}
    styles = {"strokes": stroke_painting(seed=0), "warm": stroke_painting(seed=1, palette=WARM),
              "cool": stroke_painting(seed=2, strokes=800, palette=COOL)}
    return contents, styles


def region_mask(size):
    """The cat's face (white) on a background split into a dark left and a mid-grey right half."""
    from PIL import Image, ImageDraw
    w, h = size
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    draw.rectangle([w // 2, 0, w, h], fill=128)
    draw.ellipse([w * 0.22, h * 0.02, w * 0.78, h * 0.98], fill=255)
    return mask


class Sheet:
    """A grid of equal cells, each picture centre-cropped to the cell's shape, with a caption in its corner."""

    def __init__(self, rows: int, cols: int, cell: int):
        from PIL import Image
        self.w, self.h = cell, cell * 2 // 3
        self.img = Image.new("RGB", (cols * self.w, rows * self.h), "white")

    def put(self, row: int, col: int, picture, caption: str = "") -> None:
        from PIL import ImageDraw, ImageFont, ImageOps
        cell = ImageOps.fit(picture.convert("RGB"), (self.w, self.h), centering=(0.5, 0.3))
        if caption:
            draw = ImageDraw.Draw(cell, "RGBA")
            font = ImageFont.load_default(size=max(10, self.w // 14))
            box = draw.textbbox((4, self.h - 4), caption, font=font, anchor="ld")
            draw.rectangle([box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2], fill=(0, 0, 0, 150))
            draw.text((4, self.h - 4), caption, font=font, anchor="ld", fill="white")
        self.img.paste(cell, (col * self.w, row * self.h))

    def save(self, path: Path) -> None:
        self.img.save(path, quality=82, optimize=True)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


def controls_sheet(model, contents, styles, size: int, cell: int, out: Path) -> None:
    from mambast import stylize
    run = lambda c, s, **kw: stylize(c, s, model, size=size, seed=0, **kw)  # noqa: E731
    sheet = Sheet(4, 7, cell)
    cat, coffee, astro = contents["cat"], contents["coffee"], contents["astronaut"]
    sheet.put(0, 0, cat, "content")
    for j, a in enumerate((0.0, 0.25, 0.5, 0.75, 1.0)):
        sheet.put(0, j + 1, run(cat, styles["strokes"], strength=a), f"strength {a:g}")
    sheet.put(0, 6, styles["strokes"], "style")
    sheet.put(1, 0, styles["warm"], "style 1")
    for j, w in enumerate((1.0, 0.75, 0.5, 0.25, 0.0)):
        sheet.put(1, j + 1, run(coffee, [styles["warm"], styles["cool"]], weights=[w, 1 - w]),
                  f"weights {w:g},{1 - w:g}")
    sheet.put(1, 6, styles["cool"], "style 2")
    sheet.put(2, 0, astro, "content")
    for j, s in enumerate(("strokes", "cool", "warm")):
        sheet.put(2, 1 + 2 * j, run(astro, styles[s]), s)
        sheet.put(2, 2 + 2 * j, run(astro, styles[s], preserve_color=True), f"{s}, preserve colour")
    mask = region_mask(cat.size)
    sheet.put(3, 0, cat, "content")
    sheet.put(3, 1, mask, "mask")
    three = [styles["warm"], styles["cool"], styles["strokes"]]
    for j, name in enumerate(("warm: dark", "cool: grey", "strokes: white")):
        sheet.put(3, 2 + j, three[j], name)
    sheet.put(3, 5, run(cat, three, mask=mask), "masked")
    sheet.put(3, 6, run(cat, three, mask=mask, strength=0.7, preserve_color=True), "+ strength 0.7, colour")
    sheet.save(out / "controls.jpg")


def choices_sheet(model, contents, styles, size: int, cell: int, out: Path) -> None:
    """Each control as made (first of its row's pictures) beside the alternatives."""
    from mambast.inference.controls import gaussian_blur, load_mask, preserve_colors, to_ycbcr
    from mambast.inference.geometry import finish_output, prepare_content, prepare_style
    from mambast.inference.stylizer import Stylizer
    from mambast.io import pil_to_tensor, tensor_to_pil
    stylizer = Stylizer(model, size=size, seed=0)
    p = model.config.patch_size
    torch.set_grad_enabled(False)

    class Pair:
        """One content's tokens and its fusions with the same permutations, for the alternatives."""

        def __init__(self, content):
            self.x = pil_to_tensor(content)
            self.c, self.hw = prepare_content(self.x, size, p)
            self.xc = stylizer.encode(self.c, self.c)[0]
            self.perms = stylizer.permutations(self.xc, 0)

        def style_tokens(self, img):
            s = prepare_style(pil_to_tensor(img) if not isinstance(img, torch.Tensor) else img, self.hw, p)
            return stylizer.encode(s, s)[1]

        def fused(self, xs):
            return stylizer.fuse_tokens(self.xc, xs, self.perms)

        def pixels(self, tokens):
            return finish_output(stylizer.decode_tokens(tokens), self.hw, tuple(self.x.shape[-2:]))

    sheet = Sheet(4, 7, cell)
    pil = tensor_to_pil

    def three_ways(pair, xa, xb):
        """Going from style tokens xb (t = 0) to xa (t = 1): by the fused tokens (ours), the style tokens, the
        pixels."""
        fa, fb = pair.fused(xa), pair.fused(xb)
        pa, pb = pair.pixels(fa), pair.pixels(fb)
        return {"fused tokens": lambda t: pair.pixels(t * fa + (1 - t) * fb),
                "style tokens": lambda t: pair.pixels(pair.fused(t * xa + (1 - t) * xb)),
                "pixels": lambda t: t * pa + (1 - t) * pb}

    def row(r, ways, shown, label, measure, what, ts):
        for name, f in ways.items():
            print(f"{what}, {name}: {' '.join(f'{measure(f(t)):.3f}' for t in ts)}")
        for j, t in enumerate(shown):
            for k, (name, f) in enumerate(ways.items()):
                sheet.put(r, 3 * j + k, pil(f(t)), f"{label(t)}: {name}" + " (ours)" * (k == 0))

    # strength 0.5 and 0.75: from the content fused with itself to the stylization
    cat = Pair(contents["cat"])
    ways = three_ways(cat, cat.style_tokens(styles["strokes"]), cat.style_tokens(cat.c[..., :cat.hw[0], :cat.hw[1]]))
    full = ways["pixels"](1.0)
    row(0, ways, (0.5, 0.75), lambda a: f"{a:g}", lambda y: float((y - full).abs().mean()),
        "strength, mean |output - strength 1| at 0, .25, .5, .75, 1", (0, 0.25, 0.5, 0.75, 1))
    sheet.put(0, 6, styles["strokes"], "style")
    # mixing 0.5,0.5 and 0.25,0.75 of the warm and the cool painting
    coffee = Pair(contents["coffee"])
    ways = three_ways(coffee, coffee.style_tokens(styles["warm"]), coffee.style_tokens(styles["cool"]))
    row(1, ways, (0.5, 0.25), lambda w: f"{w:g},{1 - w:g}", lambda y: float((lambda m: m[0] - m[2])(y.mean((0, 2, 3)))),
        "mixing, mean red - blue at warm weight 1, .75, .5, .25, 0", (1, 0.75, 0.5, 0.25, 0))
    sheet.put(1, 6, contents["coffee"], "content")
    # colour: ours | Gatys' grey-image transfer | colour-matched style, for two styles
    astro = Pair(contents["astronaut"])
    x = astro.x
    for j, name in enumerate(("strokes", "cool")):
        s = pil_to_tensor(styles[name])
        ours = preserve_colors(astro.pixels(astro.fused(astro.style_tokens(s))), x)
        grey = _grey_transfer(stylizer, x, s, size)
        matched = astro.pixels(astro.fused(astro.style_tokens(_match_colours(s, x))))
        chroma = lambda y: float((to_ycbcr(y)[:, 1:] - to_ycbcr(x)[:, 1:]).abs().mean())  # noqa: E731
        texture = lambda y: float((to_ycbcr(y)[:, :1] - to_ycbcr(x)[:, :1]).abs().mean())  # noqa: E731
        print(f"colour, {name}: mean |chroma - content's| / mean |luminance - content's|: " + ", ".join(
            f"{n} {chroma(y):.3f} / {texture(y):.3f}" for n, y in (("luminance (ours)", ours), ("grey images", grey),
                                                                   ("matched colours", matched))))
        sheet.put(2, 3 * j, pil(ours), f"{name}: luminance (ours)")
        sheet.put(2, 3 * j + 1, pil(grey), f"{name}: grey images")
        sheet.put(2, 3 * j + 2, pil(matched), f"{name}: matched colours")
    sheet.put(2, 6, contents["astronaut"], "content")
    # masks, the border at the cat's cheek enlarged: token grid blurred by one token (ours) | each region's share
    # of a token's pixels, no blur | one region per token (nearest) | pixels, hard | pixels, blurred by a token
    mask = load_mask(region_mask(contents["cat"].size))
    grids = [cat.fused(cat.style_tokens(styles[n])) for n in ("warm", "cool", "strokes")]
    padded = tuple(cat.c.shape[-2:])
    maps = mask.token_weights(cat.hw, padded, p)
    shares = _token_shares(mask, cat.hw, padded, p)
    nearest = torch.nn.functional.one_hot(shares.argmax(0), mask.count).permute(2, 0, 1).float()
    blend = lambda m: sum(m[k][None, :, :, None] * g for k, g in enumerate(grids))  # noqa: E731
    decoded = [cat.pixels(g) for g in grids]
    planes = torch.stack([torch.from_numpy(mask.labels == k).float() for k in range(mask.count)])[None]
    hard = torch.nn.functional.interpolate(planes, size=tuple(cat.x.shape[-2:]), mode="area")
    soft = gaussian_blur(hard, p * cat.x.shape[-1] / cat.hw[1])

    def zoom(t):
        from PIL import Image
        return pil(t).crop((266, 12, 362, 76)).resize((192, 128), Image.NEAREST)
    variants = [(cat.pixels(blend(maps)), "tokens, soft (ours)"), (cat.pixels(blend(shares)), "tokens, no blur"),
                (cat.pixels(blend(nearest)), "tokens, nearest"),
                (sum(hard[:, k:k + 1] * d for k, d in enumerate(decoded)), "pixels, hard"),
                (sum(soft[:, k:k + 1] * d for k, d in enumerate(decoded)), "pixels, blurred")]
    for j, (t, name) in enumerate(variants):
        sheet.put(3, j, zoom(t), name)
    sheet.put(3, 5, pil(variants[0][0]), "ours, whole")
    sheet.put(3, 6, region_mask(contents["cat"].size), "mask")
    border = (maps.max(0).values < 0.99).float()
    print("mask, gradient at token-grid lines / elsewhere in the border band (1 = no seam): " + ", ".join(
        f"{name} {_grid_ratio(stylizer.decode_tokens(blend(m)), cat.hw, border, p):.3f}"
        for name, m in (("soft", maps), ("no blur", shares), ("nearest", nearest))) + "; single styles " + ", ".join(
        f"{_grid_ratio(stylizer.decode_tokens(g), cat.hw, border, p):.3f}" for g in grids))
    sheet.save(out / "controls-choices.jpg")


def _grid_ratio(y, working, border, patch) -> float:
    """Mean absolute step between neighbouring pixels across the token grid's lines, over the same elsewhere,
    within the border tokens (`border` [H', W'] of 1s): about 1 where the grid leaves no seam."""
    y = y[0, :, :working[0], :working[1]].clamp(0, 1)
    band = border.repeat_interleave(patch, 0).repeat_interleave(patch, 1)[:working[0], :working[1]]
    steps, on_grid, inside = [], [], []
    for dim in (1, 2):
        d = (y.narrow(dim, 1, y.shape[dim] - 1) - y.narrow(dim, 0, y.shape[dim] - 1)).abs().mean(0)
        b = band.narrow(dim - 1, 1, band.shape[dim - 1] - 1) * band.narrow(dim - 1, 0, band.shape[dim - 1] - 1)
        line = (torch.arange(d.shape[dim - 1]) + 1) % patch == 0
        line = line[None, :] if dim == 2 else line[:, None]
        steps.append(d)
        on_grid.append(b * line)
        inside.append(b * ~line)
    mean = lambda w: sum((s * m).sum() for s, m in zip(steps, w)) / sum(m.sum() for m in w)  # noqa: E731
    return float(mean(on_grid) / mean(inside))


def _token_shares(mask, working, padded, patch):
    """Each region's share of a token's pixels, without the blur (the alternative to `token_weights`)."""
    import torch.nn.functional as F
    planes = []
    for k in range(mask.count):
        plane = torch.from_numpy(mask.labels == k).float()[None, None]
        plane = F.interpolate(plane, size=tuple(working), mode="area")
        plane = F.pad(plane, (0, padded[1] - working[1], 0, padded[0] - working[0]), mode="replicate")
        planes.append(F.avg_pool2d(plane, patch))
    return torch.cat(planes, 1)[0]


def _grey_transfer(stylizer, content, style, size):
    """Gatys et al.'s luminance-only transfer: grey content, grey style matched to the content's luminance
    mean and spread, stylized; its luminance with the content's chroma."""
    from mambast.inference.controls import from_ycbcr, to_ycbcr
    yc, ys = to_ycbcr(content)[:, :1], to_ycbcr(style)[:, :1]
    ys = (ys - ys.mean()) / ys.std() * yc.std() + yc.mean()
    out = stylizer.stylize(yc.expand(-1, 3, -1, -1), ys.clamp(0, 1).expand(-1, 3, -1, -1))
    return from_ycbcr(torch.cat([to_ycbcr(out)[:, :1], to_ycbcr(content)[:, 1:]], 1))


def _match_colours(style, content):
    """The style's colours moved to the content's mean and covariance (a linear colour transfer, Gatys et al.
    2016's second method)."""
    def stats(x):
        f = x.flatten(2)[0].double()
        return f, f.mean(1, keepdim=True), torch.cov(f) + 1e-5 * torch.eye(3, dtype=torch.float64)

    def root(a, power):
        e, v = torch.linalg.eigh(a)
        return v @ torch.diag(e.clamp_min(1e-8) ** power) @ v.T
    fs, ms, cs = stats(style)
    _, mc, cc = stats(content)
    matched = root(cc, 0.5) @ root(cs, -0.5) @ (fs - ms) + mc
    return matched.float().clamp(0, 1).view(1, 3, *style.shape[-2:])


def main() -> None:
    from mambast import MambaST
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--size", type=int, default=256, help="working short side (default 256)")
    ap.add_argument("--cell", type=int, default=176, help="cell width in pixels (default 176)")
    ap.add_argument("--only", choices=("controls", "choices"), default=None, help="make one of the two")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    contents, styles = example_images()
    model = MambaST.from_pretrained("default")
    if args.only != "choices":
        controls_sheet(model, contents, styles, args.size, args.cell, args.out)
    if args.only != "controls":
        choices_sheet(model, contents, styles, args.size, args.cell, args.out)


if __name__ == "__main__":
    torch.set_num_threads(2)
    np.random.seed(0)
    main()
