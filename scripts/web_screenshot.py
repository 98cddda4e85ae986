"""The screenshot of `mambast serve` in docs/web.md: the page in headless Chromium, the bundled model mixing two
generated stroke paintings onto the public-domain cat photo of the demo.

Usage: python scripts/web_screenshot.py [--out docs/web.jpg] [--chromium /usr/bin/chromium]
Needs the web extra, Playwright (pip install ".[test]") and a Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    from mambast.examples import CONTENT, stroke_painting
    from mambast.hub import fetch_package_file
    from mambast.io import load_image
    from mambast.web import serve

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/web.jpg"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    ap.add_argument("--port", type=int, default=7861)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp())
    load_image(fetch_package_file(CONTENT)).save(tmp / "cat.png")
    stroke_painting(seed=0).save(tmp / "strokes.png")
    stroke_painting(seed=3, strokes=600).save(tmp / "broad-strokes.png")
    demo = serve("default", port=args.port, block=False)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(demo.local_url)
            for slot, name in (("content", "cat.png"), ("style1", "strokes.png"), ("style2", "broad-strokes.png")):
                page.locator(f"#{slot} input[type=file]").set_input_files(tmp / name)
            for slider, value in (("weight2", 0.4), ("strength", 0.85), ("size", 384)):
                page.locator(f"#{slider} input[type=number]").fill(str(value))
                page.locator(f"#{slider} input[type=number]").press("Enter")
            page.click("#run")
            expect(page.locator("#result img")).to_have_count(1, timeout=120_000)
            expect(page.locator("#status")).to_contain_text("pixels in", timeout=120_000)
            page.evaluate("window.scrollTo(0, 0)")
            shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
            browser.close()
    finally:
        demo.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for quality in (85, 75, 65, 55):   # the docs keep pictures under 200 KB
        shot.save(args.out, quality=quality, optimize=True)
        if args.out.stat().st_size <= 200_000:
            break
    print(f"wrote {args.out}: {shot.width} x {shot.height}, {args.out.stat().st_size // 1000} KB")


if __name__ == "__main__":
    main()
