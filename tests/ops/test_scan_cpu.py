"""The fused CPU selective scan computes `selective_scan_2d_ref` (forward only) on fresh random inputs."""

import math
import sys

import pytest
import torch

pytest.importorskip("numba")

import mambast.ops.scan_cpu as scan_cpu  # noqa: E402
from mambast.ops.scan_ref import selective_scan_2d_ref  # noqa: E402

selective_scan_2d_cpu = scan_cpu.selective_scan_2d_cpu
TOL = 1e-6   # relative, float32 rounding level (measured ~2e-7); the model's parity check needs about this
SHAPES = [  # (Bt, Dm, N, H, W)
    (1, 16, 16, 4, 4),
    (2, 48, 4, 3, 5),     # batch > 1, several channel blocks, H != W
    (1, 20, 3, 1, 7),     # H = 1, Dm not a multiple of 16, N odd
    (2, 8, 16, 6, 1),     # W = 1, Dm below one block
    (1, 35, 5, 7, 4),
]


def make_inputs(Bt, Dm, N, H, W, seed, dtype=torch.float32):
    """Model-like inputs: softplus(delta + delta_bias) log-uniform in [1e-3, 2], A in [-16, -0.5]."""
    g = torch.Generator().manual_seed(seed)
    L = H * W
    bias = 0.5 * torch.randn(4, Dm, generator=g)
    dt = torch.exp(torch.empty(Bt, 4, L, Dm).uniform_(math.log(1e-3), math.log(2.0), generator=g))
    delta = torch.log(torch.expm1(dt)) - bias[None, :, None, :]          # inverse softplus
    ts = dict(u=torch.randn(Bt, L, Dm, generator=g), delta=delta,
              A=-torch.empty(4, Dm, N).uniform_(0.5, 16.0, generator=g),
              B=torch.randn(Bt, 4, L, N, generator=g), C=torch.randn(Bt, 4, L, N, generator=g),
              D=torch.randn(4, Dm, generator=g), delta_bias=bias)
    return {k: v.to(dtype) for k, v in ts.items()}


def rel_err(y, ref):
    return ((y.double() - ref.double()).norm() / ref.double().norm()).item()


def test_the_fused_kernel_is_available():
    assert scan_cpu.kernel_available()


def test_keeps_torch_thread_count():
    """numba's first parallel call resets the OpenMP thread count shared with torch: it must be restored."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        x = make_inputs(1, 32, 4, 3, 4, seed=12)
        y = selective_scan_2d_cpu(**x, H=3, W=4)
        assert torch.get_num_threads() == 1
        assert rel_err(y, selective_scan_2d_ref(**x, H=3, W=4)) < TOL
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "Bt{}-Dm{}-N{}-{}x{}".format(*s))
def test_matches_reference_float32(shape):
    Bt, Dm, N, H, W = shape
    for seed in range(2):
        x = make_inputs(*shape, seed=seed)
        y = selective_scan_2d_cpu(**x, H=H, W=W)
        ref = selective_scan_2d_ref(**x, H=H, W=W)
        assert y.shape == (Bt, H * W, Dm) and y.dtype == torch.float32 and y.is_contiguous()
        assert rel_err(y, ref) < TOL


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    x = make_inputs(2, 32, 8, 5, 6, seed=3, dtype=dtype)
    y = selective_scan_2d_cpu(**x, H=5, W=6)
    assert y.dtype == torch.float32
    assert rel_err(y, selective_scan_2d_ref(**x, H=5, W=6)) < TOL


def test_long_memory_and_single_position():
    """Tiny decay (memory over the whole sequence), and a 1 x 1 grid."""
    x = make_inputs(1, 32, 16, 16, 12, seed=4)
    x["delta"] = x["delta"] - 6.0                  # dt down to ~1e-5
    x["A"] = x["A"] / 32.0
    assert rel_err(selective_scan_2d_cpu(**x, H=16, W=12), selective_scan_2d_ref(**x, H=16, W=12)) < TOL
    x = make_inputs(3, 16, 4, 1, 1, seed=5)
    assert rel_err(selective_scan_2d_cpu(**x, H=1, W=1), selective_scan_2d_ref(**x, H=1, W=1)) < TOL


def test_extreme_values_stay_finite_and_match():
    """dt * A far below the float32 exp range must decay to 0 (no NaN/inf); huge and tiny dt, A = 0."""
    x = make_inputs(1, 32, 16, 6, 5, seed=6)
    g = torch.Generator().manual_seed(7)
    pick = torch.rand(x["delta"].shape, generator=g)
    x["delta"] = torch.where(pick < 0.2, torch.full_like(x["delta"], 80.0), x["delta"])     # dt = 80
    x["delta"] = torch.where(pick > 0.9, torch.full_like(x["delta"], -120.0), x["delta"])   # dt ~ 1e-52
    x["A"][:, :, 0] = -1e4
    x["A"][:, 3, :] = 0.0
    y = selective_scan_2d_cpu(**x, H=6, W=5)
    assert torch.isfinite(y).all()
    assert rel_err(y, selective_scan_2d_ref(**x, H=6, W=5)) < TOL


def test_positive_A_falls_back_to_the_reference():
    x = make_inputs(1, 16, 4, 3, 3, seed=8)
    x["A"] = x["A"].abs() * 0.1
    torch.testing.assert_close(selective_scan_2d_cpu(**x, H=3, W=3), selective_scan_2d_ref(**x, H=3, W=3))


def test_gradients_match_autograd_through_the_reference():
    """In grad mode the forward is the kernel's and every gradient the reference's (recomputed in the backward)."""
    x = make_inputs(2, 16, 4, 3, 2, seed=9)
    names = [k for k in x if isinstance(x[k], torch.Tensor)]
    gy = torch.randn(2, 6, 16)

    def run(fn):
        xs = {k: (v.detach().clone().requires_grad_(k != "D") if k in names else v) for k, v in x.items()}
        y = fn(**xs, H=3, W=2)
        y.backward(gy)
        return y, {k: xs[k].grad for k in names}

    y, got = run(selective_scan_2d_cpu)
    y_ref, want = run(selective_scan_2d_ref)
    assert y.requires_grad and rel_err(y.detach(), y_ref.detach()) < TOL
    assert got["D"] is None
    for k in names:
        if k != "D":
            assert rel_err(got[k], want[k]) < 1e-5, k


def test_grad_mode_forward_runs_the_kernel(monkeypatch):
    """A forward in grad mode must not fall back to the slow reference (only the backward uses it)."""
    from mambast.ops import scan_cpu
    x = make_inputs(1, 16, 4, 2, 2, seed=11)
    x["delta"].requires_grad_(True)
    calls = []
    monkeypatch.setattr(scan_cpu, "selective_scan_2d_ref", lambda *a, **k: calls.append(a))
    assert scan_cpu.kernel_available()          # numba is a dependency
    y = scan_cpu.selective_scan_2d_cpu(**x, H=2, W=2)
    assert y.requires_grad and not calls


def test_rejects_mismatched_shapes():
    x = make_inputs(1, 16, 4, 2, 3, seed=10)
    with pytest.raises(ValueError, match="H \\* W"):
        selective_scan_2d_cpu(**x, H=3, W=3)
    x["B"] = x["B"][..., :3]
    with pytest.raises(ValueError, match="B must have shape"):
        selective_scan_2d_cpu(**x, H=2, W=3)


def test_without_numba_falls_back_to_the_reference_with_a_warning(monkeypatch):
    monkeypatch.setattr(scan_cpu, "_kernel", None)
    monkeypatch.setitem(sys.modules, "numba", None)            # makes `import numba` fail
    x = make_inputs(1, 16, 4, 2, 2, seed=11)
    with pytest.warns(RuntimeWarning, match="numba is not installed"):
        y = selective_scan_2d_cpu(**x, H=2, W=2)
    torch.testing.assert_close(y, selective_scan_2d_ref(**x, H=2, W=2))


@pytest.mark.parametrize("positive_A", [False, True], ids=["kernel", "reference-fallback"])
def test_operator_agrees_with_its_fake(positive_A):
    """The scan is a custom operator for torch.compile: its real and fake (shape-only) results must agree."""
    x = make_inputs(2, 20, 4, 3, 5, seed=11)
    if positive_A:
        x["A"] = x["A"].abs()
    args = tuple(x[k] for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")) + (3, 5)
    torch.library.opcheck(torch.ops.mambast.selective_scan_2d_cpu.default, args,
                          test_utils=("test_schema", "test_faketensor"))


def test_second_derivative_is_refused_explicitly():
    """The backward recomputes through the reference without keeping a graph: a second derivative must fail
    loudly, not give silently wrong values."""
    x = make_inputs(1, 16, 4, 2, 2, seed=12)
    u = x["u"].clone().requires_grad_(True)
    y = selective_scan_2d_cpu(**{**x, "u": u}, H=2, W=2)
    (g,) = torch.autograd.grad(y.sum(), u, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice|does not require grad"):
        g.sum().backward()
