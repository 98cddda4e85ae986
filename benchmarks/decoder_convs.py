"""The CNN decoder's 3x3 convolutions alone at 512² batch 16, bf16 (CUDA machine, repo root): cuDNN in NCHW and in
channels_last, with and without `torch.backends.cudnn.benchmark`; the last one (64 -> 3 channels) also with its
output channels padded to 4, 8 or 16 with zero filters. Inputs are the padded activations the model feeds them.

    python benchmarks/decoder_convs.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton.testing

BATCH = 16
SHAPES = [(512, 256, 64), (256, 256, 128), (256, 128, 128), (128, 128, 256), (128, 64, 256), (64, 64, 512),
          (64, 3, 512)]   # (in channels, out channels, side): the decoder's convolutions at 512² (one per shape)


def _ms(f):
    f()
    return triton.testing.do_bench(f, warmup=10, rep=100, return_mode="median")


def main() -> None:
    cl = torch.channels_last
    for benchmark in (False, True):
        torch.backends.cudnn.benchmark = benchmark
        for cin, cout, side in SHAPES:
            x = torch.randn(BATCH, cin, side + 2, side + 2, device="cuda", dtype=torch.bfloat16)
            w = torch.randn(cout, cin, 3, 3, device="cuda", dtype=torch.bfloat16)
            xl, wl = x.contiguous(memory_format=cl), w.contiguous(memory_format=cl)
            nchw, nhwc = _ms(lambda: F.conv2d(x, w)), _ms(lambda: F.conv2d(xl, wl))
            tflops = 2 * BATCH * side * side * cin * cout * 9 / nhwc / 1e9
            line = (f"cudnn.benchmark {benchmark}: {cin} -> {cout} at {side}²: NCHW {nchw:.3f} ms, channels_last "
                    f"{nhwc:.3f} ms ({tflops:.0f} TFLOP/s)")
            if cout < 8:
                for pad in (4, 8, 16):
                    wp = torch.zeros(pad, cin, 3, 3, device="cuda", dtype=torch.bfloat16)
                    wp[:cout] = w
                    wpl = wp.contiguous(memory_format=cl)
                    line += (f"; padded to {pad}: NCHW {_ms(lambda: F.conv2d(x, wp)[:, :cout]):.3f}, channels_last "
                             f"{_ms(lambda: F.conv2d(xl, wpl)[:, :cout]):.3f}")
            print(line, flush=True)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        raise SystemExit(__doc__)
    main()
