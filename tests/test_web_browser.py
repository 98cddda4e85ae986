"""`mambast serve` in a real headless browser: Debian's Chromium, driven by Playwright.

Playwright's own browser downloads are not used: it drives the system's Chromium. Where none is installed and
the tests run as root on a system with apt-get (CI does), Debian's `chromium` package is installed once for the
session; elsewhere the test is skipped with the reason, except under CI, where it fails: it must run there.
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
APT_INSTALL = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
START_TIMEOUT = 180   # seconds for `mambast serve` to import Gradio and torch, load and warm up the model


def unavailable(reason: str):
    """Skip, or fail under CI, where the browser test must run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the browser test cannot run: {reason}")
    pytest.skip(reason)


def find_chromium() -> str | None:
    return os.environ.get("MAMBAST_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def install_chromium() -> str | None:
    """Install Debian's chromium with apt-get; None on success, else why it could not."""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return "no Chromium found (install Debian's chromium package, or set MAMBAST_CHROMIUM to a Chromium binary)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing Debian's chromium for the browser test", file=sys.stderr)
    for cmd in (["apt-get", "update", "-qq"], APT_INSTALL):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, stdin=subprocess.DEVNULL)
        if r.returncode:
            last = (r.stderr.strip() or r.stdout.strip() or f"exit status {r.returncode}").splitlines()[-1]
            return f"`{' '.join(cmd)}` failed: {last}"
    return None


@pytest.fixture(scope="session")
def chromium():
    """A Playwright Chromium browser running the system's (Debian's) Chromium headless."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install '.[test]')")
    path = find_chromium()
    if path is None:
        why = install_chromium()
        path = find_chromium()
        if path is None:
            unavailable(why or "apt-get installed chromium, but no chromium binary is on PATH")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True)
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mambast serve` of a tiny model on a free port; its URL."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        unavailable("Gradio is not installed (pip install '.[test]')")
    from conftest import randomize, tiny_config
    from mambast.model import MambaST
    root = tmp_path_factory.mktemp("serve")
    randomize(MambaST(tiny_config())).save_pretrained(root / "model")
    port, log = free_port(), root / "serve.log"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(root / "uploads")}   # Gradio's copies of the uploads
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mambast", "serve", "--model", str(root / "model"),
                                 "--port", str(port), "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "serving on" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mambast serve did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def picture(path: Path, w: int, h: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


def set_slider(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def stylize_and_download(page, previous_src: str | None = None) -> tuple[Image.Image, str]:
    """Press Stylize, wait for a new result, download it; the downloaded image and the result's URL."""
    from playwright.sync_api import expect
    page.click("#run")
    img = page.locator("#result img")
    expect(img).to_have_count(1, timeout=60_000)
    if previous_src is not None:
        expect(img).not_to_have_attribute("src", previous_src, timeout=60_000)
    src = img.get_attribute("src")
    shown = page.evaluate("() => { const i = document.querySelector('#result img'); "
                          "return i.complete ? [i.naturalWidth, i.naturalHeight] : null }")
    with page.expect_download() as download:
        page.locator("#result").get_by_role("button", name="Download").or_(
            page.locator("#result a[download]")).first.click()
    result = Image.open(io.BytesIO(Path(download.value.path()).read_bytes()))
    assert shown in (None, [result.width, result.height])
    return result, src


def test_the_page_stylizes_and_refuses_a_bad_upload(chromium, server, tmp_path):
    from playwright.sync_api import expect
    content, style = picture(tmp_path / "content.png", 72, 48, 1), picture(tmp_path / "style.jpg", 64, 64, 2)
    (tmp_path / "notes.png").write_text("not an image")
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    hosts = set()
    page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
    page.goto(server)
    page.locator("#content input[type=file]").set_input_files(content)
    page.locator("#style1 input[type=file]").set_input_files(style)
    expect(page.locator("#style1 img")).to_have_count(1)
    set_slider(page, "size", 64)

    full, src = stylize_and_download(page)
    assert full.size == (72, 48) and full.format == "PNG"
    expect(page.locator("#status")).to_contain_text("72 x 48 pixels in")
    set_slider(page, "strength", 0.4)
    weaker, _ = stylize_and_download(page, src)
    assert weaker.size == (72, 48)
    assert not np.array_equal(np.asarray(full), np.asarray(weaker)), "the strength slider changed nothing"

    page.locator("#style2 input[type=file]").set_input_files(tmp_path / "notes.png")
    expect(page.get_by_text("style 2 (notes.png): not a recognised image file")).to_be_visible()
    expect(page.locator("#style2 img")).to_have_count(0)   # the refused file is not kept
    assert hosts == {server.split("/")[2]}, f"the page fetched from elsewhere: {sorted(hosts)}"
    page.close()
