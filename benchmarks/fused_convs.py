"""The two fused convolution kernels (`mambast/ops/triton_conv.py`) against their PyTorch definitions at 512² batch 16
in bf16, the shapes of the default model (CUDA machine, repo root):

- SS2D's depthwise 3x3 conv + SiLU on [16, 64, 64, 1024] tokens: eager, torch.compile'd, and the Triton kernel
  for a few tile shapes (columns x channels x rows per program, warps), with the bytes of one read and one write
  per second;
- the decoder's output layer (ReLU, reflection pad, 3x3 conv 64 -> 3) on [16, 64, 512, 512]: eager,
  torch.compile'd, Triton.

    python benchmarks/fused_convs.py
"""

from __future__ import annotations

import torch
import triton.testing

from mambast.ops import conv3x3_reflect_ref, dwconv_silu_ref, triton_conv

BATCH, TOKENS, D_INNER, SIDE, C_OUT_LAYER = 16, 64, 1024, 512, 64
# (columns, channels, rows, warps) per program
TILES = [(32, 128, 1, 4), (32, 128, 4, 4), (32, 128, 8, 4), (32, 128, 16, 4), (16, 128, 8, 4), (64, 128, 8, 8),
         (32, 256, 8, 8), (64, 64, 8, 4), (32, 64, 16, 2)]
KNOBS = ("DW_BLOCK_W", "DW_BLOCK_C", "DW_ROWS", "DW_WARPS")


def _ms(f):
    f()
    return triton.testing.do_bench(f, warmup=10, rep=100, return_mode="median")


def main() -> None:
    torch.manual_seed(0)
    dev, bf16 = "cuda", torch.bfloat16
    x = torch.randn(BATCH, TOKENS, TOKENS, D_INNER, device=dev, dtype=bf16)
    w = torch.randn(D_INNER, 1, 3, 3, device=dev, dtype=bf16) / 3
    b = torch.randn(D_INNER, device=dev, dtype=bf16)
    gbytes = 2 * x.numel() * x.element_size() / 1e9
    want = dwconv_silu_ref(x.float(), w.float(), b.float())
    compiled = torch.compile(dwconv_silu_ref)
    eager_ms, compiled_ms = _ms(lambda: dwconv_silu_ref(x, w, b)), _ms(lambda: compiled(x, w, b))
    print(f"depthwise conv + SiLU {tuple(x.shape)} bf16: eager {eager_ms:.3f} ms, compiled {compiled_ms:.3f} ms")
    default = tuple(getattr(triton_conv, k) for k in KNOBS)
    for tile in TILES:
        for k, v in zip(KNOBS, tile):
            setattr(triton_conv, k, v)
        got = triton_conv.dwconv_silu_triton(x, w, b)
        err = ((got.float() - want).abs().max() / want.abs().max()).item()
        ms = _ms(lambda: triton_conv.dwconv_silu_triton(x, w, b))
        mark = " (default)" if tile == default else ""
        print(f"  Triton {tile[0]} columns x {tile[1]} channels x {tile[2]} rows, {tile[3]} warps{mark}: {ms:.3f} ms, "
              f"{gbytes / ms * 1e3:.0f} GB/s, {compiled_ms / ms:.2f}x compiled; max rel err {err:.1e}", flush=True)
    for k, v in zip(KNOBS, default):
        setattr(triton_conv, k, v)

    y = torch.randn(BATCH, C_OUT_LAYER, SIDE, SIDE, device=dev, dtype=bf16).contiguous(
        memory_format=torch.channels_last)
    wo = torch.randn(3, C_OUT_LAYER, 3, 3, device=dev, dtype=bf16) / 24
    bo = torch.randn(3, device=dev, dtype=bf16)
    want = conv3x3_reflect_ref(y.float(), wo.float(), bo.float())
    got = triton_conv.conv3x3_reflect_triton(y, wo, bo)
    err = ((got.float() - want).abs().max() / want.abs().max()).item()
    compiled = torch.compile(conv3x3_reflect_ref)
    eager_ms, compiled_ms = _ms(lambda: conv3x3_reflect_ref(y, wo, bo)), _ms(lambda: compiled(y, wo, bo))
    print(f"output layer ReLU + reflection pad + conv 64 -> 3 {tuple(y.shape)} bf16 channels_last: eager "
          f"{eager_ms:.3f} ms, compiled {compiled_ms:.3f} ms; max rel err {err:.1e}")
    default = triton_conv.BLOCK_P, triton_conv.CONV_ROWS
    for tile in [(128, 1), (128, 4), (128, 8), (128, 16), (64, 8), (256, 8)]:
        triton_conv.BLOCK_P, triton_conv.CONV_ROWS = tile
        ms = _ms(lambda: triton_conv.conv3x3_reflect_triton(y, wo, bo))
        mark = " (default)" if tile == default else ""
        print(f"  Triton {tile[0]} pixels x {tile[1]} rows{mark}: {ms:.3f} ms ({compiled_ms / ms:.2f}x compiled)",
              flush=True)
    triton_conv.BLOCK_P, triton_conv.CONV_ROWS = default


if __name__ == "__main__":
    if not torch.cuda.is_available():
        raise SystemExit(__doc__)
    main()
