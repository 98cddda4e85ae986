"""Compile the fused scan's forward kernel for an H100/H200 (sm_90) without a GPU: registers, spilled bytes
and the SASS instruction mix of each configuration, to iterate on the kernel on any machine.

    python benchmarks/scan_sass.py                        # the default configurations
    python benchmarks/scan_sass.py 32,32,4,4 8,128,1,4,1  # tile,channels,lanes,warps[,fma_decays] ...
    python benchmarks/scan_sass.py --ir                   # also the layout conversions of the Triton GPU IR

Arguments are specialised as a launch at 512² batch 16 (L = 4096, Dm = 1024, N = 16, bf16 inputs) would
specialise them: unit strides become constants, values divisible by 16 are marked so. The counts are per
program, prologue included (a loop turn is one tile of TILE steps x BLOCK_D channels). Registers and spills
agree with what the GPU reports for the same configuration on an H200 (255 registers and 4 spilled for
DEFAULT_CONFIG, 166 for FEW_SEQUENCES_CONFIG). Uses the ptxas, cuobjdump and nvdisasm bundled with Triton.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.pop("TRITON_INTERPRET", None)         # compile for the GPU, not for the CPU interpreter

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from mambast.ops import triton_scan as ts  # noqa: E402

BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
SHAPE = dict(Bt=16, L=4096, Dm=1024, N=16, H=64, W=64)


def compile_forward(tile: int, block_d: int, lanes: int, warps: int, dtype: str = "bf16", softplus: bool = False,
                    fma_decays: int = 0):
    fn = ts._scan_fwd_kernel
    names = fn.arg_names
    L, Dm, N, H, W = (SHAPE[k] for k in ("L", "Dm", "N", "H", "W"))
    ptrs = {"u_ptr": dtype, "delta_ptr": dtype, "B_ptr": dtype, "C_ptr": dtype}
    const = dict(TILE=tile, BLOCK_D=block_d, BLOCK_N=triton.next_power_of_2(N), N_LANES=lanes, STORE_STATES=False,
                 STATE_EVERY=1, SEGMENTS=1, SUMMARY=False, SOFTPLUS=softplus, FMA_DECAYS=fma_decays)
    ints = dict(L=L, H=H, W=W, Dm=Dm, N=N, n_tiles=triton.cdiv(L, tile), n_chunks=triton.cdiv(L, 16),
                su_b=L * Dm, su_l=Dm, su_d=1, sd_b=4 * L * Dm, sd_k=L * Dm, sd_l=Dm, sd_d=1,
                sB_b=4 * L * N, sB_k=L * N, sB_l=N, sB_n=1, sC_b=4 * L * N, sC_k=L * N, sC_l=N, sC_n=1)
    sig, attrs = {}, {}
    for i, n in enumerate(names):
        if n.endswith("_ptr"):
            sig[n] = "*" + ptrs.get(n, "fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif n in const:
            sig[n] = "constexpr"
        elif ints[n] == 1:                       # Triton specialises integer arguments equal to 1
            sig[n], const[n] = "constexpr", 1
        else:
            sig[n] = "i32"
            if ints[n] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in const.items()}, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})


def _tool(name: str, args: list[str], cubin: bytes) -> str:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "k.cubin"
        path.write_bytes(cubin)
        return subprocess.run([str(BIN / name), *args, str(path)], capture_output=True, text=True,
                              check=True).stdout


def resources(kernel) -> dict:
    out = _tool("cuobjdump", ["-res-usage"], kernel.asm["cubin"])
    return {k.lower(): int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out)}


def instruction_mix(kernel) -> collections.Counter:
    out = _tool("nvdisasm", ["-c"], kernel.asm["cubin"])
    ops = collections.Counter()
    for line in out.splitlines():
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", line)
        if m:
            ops[m.group(1).split(".")[0]] += 1
    return ops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("configs", nargs="*", help="tile,channels,lanes,warps[,fma_decays] (default: the library's "
                                               "defaults)")
    ap.add_argument("--ir", action="store_true", help="print the layout conversions of the Triton GPU IR")
    ap.add_argument("--softplus", action="store_true",
                    help="the scan applies the softplus itself (with gradients); default: it is given the step "
                         "sizes, as inference is")
    args = ap.parse_args(argv)
    if args.configs:
        try:
            configs = [tuple(int(v) for v in c.split(",")) for c in args.configs]
            assert all(len(c) in (4, 5) for c in configs)
        except (ValueError, AssertionError):
            ap.error("each configuration is four or five integers: tile,channels,lanes,warps[,fma_decays]")
    else:
        configs = [(c.tile_fwd, c.block_d_fwd, c.lanes_fwd, c.warps_fwd, c.fma_decays_fwd)
                   for c in (ts.DEFAULT_CONFIG, ts.GIVEN_STEPS_CONFIG, ts.FEW_SEQUENCES_CONFIG, ts.ONE_IMAGE_CONFIG)]
    for tile, block_d, lanes, warps, *fma in configs:
        fma_decays = fma[0] if fma else 0
        k = compile_forward(tile, block_d, lanes, warps, softplus=args.softplus, fma_decays=fma_decays)
        res, ops = resources(k), instruction_mix(k)
        print(f"tile {tile} channels {block_d} lanes {lanes} warps {warps} fma decays {fma_decays}: "
              f"{res.get('reg')} registers, "
              f"{res.get('stack')} bytes of stack (spills), {sum(ops.values())} instructions")
        print("   " + ", ".join(f"{o} {c}" for o, c in ops.most_common(16)))
        if args.ir:
            for line in k.asm["ttgir"].splitlines():
                if "convert_layout" in line:
                    print("   " + line.strip()[:200])
    return 0


if __name__ == "__main__":
    sys.exit(main())
