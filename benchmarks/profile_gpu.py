"""Where the GPU time of one Mamba-ST forward goes: torch.profiler's CUDA kernel table, grouped by model part.

Usage (CUDA machine, repository root): python benchmarks/profile_gpu.py [--res 512] [--batch 1 16] [--dtype bf16]
[--compile] [--cnn-layouts]
Random weights (speed does not depend on values). Prints, per batch size, the operators and kernels with the
largest own (self) CUDA time and the CUDA time per model part (patch embedding, encoders, Mamba decoder, CNN
decoder; with --compile, as `mambast stylize --compile` runs it: content encoder, style encoder, fusion and
decoding, each through torch.compile); --cnn-layouts also times the CNN decoder alone in NCHW and NHWC
(with --compile also compiled).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import torch

from common import header  # noqa: E402  (benchmarks/common.py; puts the repository on sys.path)
from mambast.config import MambaSTConfig  # noqa: E402
from mambast.inference.precision import cast_autocast_weights  # noqa: E402
from mambast.model import MambaST, draw_permutations  # noqa: E402

PARTS = ("patch_embed", "encoder_c", "encoder_s", "decoder", "cnn_decoder")
COMPILED_PARTS = ("encode_content", "encode_style", "decode")


def profile(model, res: int, batch: int, dtype: torch.dtype | None, rows: int, compiled: dict | None = None) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    c = torch.rand(batch, 3, res, res, device="cuda")
    s = torch.rand(batch, 3, res, res, device="cuda")
    amp = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()

    def forward():
        with amp, torch.inference_mode():
            if compiled:
                with record_function("encode_content"):
                    xc = compiled["encode_content"](c)
                with record_function("encode_style"):
                    xs = compiled["encode_style"](s)
                perms = draw_permutations(model.config.depth_decoder, xs.shape[1] * xs.shape[2])
                with record_function("decode"):
                    return compiled["decode"](xc, xs, perms)
            with record_function("patch_embed"):
                pc, ps = model.patch_embed(c), model.patch_embed(s)
            with record_function("encoder_c"):
                xc = model.encoder_c(pc)
            with record_function("encoder_s"):
                xs = model.encoder_s(ps)
            with record_function("decoder"):
                x = model.decoder(xc, xs, shuffle=True)
            with record_function("cnn_decoder"):
                return model.cnn_decoder(x.permute(0, 3, 1, 2))

    for _ in range(3):
        forward()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            forward()
        torch.cuda.synchronize()
    events = prof.key_averages()
    print(f"\n=== res {res}, batch {batch}, dtype {dtype or 'fp32'}{', compiled' if compiled else ''}: 5 forwards ===")
    print(events.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70))
    # kernels only: the parts' record_function ranges also appear as device events, spanning their kernels
    total = sum(e.self_device_time_total for e in events
                if e.device_type.name == "CUDA" and e.key not in PARTS + COMPILED_PARTS) or 1
    print(f"sum of kernel time per forward: {total / 5 / 1000:.2f} ms ({total / 5 / 1000 / batch:.2f} ms per image)")
    for part in COMPILED_PARTS if compiled else PARTS:
        ev = [e for e in events if e.key == part]
        if ev:
            print(f"  {part:12s} {ev[0].device_time_total / 5 / 1000:8.2f} ms per forward (CUDA)")


def compiled_parts(model) -> dict:
    """The content encoder, the style encoder and decode(xc, xs, perms), each through torch.compile."""
    return {"encode_content": torch.compile(model.encode_content, dynamic=False),
            "encode_style": torch.compile(model.encode_style, dynamic=False),
            "decode": torch.compile(lambda xc, xs, perms: model.decode(xc, xs, shuffle=True, perms=perms),
                                    dynamic=False)}


def cnn_decoder_layouts(model, res: int, batch: int, dtype: torch.dtype | None, compile: bool = False) -> None:
    """The CNN decoder alone, its activations in NCHW (contiguous) and in NHWC (channels_last) memory format;
    compile: each also through torch.compile (inductor fuses padding, upsampling and ReLU around cuDNN's
    convolutions)."""
    import copy

    import triton.testing

    x = torch.randn(batch, model.config.dim, res // model.config.patch_size, res // model.config.patch_size,
                    device="cuda")
    amp = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
    for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        dec = copy.deepcopy(model.cnn_decoder).to(memory_format=fmt)
        xi = x.contiguous(memory_format=fmt)

        if compile:
            torch._dynamo.reset()   # each case compiles the same forward: keep clear of the recompilation limit
        runs = [("eager", dec)] + ([("compiled", torch.compile(dec, dynamic=False))] if compile else [])
        for how, f in runs:
            def run(f=f):
                with amp, torch.inference_mode():
                    return f(xi)

            ms = triton.testing.do_bench(run, warmup=10, rep=200, return_mode="median")
            print(f"cnn decoder alone, res {res}, batch {batch}, {name}, {how}: {ms:.3f} ms "
                  f"({ms / batch:.3f} ms per image)", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--compile", action="store_true", help="profile the parts through torch.compile, as --compile runs")
    ap.add_argument("--cnn-layouts", action="store_true", help="also time the CNN decoder alone in NCHW and NHWC "
                    "(with --compile also compiled)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    print("# " + json.dumps(header("cuda", argv=sys.argv[1:])))
    torch.manual_seed(0)
    model = MambaST(MambaSTConfig()).cuda().eval()
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    compiled = None
    if args.compile:
        if dtype:
            cast_autocast_weights(model, dtype)
        compiled = compiled_parts(model)
    for b in args.batch:
        profile(model, args.res, b, dtype, args.rows, compiled)
        if args.cnn_layouts:
            cnn_decoder_layouts(model, args.res, b, dtype, compile=args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
