"""The fused step-size projection (softplus(dt_low @ W^T + bias)) and `selective_scan_2d_proj`, which hands
its result to the Triton scan, compute what the plain PyTorch definitions compute.

Without CUDA the kernels run in Triton's CPU interpreter on tiny shapes; `gpu` tests need a CUDA device.
"""

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # only effective if set before triton's first import

triton = pytest.importorskip("triton")

from _compare import rel_err  # noqa: E402
from mambast.ops import selective_scan_2d_proj, triton_delta  # noqa: E402
from mambast.ops.scan_ref import selective_scan_2d_ref  # noqa: E402
from mambast.ops.triton_delta import delta_softplus_ref, delta_softplus_triton  # noqa: E402
from mambast.ops.triton_scan import (  # noqa: E402
    FEW_SEQUENCES_CONFIG, GIVEN_STEPS_CONFIG, ONE_IMAGE_CONFIG, ScanKernelConfig, default_config,
    selective_scan_2d_triton)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if os.environ.get("TRITON_INTERPRET", "0") == "1":
    from triton.runtime.interpreter import InterpretedFunction
    if not isinstance(triton_delta._delta_kernel, InterpretedFunction):
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set: set it in the environment "
                    "(or in tests/conftest.py) to run these tests without CUDA", allow_module_level=True)
SMALL = ScanKernelConfig(chunk=4, tile_fwd=2, block_d_fwd=8, lanes_fwd=2, block_d_bwd=8)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def projection(Bt, L, Dm, R, N, seed, dtype=torch.float32):
    """dt_low as the layer slices it out of the per-order projection (strided), the weight and the bias."""
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(Bt, L, 4, R + 2 * N, generator=g) * 2.0
    low = proj.to(device=DEVICE, dtype=dtype).permute(0, 2, 1, 3)[..., :R]      # [Bt, 4, L, R]
    w = (torch.randn(4, Dm, R, generator=g) * R ** -0.5).to(device=DEVICE, dtype=dtype)
    bias = (torch.randn(4, Dm, generator=g) * 2.0 - 2.0).to(DEVICE)
    return low, w, bias


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("block", [(16, 16, 1), (64, 128, 4)])
def test_projection_with_softplus_matches_reference(dtype, tol, block):
    low, w, bias = projection(2, 37, 40, 6, 3, seed=1, dtype=dtype)   # ragged blocks of positions and channels
    got = delta_softplus_triton(low, w, bias, block=block)
    want = delta_softplus_ref(low, w, bias)
    assert got.shape == want.shape and got.dtype == dtype
    assert rel_err(got, want) < tol      # one rounding of the result to dtype


def test_softplus_polynomial_is_accurate_over_the_whole_range():
    """Relative error of the kernel's softplus (one exp2 and a polynomial) against torch's, from deep in the
    exponential tail to where softplus(x) = x. Below x = -20 the rounding of exp2's argument x log2(e) dominates
    (relative error ~6e-8 |x|, as in the scan's own softplus)."""
    x = torch.cat([torch.linspace(-60, 40, 1999), torch.tensor([0.0, -1e-3, 1e-3, 16.9, 17.1])]).to(DEVICE)
    low = x.view(1, 1, -1, 1).expand(1, 4, -1, 1)              # R = 1, weight 1, bias 0: dt = softplus(x)
    w = torch.ones(4, 1, 1, device=DEVICE)
    got = delta_softplus_triton(low, w, torch.zeros(4, 1, device=DEVICE))[0, :, :, 0]
    want = F.softplus(x.double()).expand(4, -1)
    bound = torch.where(x >= -20, 1e-6, 1e-7 * x.abs()).double()
    assert ((got.double() - want).abs() / want <= bound).all()


@pytest.mark.parametrize("dtype,mantissa", [(torch.bfloat16, 7), (torch.float16, 10)])
def test_softplus_16_bit_results_are_within_one_ulp(dtype, mantissa):
    """16-bit step sizes (the degree-5 polynomial, then one rounding): each within one unit in the last place of
    the float64 softplus (fp16's subnormals: their fixed spacing 2^-24), x exact in the dtype."""
    x = torch.cat([torch.linspace(-30, 30, 2001), torch.tensor([0.0, -1e-3, 1e-3])]).to(dtype).unique().to(DEVICE)
    low = x.view(1, 1, -1, 1).expand(1, 4, -1, 1)
    got = delta_softplus_triton(low, torch.ones(4, 1, 1, device=DEVICE, dtype=dtype), torch.zeros(4, 1, device=DEVICE))
    want = F.softplus(x.double())
    ulp = want.abs() * 2.0 ** -mantissa + (2.0 ** -24 if dtype == torch.float16 else 0.0)
    assert got.dtype == dtype
    assert ((got[0, :, :, 0].double() - want).abs() <= ulp).all()


def test_bad_arguments_raise():
    low, w, bias = projection(1, 5, 8, 4, 2, seed=2)
    with pytest.raises(ValueError, match="weight"):
        delta_softplus_triton(low, w[:, :, :3], bias)
    with pytest.raises(ValueError, match="bias"):
        delta_softplus_triton(low, w, bias[:, :5])
    with pytest.raises(TypeError, match="dt_low"):
        delta_softplus_triton(low.double(), w, bias)
    with pytest.raises(ValueError, match="block"):
        delta_softplus_triton(low, w, bias, block=(8, 64, 4))
    big = low.new_empty(1, 1, 1, 4).expand(1, 4, 2 ** 21, 4)          # 2^21 positions x 1024 channels: no memory
    with pytest.raises(ValueError, match="too large"):
        delta_softplus_triton(big, w.new_empty(1, 1, 4).expand(4, 1024, 4), bias.new_empty(1, 1).expand(4, 1024))


def scan_inputs(Bt, Dm, N, H, W, R, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    L = H * W
    low, w, bias = projection(Bt, L, Dm, R, N, seed, dtype)
    u = torch.randn(Bt, L, Dm, generator=g)
    A = -torch.rand(4, Dm, N, generator=g) * 3.0 - 0.05
    B, C = torch.randn(Bt, 4, L, N, generator=g), torch.randn(Bt, 4, L, N, generator=g)
    D = torch.randn(4, Dm, generator=g)
    u, B, C = (t.to(device=DEVICE, dtype=dtype) for t in (u, B, C))
    return u, low, w, A.to(DEVICE), B, C, D.to(DEVICE), bias


@pytest.mark.parametrize("config", [SMALL, GIVEN_STEPS_CONFIG, ONE_IMAGE_CONFIG], ids=["small", "given", "one-image"])
def test_scan_takes_finished_step_sizes(config):
    """delta_softplus=False: the scan uses delta + delta_bias as the step sizes (no softplus)."""
    Bt, Dm, N, H, W = 2, 10, 4, 3, 5
    u, low, w, A, B, C, D, bias = scan_inputs(Bt, Dm, N, H, W, 3, seed=3)
    delta = low @ w.transpose(1, 2)
    want = selective_scan_2d_ref(u, delta, A, B, C, D, bias, H, W)
    half = bias / 2                                             # the rest of the bias still added by the scan
    dt = F.softplus(delta + bias[None, :, None, :]) - half[None, :, None, :]
    with torch.no_grad():
        got = selective_scan_2d_triton(u, dt, A, B, C, D, half, H, W, config=config, delta_softplus=False)
    assert rel_err(got, want) < 1e-5
    with pytest.raises(ValueError, match="without gradients"):
        selective_scan_2d_triton(u.requires_grad_(), dt, A, B, C, D, half, H, W, delta_softplus=False)


@pytest.mark.parametrize("shape", [(2, 10, 4, 3, 5, 3), (1, 9, 3, 6, 1, 2)])
def test_scan_with_projected_step_sizes_matches_reference(shape, monkeypatch):
    """16-bit step sizes without gradients: the fused projection feeds the scan (its result rounded to bf16 once,
    after the softplus). float32 ones, or with gradients: a matmul, and the scan applies the softplus (autograd
    runs through it). All match the reference on delta = dt_low @ W^T."""
    Bt, Dm, N, H, W, R = shape
    xs = list(scan_inputs(Bt, Dm, N, H, W, R, seed=sum(shape)))
    u, low, w, A, B, C, D, bias = xs
    want = selective_scan_2d_ref(u, low @ w.transpose(1, 2), A, B, C, D, bias, H, W)
    calls = []
    fused = triton_delta.delta_softplus_triton
    monkeypatch.setattr(triton_delta, "delta_softplus_triton", lambda *a, **k: calls.append(1) or fused(*a, **k))
    with torch.no_grad():
        assert rel_err(selective_scan_2d_proj(*xs, H, W, impl="triton"), want) < 1e-5
        assert calls == []                                     # float32: no fused projection
        low16 = xs[1:3] = [low.bfloat16(), w.bfloat16()]
        want16 = selective_scan_2d_ref(u, low16[0].float() @ low16[1].float().transpose(1, 2), A, B, C, D, bias, H, W)
        assert rel_err(selective_scan_2d_proj(*xs, H, W, impl="triton"), want16) < 1e-2
        assert calls == [1]
    u.requires_grad_()
    y = selective_scan_2d_proj(*xs, H, W, impl="triton")
    assert calls == [1] and rel_err(y, want16) < 1e-2
    (du,) = torch.autograd.grad(y.sum(), [u])
    assert torch.isfinite(du).all()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("Bt", [1, 2, 4])
def test_gpu_model_sized_projection_and_scan(Bt):
    """The layer's sizes (Dm 1024, rank 32, N 16) in bf16, at batches that take each scan configuration: the
    fused path against the reference on the same rounded inputs (the step sizes rounded to bf16 once, after the
    softplus) and on full-precision ones."""
    assert default_config(Bt, 1024, given_steps=True) in (ONE_IMAGE_CONFIG, FEW_SEQUENCES_CONFIG, GIVEN_STEPS_CONFIG)
    Dm, N, H, W, R = 1024, 16, 24, 20, 32
    xs = scan_inputs(Bt, Dm, N, H, W, R, seed=7)
    low_xs = [x.bfloat16() if i in (0, 1, 2, 4, 5) else x for i, x in enumerate(xs)]
    with torch.no_grad():
        got = selective_scan_2d_proj(*low_xs, H, W)
        for block in ((64, 128, 4), (128, 64, 8), (32, 256, 4)):
            u, low, w, A, B, C, D, bias = low_xs
            assert rel_err(delta_softplus_triton(low, w, bias, block=block), delta_softplus_ref(low, w, bias)) < 1e-2
    u, low, w, A, B, C, D, bias = low_xs
    want_low = selective_scan_2d_ref(u, low.float() @ w.float().transpose(1, 2), A, B, C, D, bias, H, W)
    u, low, w, A, B, C, D, bias = xs
    want = selective_scan_2d_ref(u, low @ w.transpose(1, 2), A, B, C, D, bias, H, W)
    assert rel_err(got, want_low) < 1e-2
    assert rel_err(got, want) < 2e-2
