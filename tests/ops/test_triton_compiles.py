"""The fused scan kernels compile for Hopper (sm_90) in every shipped configuration, without a GPU.

The interpreter tests check what the kernels compute; this checks that Triton's compiler (its own ptxas, shipped
with the wheel) still accepts them, so a kernel change that only a GPU would reject fails here. It compiles in a
subprocess because the test session runs Triton in interpreter mode (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

CONFIG_NAMES = ("DEFAULT_CONFIG", "FEW_SEQUENCES_CONFIG", "ONE_IMAGE_CONFIG", "GIVEN_STEPS_CONFIG", "TRAINING_CONFIG")


def _signature(kernel, constexprs: dict, dtype: str) -> dict:
    return {name: "constexpr" if name in constexprs else
            ("*fp32" if name in ("out_ptr", "out2_ptr", "states_ptr", "seg_ptr", "du_ptr", "dB_ptr", "dC_ptr", "dA_ptr", "dD_ptr",
                                 "dbias_ptr", "A2_ptr", "D_ptr", "bias_ptr", "gy_ptr") else f"*{dtype}")
            if name.endswith("_ptr") else "i32"
            for name in inspect.signature(kernel.fn).parameters}


def compile_all() -> list[str]:
    """Compile every kernel launch the shipped configurations make (forward with and without saved states, the
    summary launch of split orders, the backward), for float32 and bfloat16 inputs; returns what was compiled."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from mambast.ops import triton_scan as ts
    target, done = GPUTarget("cuda", 90, 32), []
    for name in CONFIG_NAMES:
        cfg = getattr(ts, name)
        launches = [(False, False, cfg.segments_fwd), (True, False, 1)]
        if cfg.segments_fwd > 1:
            launches.append((False, True, cfg.segments_fwd))
        for dtype in ("fp32", "bf16"):
            for store, summary, segments in launches:
                const = dict(TILE=cfg.tile_fwd, BLOCK_D=cfg.block_d_fwd, BLOCK_N=16, N_LANES=min(cfg.lanes_fwd, 16),
                             STORE_STATES=store, STATE_EVERY=cfg.chunk // cfg.tile_fwd, SEGMENTS=segments,
                             SUMMARY=summary, SOFTPLUS=True, FMA_DECAYS=cfg.fma_decays_fwd)
                source = ASTSource(ts._scan_fwd_kernel, _signature(ts._scan_fwd_kernel, const, dtype), const)
                triton.compile(source, target=target, options={"num_warps": cfg.warps_fwd})
                done.append(f"forward {name} {dtype} states={store} summary={summary}")
            kernel = ts._scan_bwd_kernel if cfg.lanes_bwd else ts._scan_bwd_kernel_3d
            const = dict(CHUNK=cfg.chunk, BLOCK_D=cfg.block_d_bwd, BLOCK_N=16)
            if cfg.lanes_bwd:
                const["N_LANES"] = cfg.lanes_bwd
            triton.compile(ASTSource(kernel, _signature(kernel, const, dtype), const), target=target,
                           options={"num_warps": cfg.warps_bwd})
            done.append(f"backward {name} {dtype} lanes_bwd={cfg.lanes_bwd}")
    return done


def test_scan_kernels_compile_for_hopper(tmp_path):
    pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
    except ImportError:
        pytest.skip("this Triton has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)            # compile afresh, not from an earlier run's cache
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    compiled = done.stdout.splitlines()
    for name in CONFIG_NAMES:
        for dtype in ("fp32", "bf16"):
            assert sum(line.startswith(f"forward {name} {dtype} ") for line in compiled) >= 2, (name, dtype)
            assert sum(line.startswith(f"backward {name} {dtype} ") for line in compiled) == 1, (name, dtype)


if __name__ == "__main__":    # the subprocess: compiled, not interpreted
    print("\n".join(compile_all()))
