"""Milliseconds per image and peak GPU memory of Mamba-ST inference, against the authors' per-image work
and a cross-attention fusion, across resolutions; writes JSON, a Markdown table and a log-log plot.

Usage (CUDA machine, repository root): python benchmarks/efficiency.py --out DIR
CPU smoke test of the script itself: python benchmarks/efficiency.py --device cpu --quick --tiny --out DIR
Methods (random weights; speed does not depend on values; inputs torch.rand on the device):
  ours                 what `mambast stylize` runs per batch (PairStylizer's content encoder, style encoder and
                       fusion calls, CUDA graphs where they pay), fused scan, bf16 autocast and fp32, shuffle on
  ours-compiled        the same calls through torch.compile (--compile; the scan stays one opaque operator), bf16
  ours-eager           the model's forward, launched kernel by kernel, bf16 and fp32
  ours-reference-scan  the model under mambast.ops.use_impl("ref") (Python loop over tokens)
  authors-work         what the authors' test script computes per image: stylized pass, the identity passes
                       (content, content) and (style, style), VGG-19 features of the five images and all losses
  cross-attention      3 layers of softmax(Q K^T / sqrt(d)) V between content and style tokens (materialised)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

import common  # noqa: E402  (benchmarks/common.py; puts the repository on sys.path)
from common import REPO  # noqa: E402
from mambast.config import MambaSTConfig  # noqa: E402
from mambast.model import MambaST  # noqa: E402

METHODS = ("ours", "ours-compiled", "ours-eager", "ours-reference-scan", "authors-work", "cross-attention")
RUN_ORDER = ("ours", "ours-compiled", "ours-eager", "authors-work", "cross-attention", "ours-reference-scan")  # slowest, least important last
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
GIB = 2 ** 30
SLOW_CALL_S = 0.2       # calls slower than this get fewer timed runs (at least MIN_SLOW_RUNS)
MIN_SLOW_RUNS = 5
CASE_BUDGET_S = 6.0     # timed seconds aimed at per slow case
REF_SCAN_RES = (256, 512)   # the reference scan loops over tokens in Python: only these sizes (batch 1)
REF_SCAN_RUNS = 3
DEFAULT_ANCHORS = REPO / "benchmarks" / "anchors" / "authors-code-h100.json"   # the authors' code, measured on one H100
ANCHOR_ROWS = {  # (anchor "what" prefix, dtype) -> label used in the Markdown
    ("official test forward", "fp32"): "Mamba-ST official test forward, fp32",
    ("official test forward", "bf16"): "Mamba-ST official test forward, bf16 autocast",
    ("stylization only", "fp32"): "Mamba-ST stylization only, fp32",
    ("stylization only", "bf16"): "Mamba-ST stylization only, bf16 autocast",
}
WHAT = {
    "ours": "stylization only, as mambast stylize runs a batch: content and style encoder calls, style "
            "permutations drawn on the CPU meanwhile, fusion call; fused scan; each call replayed from a CUDA "
            "graph where graph_pays, eager elsewhere",
    "ours-compiled": "ours with each call compiled by torch.compile (mambast stylize --compile; inductor, compile "
                     "time excluded)",
    "ours-eager": "MambaST forward (stylization only), fused scan, kernels launched one by one from Python",
    "ours-reference-scan": "MambaST forward (stylization only), reference scan (Python loop over tokens)",
    "authors-work": "stylized pass + identity passes (Ic,Ic), (Is,Is) + VGG-19 features of 5 images + all losses",
    "cross-attention": "cross-attention fusion only: 3 layers, content queries vs style keys/values, materialised",
}


# ----------------------------------------------------------------------------- the cross-attention stand-in

class CrossAttentionLayer(nn.Module):
    """x <- LayerNorm(x + W_o softmax(Q K^T / sqrt(d)) V), Q from content x, K and V from style s; the
    [B, heads, L, L] attention matrix is materialised (no fused/flash kernel), as StyTr2's decoder does."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attn heads must divide the width {dim}; got {heads}")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # x, s: [B, L, C]
        B, L, C = x.shape
        h, d = self.heads, C // self.heads

        def split(t):                                                      # [B, L, C] -> [B, h, L, d]
            return t.view(B, -1, h, d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(s)), split(self.v(s))
        attn = (q @ k.transpose(-2, -1)) * d ** -0.5                       # [B, h, L, L]
        y = attn.softmax(dim=-1) @ v                                       # [B, h, L, d]
        return self.norm(x + self.o(y.transpose(1, 2).reshape(B, L, C)))


class CrossAttentionFusion(nn.Module):
    """content tokens [B, L, C], style tokens [B, L, C] -> [B, L, C] through `layers` cross-attention layers."""

    def __init__(self, dim: int, heads: int, layers: int = 3):
        super().__init__()
        self.layers = nn.ModuleList(CrossAttentionLayer(dim, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, s)
        return x


# ----------------------------------------------------------------------------- timing and memory

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def _free(device: torch.device) -> None:
    # cuBLAS workspaces are kept (a few tens of MiB per stream): freeing them between cases made the next
    # case's CUDA-graph capture fail with "unspecified launch failure" on an H200 (torch 2.11)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(fn, batch: int, device: torch.device, runs: int, warmup: int, fixed: bool = False) -> dict:
    """Warm-up calls, `runs` timed calls bracketed by synchronize (median), then one extra call for the
    peak memory (absolute: weights + inputs + activations). When the second (compiled) warm-up call is
    slower than SLOW_CALL_S, warm-up stops there and runs drop to max(MIN_SLOW_RUNS, CASE_BUDGET_S / call),
    unless `fixed`."""
    times = []

    def call():
        _sync(device)
        t = time.perf_counter()
        y = fn()
        _sync(device)
        times.append((time.perf_counter() - t) * 1e3)
        return y

    y = call()                                           # first warm-up (compiles / autotunes)
    first_call_ms = times[0]
    n_warm = 1
    while n_warm < warmup:
        del y
        y = call()
        n_warm += 1
        if n_warm == 2 and times[-1] / 1e3 > SLOW_CALL_S and not fixed:
            runs = min(runs, max(MIN_SLOW_RUNS, int(CASE_BUDGET_S * 1e3 / times[-1])))
            break
    times.clear()
    for _ in range(runs):
        del y
        y = call()
    finite = bool(torch.isfinite(y.float()).all())
    del y
    rec = {"ms_per_image": statistics.median(times) / batch, "ms_per_call": statistics.median(times),
           "n_runs": runs, "warmup": n_warm, "first_call_ms": first_call_ms, "ms_min": min(times),
           "ms_max": max(times),
           "samples_ms": [round(t, 3) for t in times], "output_finite": finite,
           "peak_mem_bytes": None, "mem_before_call_bytes": None}
    if device.type == "cuda":
        _free(device)
        torch.cuda.reset_peak_memory_stats(device)
        rec["mem_before_call_bytes"] = torch.cuda.memory_allocated(device)
        y = fn()
        _sync(device)
        rec["peak_mem_bytes"] = torch.cuda.max_memory_allocated(device)
        del y
        if getattr(fn, "graph", False):   # a graph's activations live in its private pool: reserved, and
            _free(device)                 # not counted as allocated between replays; count what stays reserved
            rec["peak_mem_bytes"] = max(rec["peak_mem_bytes"], torch.cuda.memory_reserved(device))
            rec["cuda_graph"] = True
    return rec


# ----------------------------------------------------------------------------- the four methods

def _amp_dtype(dtype: str) -> torch.dtype | None:
    """The autocast dtype of a dtype name (None for fp32: no autocast)."""
    return None if dtype == "fp32" else DTYPES[dtype]


def _autocast(device: torch.device, dtype: str):
    from mambast.inference.precision import autocast
    return autocast(device.type, _amp_dtype(dtype))


def build_model(cfg: MambaSTConfig, device: torch.device, amp: torch.dtype | None = None) -> MambaST:
    """The model with random weights (seed 0) on `device`, its Linear and Conv2d weights stored in `amp` (cast on
    the CPU first, as `mambast stylize` does: no float32 copies freed on the GPU between them)."""
    from mambast.inference.precision import cast_autocast_weights
    torch.manual_seed(0)
    return cast_autocast_weights(MambaST(cfg), amp, device).eval()


def setup_ours(ctx, res, batch, dtype, scan_impl="auto"):
    from mambast.ops import use_impl
    model = ctx.model(dtype)
    c = torch.rand(batch, 3, res, res, device=ctx.device)
    s = torch.rand(batch, 3, res, res, device=ctx.device)

    def fn():
        with _autocast(ctx.device, dtype), use_impl(scan_impl):
            return model(c, s, shuffle=True)
    return fn


def setup_ours_graph(ctx, res, batch, dtype, compile=False):
    """What `mambast stylize` runs per batch (`mambast.inference.Stylizer`'s encoder and fusion calls): content
    and style encoders, then the style permutations drawn on the CPU while the GPU encodes, then the fusion;
    each call replayed from a CUDA graph where `graph_pays`; compile: each through torch.compile (--compile).
    Eager on a CPU device (without compile)."""
    if ctx.device.type != "cuda" and not compile:
        return setup_ours(ctx, res, batch, dtype)
    from mambast.inference.graphs import graph_pays
    from mambast.model import draw_permutations
    from mambast.inference.stylizer import Stylizer as PairStylizer
    model = ctx.model(dtype)
    c = torch.rand(batch, 3, res, res, device=ctx.device)
    s = torch.rand(batch, 3, res, res, device=ctx.device)
    n, L = len(model.decoder.layers), (res // model.config.patch_size) ** 2
    stylizer = PairStylizer(model, autocast_dtype=_amp_dtype(dtype), compile=compile)

    @torch.inference_mode()
    def fn():
        xc, xs = stylizer.encode(c, s)
        return stylizer.fuse(xc, xs, draw_permutations(n, L, device=ctx.device))
    fn.graph = stylizer.cuda_graphs and graph_pays(batch, res, res)
    return fn


def setup_authors(ctx, res, batch, dtype):
    """Per image: Ics = f(Ic, Is), Icc = f(Ic, Ic), Iss = f(Is, Is); VGG-19 features of Ic, Is, Ics, Icc, Iss
    (one pass per image, as the authors' code encodes each image separately); all four loss terms."""
    from mambast.train import losses as L
    model = ctx.model()
    vgg, weights = ctx.vgg()
    c = torch.rand(batch, 3, res, res, device=ctx.device)
    s = torch.rand(batch, 3, res, res, device=ctx.device)

    def fn():
        with _autocast(ctx.device, dtype):
            ics = model(c, s, shuffle=True)
            icc = model(c, c, shuffle=True)
            iss = model(s, s, shuffle=True)
            fc, fs, fo, fcc, fss = (vgg(x) for x in (c, s, ics, icc, iss))
            terms = {"content": L.content_loss(fo, fc), "style": L.style_loss(fo, fs),
                     "identity1": L.identity1_loss(icc, c, iss, s),
                     "identity2": L.identity2_loss(fcc, fc, fss, fs)}
            total = sum(weights[k] * terms[k] for k in L.TERMS)
        return ics + 0 * total                        # keeps the losses in the timed work
    return fn


def setup_attention(ctx, res, batch, dtype):
    p = ctx.cfg.patch_size
    L = (res // p) ** 2
    net = ctx.attention()
    x = torch.rand(batch, L, ctx.cfg.dim, device=ctx.device)             # content tokens
    s = torch.rand(batch, L, ctx.cfg.dim, device=ctx.device)             # style tokens

    def fn():
        with _autocast(ctx.device, dtype):
            return net(x, s)
    return fn


class Context:
    """The device, config and the one network alive at a time (so peak memory counts only what a method needs)."""

    def __init__(self, args, device: torch.device):
        self.args, self.device = args, device
        self.cfg = (MambaSTConfig(dim=32, depth_encoder=1, depth_decoder=1, d_state=4, decoder_channels=[16, 8, 8])
                    if args.tiny else MambaSTConfig())
        self._nets: dict = {}

    def _get(self, key, make):
        if key not in self._nets:
            self._nets[key] = make()
        return self._nets[key]

    def keep_only(self, keys) -> None:
        for k in [k for k in self._nets if k not in keys]:
            del self._nets[k]
        _free(self.device)

    def model(self, dtype="fp32"):
        """The model; for bf16 its Linear and Conv2d weights stored in bf16 (`cast_autocast_weights`: the same
        results under autocast, as `mambast stylize` runs it)."""
        def make():
            return build_model(self.cfg, self.device, _amp_dtype(dtype))
        return self._get(("mambast", dtype), make)

    def vgg(self):
        from mambast.networks.vgg import VGG19Features
        from mambast.train.losses import StyleTransferLoss

        def make():
            torch.manual_seed(0)
            net = VGG19Features((8, 8, 8, 8, 8) if self.args.tiny else (64, 128, 256, 512, 512)).to(self.device)
            return net.eval(), StyleTransferLoss(nn.Identity()).weights
        return self._get(("vgg",), make)

    def attention(self):
        def make():
            torch.manual_seed(0)
            return CrossAttentionFusion(self.cfg.dim, self.args.attn_heads, 3).to(self.device).eval()
        return self._get(("attention",), make)


NETS = {"ours": [("mambast", "auto")], "ours-compiled": [("mambast", "auto")], "ours-eager": [("mambast", "auto")], "authors-work": [("mambast", "auto"), ("vgg",)],
        "cross-attention": [("attention",)], "ours-reference-scan": [("mambast", "ref")]}


# ----------------------------------------------------------------------------- plan and run

def plan(args) -> list[dict]:
    """Every (method, dtype, resolution, batch) case in run order; skipped ones carry "skipped"."""
    cases = []
    big = (args.batch_res, args.big_batch)
    for method in RUN_ORDER:
        if method not in args.methods:
            continue
        dtypes = args.dtypes if method in ("ours", "ours-eager", "ours-reference-scan") else ["fp32"]
        if method == "ours-compiled":
            dtypes = ["bf16"]
        for dtype in dtypes:
            sizes = [(r, 1) for r in args.resolutions] + ([big] if args.big_batch > 1 else [])
            for res, batch in sizes:
                case = {"method": method, "what": WHAT[method], "dtype": dtype, "resolution": res, "batch": batch}
                if method == "ours-reference-scan" and (batch != 1 or (res not in REF_SCAN_RES and not args.quick)):
                    case["skipped"] = ("the reference scan is a Python loop over tokens; run only at "
                                       f"{', '.join(map(str, REF_SCAN_RES))} batch 1")
                cases.append(case)
    return cases


def run_case(ctx: Context, case: dict, args) -> dict:
    rec = dict(case)
    rec.update(ms_per_image=None, peak_mem_bytes=None)
    setup = {"ours": setup_ours_graph, "ours-eager": setup_ours,
             "ours-compiled": lambda c, r, b, d: setup_ours_graph(c, r, b, d, compile=True), "authors-work": setup_authors, "cross-attention": setup_attention,
             "ours-reference-scan": lambda c, r, b, d: setup_ours(c, r, b, d, "ref")}[case["method"]]
    fixed = case["method"] == "ours-reference-scan"
    runs, warmup = (min(args.runs, REF_SCAN_RUNS), 1) if fixed else (args.runs, args.warmup)
    error = None
    try:
        ctx.keep_only([k + (case["dtype"],) if k[0] == "mambast" else k for k in NETS[case["method"]]])
        with torch.inference_mode():
            fn = setup(ctx, case["resolution"], case["batch"], case["dtype"])
            rec.update(measure(fn, case["batch"], ctx.device, runs, warmup, fixed))
            del fn
    except Exception as e:  # one failure is recorded, the benchmark goes on
        error = ("out of memory: " if _is_oom(e) else "") + f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    if error:
        rec["error"] = error
        rec["oom"] = error.startswith("out of memory")
    _free(ctx.device)
    if fixed and not error:
        rec["note"] = f"median of {rec['n_runs']} runs (the reference scan is slow)"
    return rec


def header(args, device: torch.device, cfg: MambaSTConfig) -> dict:
    h = common.header(device, args.commit,
        matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        config=cfg.to_dict(), tiny_config=bool(args.tiny),
        params_mambast=sum(p.numel() for p in MambaST(cfg).parameters()),
        attn_heads=args.attn_heads,
        argv=sys.argv[1:],
        method=(
            "Random weights (PyTorch default init; timing does not depend on values); inputs torch.rand on the "
            "device; model.eval() under torch.inference_mode(); shuffle of the style tokens on, as at inference. "
            f"{args.warmup} warm-up calls, then {args.runs} timed calls each bracketed by synchronize + "
            f"time.perf_counter(), median; calls slower than {SLOW_CALL_S * 1e3:.0f} ms (2nd warm-up) get 2 "
            f"warm-ups and max({MIN_SLOW_RUNS}, {CASE_BUDGET_S:.0f} s / call) runs; the reference scan 1 warm-up and "
            f"{REF_SCAN_RUNS} runs, at {', '.join(map(str, REF_SCAN_RES))} batch 1 only. "
            "ms_per_image = median call / batch. peak_mem_bytes = torch.cuda.max_memory_allocated() over one "
            "extra call after reset_peak_memory_stats (absolute: weights + inputs + activations, and from the "
            "first CUDA-graph case on the cuBLAS workspaces of its capture stream and the default stream, "
            "about 2 x 32 MiB, kept for every later case alike; mem_before_call_bytes is what was resident "
            "before it); only the networks of the method are resident. bf16: the model's Linear and Conv2d "
            "weights stored in bf16 (same results under autocast). fp32: matmul TF32 off, cuDNN TF32 at PyTorch's default (on), as the anchors; "
            "bf16: torch.autocast bfloat16 (the selective scan state stays fp32). "
            "ours / ours-compiled: PairStylizer's content encoder, style encoder and fusion calls (CUDA graphs "
            "where graph_pays; compiled: torch.compile), scan impl 'auto' (Triton on CUDA); ours-eager: "
            "MambaST.forward. ours-reference-scan: every layer's "
            "scan implementation 'ref' (mambast.ops.use_impl). authors-work: f(Ic,Is), f(Ic,Ic), f(Is,Is), VGG-19 features of the five "
            "images (one pass each), content/style/identity losses of mambast.train.losses, with our fused "
            "scan: a lower bound of what the authors' test script costs. cross-attention: 3 layers of "
            f"{args.attn_heads}-head softmax(QK^T/sqrt(d))V at width {cfg.dim} between L=(res/{cfg.patch_size})^2 "
            "content and style tokens, attention matrix materialised, fusion only (no encoders, no CNN decoder)."),
    )
    return h


# ----------------------------------------------------------------------------- reporting

def _key(r):
    return (r["method"], r["dtype"], r["resolution"], r["batch"])


def _cell(r) -> str:
    if r is None:
        return "–"
    if r.get("skipped"):
        return "skipped"
    if r.get("error"):
        return "out of memory" if r.get("oom") else "error"
    ms = r["ms_per_image"]
    ms_s = f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"
    return ms_s if r.get("peak_mem_bytes") is None else f"{ms_s} ({r['peak_mem_bytes'] / GIB:.2f})"


def load_anchors(path: Path) -> dict | None:
    """{(what, dtype, res, batch): record} of the Mamba-ST rows of the anchors file, or None if absent."""
    try:
        data = json.loads(Path(path).read_text())
    except Exception:
        return None
    out = {"_gpu": data.get("header", {}).get("gpu")}
    for r in data.get("records", []):
        if r.get("method") != "Mamba-ST" or r.get("ms_per_image") is None:
            continue
        what = next((w for w, _ in ANCHOR_ROWS if r["what"].startswith(w)), None)
        res = r["resolution"][0] if isinstance(r["resolution"], list) else r["resolution"]
        if what:
            out[(what, r["dtype"], res, r["batch"])] = r
    return out


def _ratio(a, b):
    return a / b if a and b else None


def _fmt(x, unit="x", nd=2):
    return "–" if x is None else f"{x:.{nd}f}{unit}"


def _check(ok) -> str:
    return "–" if ok is None else ("PASS" if ok else "FAIL")


def _exponent(recs: list[dict], value) -> list[tuple[str, float]]:
    """k in value ∝ pixels^k between consecutive measured resolutions (batch 1)."""
    pts = [(r["resolution"], value(r)) for r in sorted(recs, key=lambda r: r["resolution"])
           if r["batch"] == 1 and r.get("ms_per_image") is not None and value(r)]
    return [(f"{a}→{b}", math.log(vb / va) / math.log((b / a) ** 2)) for (a, va), (b, vb) in zip(pts, pts[1:])]


def markdown(head: dict, records: list[dict], args, anchors: dict | None) -> str:
    by = {_key(r): r for r in records}
    cols = [(r, 1) for r in args.resolutions] + ([(args.batch_res, args.big_batch)] if args.big_batch > 1 else [])
    col_names = [str(r) if b == 1 else f"{r}, batch {b}" for r, b in cols]
    mem_note = "ms per image (peak GiB)" if head["gpu"] else "ms per image (peak memory is measured on CUDA only)"
    lines = [f"# Mamba-ST efficiency: {head['gpu'] or head['device']}", "",
             f"torch {head['torch']}, triton {head['triton']}, CUDA {head['cuda']}; {head['date']}; "
             f"commit {head['git_commit']}{' (+ local changes)' if head['git_dirty'] else ''}; "
             f"matmul TF32 {head['matmul_allow_tf32']}, cuDNN TF32 {head['cudnn_allow_tf32']}"
             f"{'; tiny test config' if head['tiny_config'] else ''}.", "",
             f"{mem_note}, batch 1 unless marked:", "",
             "| method | " + " | ".join(col_names) + " |", "|---|" + "---|" * len(cols)]
    for method in METHODS:
        for dtype in DTYPES:
            row = [by.get((method, dtype, r, b)) for r, b in cols]
            if all(x is None for x in row):
                continue
            lines.append(f"| {method}, {dtype} | " + " | ".join(_cell(x) for x in row) + " |")
    lines += ["", "- ours: what `mambast stylize` runs per batch: the content and style encoder calls, the style "
              "permutations drawn on the CPU while the GPU encodes, the fusion call; fused scan; each call replayed "
              "from a CUDA graph up to `mambast.inference.graphs.GRAPH_MAX_PIXELS` pixels and eager above. ours-compiled: "
              "the same calls through torch.compile (`--compile`). ours-eager: the model's forward launched kernel "
              "by kernel from Python (a single call). ours-reference-scan: eager with the Python reference scan (skipped "
              "cells: too slow to run there).",
              "- authors-work: stylized pass + two identity passes + VGG-19 features of the five images + all "
              "losses, as the authors' test script computes per image, but with our fused scan and layers: a "
              "lower bound of their cost.",
              f"- cross-attention: fusion only (3 layers, {head['attn_heads']} heads, width {head['config']['dim']}, "
              "attention matrix materialised), no encoders or CNN decoder: its cost grows with the square of the "
              "token count."]
    errors = [r for r in records if r.get("error")]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {r['method']} {r['dtype']} {r['resolution']} batch {r['batch']}: "
                                        f"{r['error']}" for r in errors]

    # ratios against the authors' code as measured in the anchors
    lines += ["", "## Against the authors' code (anchors)", ""]
    if anchors is None:
        lines.append(f"Anchors file not found ({args.anchors}); no ratios.")
    else:
        if anchors["_gpu"] != head["gpu"]:
            lines.append(f"Note: the anchors were measured on {anchors['_gpu']}, this run on {head['gpu'] or 'CPU'}; "
                         "the ratios compare different machines.\n")
        lines += ["speed-up = anchor ms / ours ms; memory = ours peak / anchor peak.", "",
                  "| ours vs anchor | " + " | ".join(col_names) + " |", "|---|" + "---|" * len(cols)]
        pairs = [("ours", "fp32", ("official test forward", "fp32")), ("ours", "bf16", ("official test forward", "fp32")),
                 ("ours", "bf16", ("official test forward", "bf16")), ("ours", "fp32", ("stylization only", "fp32")),
                 ("ours", "bf16", ("stylization only", "bf16")),
                 ("ours-compiled", "bf16", ("official test forward", "fp32")),
                 ("ours-compiled", "bf16", ("stylization only", "bf16"))]
        for method, ours_dt, (what, a_dt) in pairs:
            if not any(k[0] == method for k in by):
                continue
            cells = []
            for r, b in cols:
                o, a = by.get((method, ours_dt, r, b)), anchors.get((what, a_dt, r, b))
                if not o or o.get("ms_per_image") is None or not a:
                    cells.append("–")
                    continue
                sp = _ratio(a["ms_per_image"], o["ms_per_image"])
                mem = _ratio(o.get("peak_mem_bytes"), a.get("peak_mem_bytes"))
                cells.append(f"{sp:.1f}x" + (f", mem {mem:.2f}x" if mem else ""))
            lines.append(f"| {method} {ours_dt} vs {ANCHOR_ROWS[(what, a_dt)]} | " + " | ".join(cells) + " |")
        cells = []
        for r, b in cols:
            o, a = by.get(("authors-work", "fp32", r, b)), anchors.get(("official test forward", "fp32", r, b))
            ok = o and o.get("ms_per_image") is not None and a
            cells.append(f"{o['ms_per_image'] / a['ms_per_image']:.2f}x time" if ok else "–")
        lines.append("| authors-work fp32 (here) / official test forward fp32 (anchor) | " + " | ".join(cells) + " |")

    # targets
    lines += ["", "## Targets", ""]
    aw = by.get(("authors-work", "fp32", 512, 1))
    lines += ["| target | measured | verdict |", "|---|---|---|"]
    for method in ("ours", "ours-compiled"):
        o = by.get((method, "bf16", 512, 1))
        sp = mem = None
        if o and aw and o.get("ms_per_image") and aw.get("ms_per_image"):
            sp = aw["ms_per_image"] / o["ms_per_image"]
            mem = _ratio(o.get("peak_mem_bytes"), aw.get("peak_mem_bytes"))
        elif method != "ours":
            continue
        lines += [f"| 512², batch 1: {method} bf16 ≥ 10x faster than authors-work (fp32, here) | {_fmt(sp, 'x', 1)} | "
                  f"{_check(None if sp is None else sp >= 10)} |",
                  f"| 512², batch 1: {method} bf16 peak memory ≤ 1/3 of authors-work's | {_fmt(mem, 'x')} | "
                  f"{_check(None if mem is None else mem <= 1 / 3)} |"]
    a = anchors.get(("official test forward", "fp32", 512, 1)) if anchors else None
    for method in ("ours", "ours-compiled") if a else ():
        o = by.get((method, "bf16", 512, 1))
        if o and o.get("ms_per_image"):
            sp_a = a["ms_per_image"] / o["ms_per_image"]
            mem_a = _ratio(o.get("peak_mem_bytes"), a.get("peak_mem_bytes"))
            lines += [f"| 512², batch 1: {method} bf16 ≥ 10x faster than the official test forward fp32 (anchor, "
                      f"{a['ms_per_image']:.0f} ms) | {_fmt(sp_a, 'x', 1)} | {_check(sp_a >= 10)} |",
                      f"| 512², batch 1: {method} bf16 peak memory ≤ 1/3 of the official test forward's (anchor, "
                      f"{a['peak_mem_bytes'] / GIB:.2f} GiB) | {_fmt(mem_a, 'x')} | "
                      f"{_check(None if mem_a is None else mem_a <= 1 / 3)} |"]
    for method, dtype in (("ours", "bf16"), ("ours", "fp32"), ("ours-compiled", "bf16")):
        r = by.get((method, dtype, args.batch_res, args.big_batch))
        if args.big_batch <= 1 or (r is None and method != "ours"):
            continue
        ips = 1e3 / r["ms_per_image"] if r and r.get("ms_per_image") else None
        target = dtype == "bf16" and (args.batch_res, args.big_batch) == (512, 16)
        lines.append(f"| {args.batch_res}², batch {args.big_batch}: {method} {dtype} images/s"
                     f"{' ≥ 500' if target else ' (for information)'} | {_fmt(ips, '', 0)} | "
                     f"{_check(None if ips is None or not target else ips >= 500)} |")
    ours_growth = _exponent([r for r in records if r["method"] == "ours" and r["dtype"] == "bf16"],
                            lambda r: (r.get("peak_mem_bytes") or 0) - (r.get("mem_before_call_bytes") or 0))
    if ours_growth:
        k = ours_growth[-1][1]
        lines.append(f"| ours bf16 activation memory grows linearly with pixels (exponent ≤ 1.2, "
                     f"{ours_growth[-1][0]}) | {k:.2f} | {_check(k <= 1.2)} |")

    # growth exponents
    lines += ["", "## Growth with pixels (batch 1)", "",
              "k in cost ∝ pixels^k between consecutive sizes (1 = linear, 2 = quadratic); memory k uses the "
              "activations (peak − resident before the call).", ""]
    for method in METHODS:
        for dtype in DTYPES:
            recs = [r for r in records if r["method"] == method and r["dtype"] == dtype]
            t = _exponent(recs, lambda r: r["ms_per_image"])
            m = _exponent(recs, lambda r: (r.get("peak_mem_bytes") or 0) - (r.get("mem_before_call_bytes") or 0))
            if t or m:
                lines.append(f"- {method}, {dtype}: time " + ", ".join(f"{s} {k:.2f}" for s, k in t)
                             + ("; memory " + ", ".join(f"{s} {k:.2f}" for s, k in m) if m else ""))
    return "\n".join(lines) + "\n"


def plot(records: list[dict], anchors: dict | None, path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for method in METHODS:
        for dtype in DTYPES:
            pts = sorted((r["resolution"], r["ms_per_image"], r.get("peak_mem_bytes")) for r in records
                         if r["method"] == method and r["dtype"] == dtype and r["batch"] == 1
                         and r.get("ms_per_image") is not None)
            if not pts:
                continue
            label, style = f"{method}, {dtype}", "o-" if dtype == "fp32" else "s:"
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
            mem = [(p[0], p[2] / GIB) for p in pts if p[2]]
            if mem:
                axes[1].plot([p[0] for p in mem], [p[1] for p in mem], style, label=label)
    if anchors:
        for (what, dt), label in ANCHOR_ROWS.items():
            pts = sorted((k[2], r["ms_per_image"], r.get("peak_mem_bytes")) for k, r in anchors.items()
                         if k != "_gpu" and k[0] == what and k[1] == dt and k[3] == 1)
            if dt != "fp32" or not pts:
                continue
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "--", color="grey" if "test" in what else "black",
                         label=f"anchor: {label}")
            mem = [(p[0], p[2] / GIB) for p in pts if p[2]]
            axes[1].plot([p[0] for p in mem], [p[1] for p in mem], "--", color="grey" if "test" in what else "black",
                         label=f"anchor: {label}")
    sides = sorted({r["resolution"] for r in records if r["batch"] == 1})
    for ax, ylabel in zip(axes, ("ms per image", "peak memory (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sides, [str(x) for x in sides])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("resolution (side, pixels), batch 1")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot: {path}"


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="out/efficiency")
    ap.add_argument("--runs", type=int, default=20, help="timed calls per case (median)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--resolutions", default="256,512,1024,2048,4096", help="comma-separated sides, batch 1")
    ap.add_argument("--batch-res", type=int, default=512, help="side of the large-batch case")
    ap.add_argument("--big-batch", type=int, default=16, help="batch of the large-batch case (1: none)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    ap.add_argument("--dtypes", default="bf16,fp32", help="dtypes of ours and ours-reference-scan")
    ap.add_argument("--attn-heads", type=int, default=8, help="heads of the cross-attention fusion")
    ap.add_argument("--time-budget", type=float, default=360.0, help="seconds; later cases are skipped after it")
    ap.add_argument("--anchors", default=str(DEFAULT_ANCHORS), help="the anchors JSON (ratios; skipped if absent)")
    ap.add_argument("--quick", action="store_true", help="smoke test: resolution 64, batch 2, 2 runs")
    ap.add_argument("--tiny", action="store_true", help="tiny model config (smoke tests only)")
    ap.add_argument("--commit", default=None, help="git commit to record (default: git rev-parse HEAD)")
    ap.add_argument("--from-json", default=None, metavar="JSON",
                    help="measure nothing: rebuild efficiency.md/.png under --out from an efficiency.json")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        ap.error(f"--methods must be among {', '.join(METHODS)}; got {', '.join(bad)}")
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if any(d not in DTYPES for d in args.dtypes):
        ap.error(f"--dtypes must be among {', '.join(DTYPES)}; got {args.dtypes}")
    if args.quick:
        args.resolutions, args.runs, args.warmup, args.batch_res, args.big_batch = "64", 2, 1, 64, 2
    args.resolutions = sorted({int(r) for r in args.resolutions.split(",") if r.strip()})
    if any(r % 8 or r < 16 for r in args.resolutions + [args.batch_res]):
        ap.error("--resolutions and --batch-res must be multiples of 8, at least 16")
    if args.runs < 1 or args.warmup < 1:
        ap.error("--runs and --warmup must be at least 1")
    return args


def report(args, head: dict, records: list[dict], anchors: dict | None, out: Path) -> None:
    """Write efficiency.md and efficiency.png under `out` and print the Markdown."""
    md = markdown(head, records, args, anchors)
    (out / "efficiency.md").write_text(md)
    try:
        print(plot(records, anchors, out / "efficiency.png"), flush=True)
    except Exception as e:  # a failed plot never loses the numbers
        print(f"plot failed: {type(e).__name__}: {e}", flush=True)
    print(f"wrote {out / 'efficiency.md'}\n", flush=True)
    print(md, flush=True)


def rebuild(args) -> int:
    """--from-json: the report of an earlier run (e.g. to add the anchors' ratios on another machine)."""
    data = json.loads(Path(args.from_json).read_text())
    head, records = data[0]["header"], data[1:]
    args.resolutions = sorted({r["resolution"] for r in records if r["batch"] == 1})
    big = next(((r["resolution"], r["batch"]) for r in records if r["batch"] > 1), None)
    args.batch_res, args.big_batch = big if big else (args.batch_res, 1)
    args.attn_heads = head.get("attn_heads", args.attn_heads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report(args, head, records, load_anchors(Path(args.anchors)), out)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rebuild(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda but no CUDA device is visible (use --device cpu for a smoke test)", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False   # full fp32 matmuls; cuDNN keeps its default (TF32 on)
    torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, device)
    head = header(args, device, ctx.cfg)
    anchors = load_anchors(Path(args.anchors))
    print(f"{head['gpu'] or head['device']} | torch {head['torch']} | triton {head['triton']} | "
          f"commit {head['git_commit'][:12]} | anchors {'found' if anchors else 'not found'}", flush=True)

    records: list[dict] = []
    start = time.perf_counter()
    failed: set = set()

    def save():
        common.write_json(out / "efficiency.json", [{"header": head}] + records)

    for case in plan(args):
        elapsed = time.perf_counter() - start
        tag = f"{case['method']} {case['dtype']} {case['resolution']} batch {case['batch']}"
        series = (case["method"], case["dtype"], case["batch"])
        if not case.get("skipped") and series in failed:
            case["skipped"] = "out of memory at a smaller resolution"
        if not case.get("skipped") and elapsed > args.time_budget:
            case["skipped"] = f"time budget of {args.time_budget:.0f} s spent"
        if case.get("skipped"):
            rec = dict(case, ms_per_image=None, peak_mem_bytes=None)
            print(f"[{elapsed:6.1f} s] {tag}: skipped ({case['skipped']})", flush=True)
        else:
            rec = run_case(ctx, case, args)
            if rec.get("oom"):
                failed.add(series)
            if rec.get("error"):
                msg = rec["error"][:160]
            else:
                mem = f", {rec['peak_mem_bytes'] / GIB:.2f} GiB" if rec["peak_mem_bytes"] is not None else ""
                msg = f"{rec['ms_per_image']:.2f} ms/image{mem} ({rec['n_runs']} runs)"
            print(f"[{time.perf_counter() - start:6.1f} s] {tag}: {msg}", flush=True)
        records.append(rec)
        save()
    ctx.keep_only([])

    head["total_seconds"] = round(time.perf_counter() - start, 1)
    save()
    print(f"wrote {out / 'efficiency.json'}; {head['total_seconds']} s", flush=True)
    report(args, head, records, anchors, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
