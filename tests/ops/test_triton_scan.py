"""The fused Triton selective scan computes `selective_scan_2d_ref` and its gradients.

Without CUDA the kernels run in Triton's CPU interpreter on tiny shapes; `gpu` tests need a CUDA device.
"""

import dataclasses
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # only effective if set before triton's first import

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from _compare import rel_err  # noqa: E402
from mambast.ops import triton_scan  # noqa: E402
from mambast.ops.scan_ref import selective_scan_2d_ref  # noqa: E402
from mambast.ops.triton_scan import (  # noqa: E402
    DEFAULT_CONFIG, FEW_SEQUENCES_CONFIG, GIVEN_STEPS_CONFIG, ONE_IMAGE_CONFIG, TRAINING_CONFIG, ScanKernelConfig,
    default_config,
    selective_scan_2d_triton)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
if INTERPRETED:
    from triton.runtime.interpreter import InterpretedFunction
    if not isinstance(triton_scan._scan_fwd_kernel, InterpretedFunction):
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set: set it in the environment "
                    "(or in tests/conftest.py) to run these tests without CUDA", allow_module_level=True)
# small tiles so that tiny shapes still span several tiles and channel blocks, with ragged ends
SMALL = ScanKernelConfig(chunk=4, tile_fwd=2, block_d_fwd=8, lanes_fwd=2, block_d_bwd=8, lanes_bwd=2)
NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")
SHAPES = [  # (Bt, Dm, N, H, W)
    (2, 6, 4, 3, 5),
    (2, 20, 4, 4, 4),
    (2, 11, 4, 1, 6),
    (1, 9, 3, 6, 1),   # N not a power of two, W = 1
]
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True, scope="module")
def _fast_interpreter_combines():
    """The interpreter evaluates custom associative scans and reductions one element at a time in Python
    (minutes here); this evaluates the same sequential scan / left fold one slice along the axis at a time."""
    interpreter = None
    if INTERPRETED:
        from triton.runtime import interpreter
    if not (hasattr(interpreter, "ScanOps") and hasattr(interpreter, "ReduceOps")):
        yield   # compiled kernels, or an interpreter this was not written for (then only slower)
        return
    import numpy as np

    def combine_slices(self, inputs, axis):
        data = [np.moveaxis(x.handle.data, axis, 0) for x in inputs]
        acc = tuple(self.to_tensor(d[0], x.dtype) for d, x in zip(data, inputs))
        steps = [acc]
        for i in range(1, data[0].shape[0]):
            acc = self.combine_fn.fn(*acc, *(self.to_tensor(d[i], x.dtype) for d, x in zip(data, inputs)))
            acc = acc if isinstance(acc, tuple) else (acc,)
            steps.append(acc)
        return steps

    def generic_scan(self, inputs):
        steps = combine_slices(self, inputs, self.axis)
        return [self.to_tensor(np.moveaxis(np.stack([st[j].handle.data for st in steps]), 0, self.axis), x.dtype)
                for j, x in enumerate(inputs)]

    def generic_reduce(self, inputs):
        if self.axis is None or inputs[0].handle.data.ndim < 2:
            return original_reduce(self, inputs)
        last = combine_slices(self, inputs, self.axis)[-1]
        expand = (lambda a: np.expand_dims(a, self.axis)) if self.keep_dims else (lambda a: a)
        return [self.to_tensor(expand(a.handle.data), x.dtype) for a, x in zip(last, inputs)]

    original_scan, original_reduce = interpreter.ScanOps.generic_scan, interpreter.ReduceOps.generic_reduce
    interpreter.ScanOps.generic_scan, interpreter.ReduceOps.generic_reduce = generic_scan, generic_reduce
    yield
    interpreter.ScanOps.generic_scan, interpreter.ReduceOps.generic_reduce = original_scan, original_reduce


def make_inputs(Bt, Dm, N, H, W, dtype=torch.float32, seed=0):
    """Fresh random scan inputs on DEVICE, shaped as `selective_scan_2d_ref` expects."""
    g = torch.Generator().manual_seed(seed)
    L = H * W
    xs = [
        torch.randn(Bt, L, Dm, generator=g),                          # u
        torch.randn(Bt, 4, L, Dm, generator=g) * 0.7 - 1.0,           # delta (raw)
        -torch.rand(4, Dm, N, generator=g) * 3.0 - 0.05,              # A (negative)
        torch.randn(Bt, 4, L, N, generator=g),                        # B
        torch.randn(Bt, 4, L, N, generator=g),                        # C
        torch.randn(4, Dm, generator=g),                              # D
        torch.randn(4, Dm, generator=g) * 0.5,                        # delta_bias
    ]
    return [x.to(device=DEVICE, dtype=dtype) for x in xs]


def grads(fn, xs, gy):
    xs = [x.detach().requires_grad_() for x in xs]
    y = fn(*xs)
    return y, torch.autograd.grad(y, xs, gy)


def assert_forward_and_backward_match(xs, H, W, config, seed=0):
    """The Triton scan with `config` against autograd through the reference: output and every gradient."""
    torch.manual_seed(seed)
    gy = torch.randn(xs[0].shape[0], H * W, xs[0].shape[2], device=DEVICE)
    y, got = grads(lambda *a: selective_scan_2d_triton(*a, H, W, config=config), xs, gy)
    y_ref, want = grads(lambda *a: selective_scan_2d_ref(*a, H, W), xs, gy)
    assert rel_err(y, y_ref) < 1e-5
    for name, g, w in zip(NAMES, got, want):
        assert g.shape == w.shape, name
        assert rel_err(g, w) < 1e-4, f"d{name}: rel err {rel_err(g, w):.2e}"
    return y_ref


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference(shape):
    Bt, Dm, N, H, W = shape
    xs = make_inputs(*shape, seed=sum(shape))
    y = selective_scan_2d_triton(*xs, H, W, config=SMALL)
    assert y.shape == (Bt, H * W, Dm) and y.dtype == torch.float32
    assert rel_err(y, selective_scan_2d_ref(*xs, H, W)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_forward_low_precision_inputs(dtype):
    Bt, Dm, N, H, W = shape = (2, 10, 4, 3, 5)
    xs = make_inputs(*shape, seed=1)
    low = [x.to(dtype) for x in xs]
    y = selective_scan_2d_triton(*low, H, W, config=SMALL)
    assert y.dtype == torch.float32
    assert rel_err(y, selective_scan_2d_ref(*low, H, W)) < 1e-5   # same rounded inputs: fp32 math inside
    assert rel_err(y, selective_scan_2d_ref(*xs, H, W)) < 1e-2    # against the full-precision inputs


@pytest.mark.parametrize("lanes_bwd", [2, 0], ids=["forward-layout", "3-d"])
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_autograd_through_reference(shape, lanes_bwd):
    """Both backward kernels (the forward's layout, with a channel's state over 2 lanes, and the 3-D one)."""
    Bt, Dm, N, H, W = shape
    config = dataclasses.replace(SMALL, lanes_bwd=lanes_bwd)
    assert_forward_and_backward_match(make_inputs(*shape, seed=10 + sum(shape)), H, W, config)


def test_backward_bf16_inputs_give_bf16_gradients():
    Bt, Dm, N, H, W = shape = (1, 8, 4, 2, 3)
    xs = [x.to(torch.bfloat16) for x in make_inputs(*shape, seed=3)]
    gy = torch.randn(Bt, H * W, Dm, device=DEVICE)
    _, got = grads(lambda *a: selective_scan_2d_triton(*a, H, W, config=SMALL), xs, gy)
    _, want = grads(lambda *a: selective_scan_2d_ref(*a, H, W), xs, gy)
    for name, g, w in zip(NAMES, got, want):
        assert g.dtype == torch.bfloat16, name
        assert rel_err(g, w) < 1e-2, f"d{name}: rel err {rel_err(g, w):.2e}"


@pytest.mark.parametrize("config", [None, DEFAULT_CONFIG, FEW_SEQUENCES_CONFIG, ONE_IMAGE_CONFIG, GIVEN_STEPS_CONFIG,
                                    TRAINING_CONFIG],
                         ids=["auto", "default", "few", "one-image", "given-steps", "training"])
def test_default_configs_forward_and_backward(config):
    Bt, Dm, N, H, W = shape = (1, 20, 8, 5, 4)
    assert_forward_and_backward_match(make_inputs(*shape, seed=4), H, W, config)


@triton.jit
def _exp2_fma_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + i, mask=i < n, other=0.0)
    tl.store(y_ptr + i, triton_scan._exp2_fma(x), mask=i < n)


def test_exp2_on_fma_units_matches_exp2():
    """The polynomial 2^x the forward uses for some decays (`fma_decays_fwd`): relative error < 3e-7 from x = -125
    up to 127.9, 2^-125 (not less) below, exactly 1 at 0 (a step with dt = 0 leaves the state as it is), +inf
    from 128 up (as exp2). NaN is not kept (see `test_nan_step_size_gives_nan_where_the_reference_does`)."""
    x = torch.cat([torch.linspace(-130.0, 0.0, 20001), torch.tensor([-125.0, -124.5, -1e-30, 0.0, -0.5, -1.5])])
    x = torch.cat([x, -torch.rand(2000, generator=torch.Generator().manual_seed(0)) * 4.0,
                   torch.linspace(0.0, 127.9, 2001)]).to(DEVICE)
    y = torch.empty_like(x)
    _exp2_fma_kernel[(triton.cdiv(x.numel(), 256),)](x, y, x.numel(), BLOCK=256)
    want = torch.exp2(x.double().clamp(min=-125.0))
    assert ((y.double() - want).abs() / want).max().item() < 3e-7
    assert y[x < -125].eq(2.0 ** -125).all() and y[x == 0].eq(1.0).all()
    special = torch.tensor([128.0, 128.3, 200.0, 1e7, float("inf"), -float("inf")], device=DEVICE)
    y = torch.empty_like(special)
    _exp2_fma_kernel[(1,)](special, y, special.numel(), BLOCK=8)
    assert torch.isposinf(y[:5]).all() and y[5].item() == 2.0 ** -125


def test_carried_combine_is_associative():
    """The backward's reverse scan combines runs of steps with `_compose_carried` (s_i = b_i + a_{i-1} s_{i-1}).
    The interpreter's associative_scan folds left to right, so only the GPU would otherwise try other bracketings:
    here every split of random runs (the combine's Python body, float64) gives the sequential recursion."""
    combine = triton_scan._compose_carried.fn
    gen = torch.Generator().manual_seed(3)
    a, b = torch.rand(9, 5, generator=gen, dtype=torch.float64) + 0.1, torch.randn(9, 5, generator=gen,
                                                                                   dtype=torch.float64)
    want, s = [], torch.zeros(5, dtype=torch.float64)
    for i in range(9):
        s = b[i] + (a[i - 1] * s if i else 0.0)
        want.append(s)

    def run(lo, hi, cut):   # (q, l, s) of steps lo..hi-1, split where cut says
        if hi - lo == 1:
            return torch.ones(5, dtype=torch.float64), a[lo], b[lo]
        mid = lo + 1 + cut[(lo, hi)] % (hi - lo - 1)
        return combine(*run(lo, mid, cut), *run(mid, hi, cut))

    for seed in range(20):
        rng = torch.Generator().manual_seed(seed)
        cut = {(lo, hi): int(torch.randint(0, 1000, (1,), generator=rng))
               for lo in range(9) for hi in range(lo + 2, 10)}
        for end in range(1, 10):
            assert torch.allclose(run(0, end, cut)[2], want[end - 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config", [None, dataclasses.replace(SMALL, lanes_fwd=1, fma_decays_fwd=4)],
                         ids=["default", "all-decays-on-fma"])
def test_nan_step_size_gives_nan_where_the_reference_does(config):
    """A NaN step size (given finished, as inference passes them) makes the outputs NaN at the same positions as
    the reference, with every decay from the FMA polynomial too."""
    Bt, Dm, N, H, W = shape = (1, 6, 4, 3, 4)
    u, delta, A, B, C, D, bias = make_inputs(*shape, seed=9)
    delta = torch.nn.functional.softplus(delta + bias[None, :, None, :])
    delta[0, 1, 5, 2] = float("nan")
    with torch.no_grad():
        got = selective_scan_2d_triton(u, delta, A, B, C, D, torch.zeros_like(bias), H, W, config=config,
                                       delta_softplus=False)
        want = selective_scan_2d_ref(u, torch.log(torch.expm1(delta)), A, B, C, D, torch.zeros_like(bias), H, W)
    assert torch.isnan(want).any() and not torch.isnan(want).all()
    assert torch.equal(torch.isnan(got), torch.isnan(want))


@pytest.mark.parametrize("config", [dataclasses.replace(SMALL, fma_decays_fwd=1),
                                    dataclasses.replace(SMALL, lanes_fwd=1, fma_decays_fwd=3)],
                         ids=["one-of-2", "three-of-4"])
def test_forward_with_decays_on_fma_units(config):
    """Some of each thread's decays computed by the polynomial: the forward still matches the reference."""
    Bt, Dm, N, H, W = shape = (2, 10, 4, 3, 5)
    xs = make_inputs(*shape, seed=8)
    with torch.no_grad():
        assert rel_err(selective_scan_2d_triton(*xs, H, W, config=config), selective_scan_2d_ref(*xs, H, W)) < 1e-5


@pytest.mark.parametrize("segments,shape", [(2, (2, 10, 4, 3, 5)), (3, (2, 10, 4, 3, 5)), (5, (2, 10, 4, 3, 5)),
                                            (3, (1, 6, 4, 8, 9))])
def test_forward_split_into_segments(segments, shape):
    """Each order's steps scanned by several programs (summaries, then the segments from composed states; the
    last shape gives every segment several tiles); with gradients the split is not used (the saved states
    need one program per order)."""
    Bt, Dm, N, H, W = shape
    xs = make_inputs(*shape, seed=12)
    cfg = dataclasses.replace(SMALL, segments_fwd=segments)
    want = assert_forward_and_backward_match(xs, H, W, cfg)
    with torch.no_grad():
        assert rel_err(selective_scan_2d_triton(*xs, H, W, config=cfg), want) < 1e-5


def test_default_config_gives_small_batches_more_threads():
    assert default_config(1, 1024, grad=True) == FEW_SEQUENCES_CONFIG   # 4096 sequences: 4 lanes per channel
    assert default_config(16, 1024) == DEFAULT_CONFIG           # 65536 sequences: one thread per channel
    assert default_config(2, 1024) == FEW_SEQUENCES_CONFIG
    assert default_config(16, 1024, given_steps=True) == GIVEN_STEPS_CONFIG   # inference, no softplus in the scan
    assert default_config(16, 1024, grad=True, given_steps=True) == TRAINING_CONFIG   # training: tuned backward
    assert default_config(24, 1024, grad=True, length=32 * 32) == TRAINING_CONFIG
    assert default_config(24, 1024, grad=True, length=64 * 64) == DEFAULT_CONFIG   # its states' memory doubles
    assert default_config(2, 1024, given_steps=True) == FEW_SEQUENCES_CONFIG


def test_one_image_without_gradients_gets_split_orders(monkeypatch):
    assert default_config(1, 1024) == ONE_IMAGE_CONFIG          # inference only: the backward is not tuned for it
    Bt, Dm, N, H, W = shape = (1, 12, 8, 5, 9)
    xs = make_inputs(*shape, seed=7)
    launched = []
    launch = triton_scan._launch_fwd
    monkeypatch.setattr(triton_scan, "_launch_fwd", lambda *a, **k: launched.append(a[9]) or launch(*a, **k))
    with torch.no_grad():
        want = selective_scan_2d_ref(*xs, H, W)
        assert rel_err(selective_scan_2d_triton(*xs, H, W, config=ONE_IMAGE_CONFIG), want) < 1e-5
        selective_scan_2d_triton(*xs, H, W)                     # no config given, no gradients: split orders
    assert launched == [ONE_IMAGE_CONFIG, ONE_IMAGE_CONFIG]
    xs = [x.requires_grad_() if x.is_floating_point() else x for x in xs]
    selective_scan_2d_triton(*xs, H, W)                         # with gradients: the configuration of the backward
    assert launched[-1] == FEW_SEQUENCES_CONFIG


def test_no_grad_forward_is_one_operator_that_compile_keeps_whole(monkeypatch):
    """Without autograd the scan runs as a custom operator (same result); torch.compile traces it whole."""
    Bt, Dm, N, H, W = shape = (1, 8, 4, 3, 2)
    xs = make_inputs(*shape, seed=6)
    want = selective_scan_2d_ref(*xs, H, W)
    calls = []
    op = triton_scan._scan_no_grad
    monkeypatch.setattr(triton_scan, "_scan_no_grad", lambda *a: calls.append(1) or op(*a))
    with torch.no_grad():
        assert rel_err(selective_scan_2d_triton(*xs, H, W, config=SMALL), want) < 1e-5
        assert calls == [1]
        monkeypatch.undo()
        # fullgraph=True raises at any graph break, so the operator is traced as one node
        compiled = torch.compile(lambda *a: selective_scan_2d_triton(*a, H, W, config=SMALL) * 2.0, fullgraph=True)
        assert rel_err(compiled(*xs), 2.0 * want) < 1e-5


def assert_compiled_training_scan_matches_reference(shape, config, seed, dynamic=None):
    """The scan with gradients inside torch.compile (one graph): output and every input's gradient against autograd
    through the reference. Traced into the graph, the kernels' writes to the saved states and to dB and dC once went
    unseen: states dropped, dB and dC zero."""
    Bt, Dm, N, H, W = shape
    xs = make_inputs(*shape, seed=seed)
    torch.manual_seed(seed)
    gy = torch.randn(Bt, H * W, Dm, device=DEVICE)
    compiled = torch.compile(lambda *a: selective_scan_2d_triton(*a, H, W, config=config) * 2.0, fullgraph=True,
                             dynamic=dynamic)
    y, got = grads(compiled, xs, gy)
    y_ref, want = grads(lambda *a: selective_scan_2d_ref(*a, H, W) * 2.0, xs, gy)
    assert rel_err(y, y_ref) < 1e-5
    for name, g, w in zip(NAMES, got, want):
        assert g.abs().max() > 0, name
        assert rel_err(g, w) < 1e-4, f"d{name}: rel err {rel_err(g, w):.2e}"


def test_training_scan_under_compile_keeps_its_states_and_every_gradient():
    """On the CPU this shows the training scan compiles as one graph with right gradients; the lost writes themselves
    only happened with compiled kernels (the GPU test below)."""
    assert_compiled_training_scan_matches_reference((2, 8, 4, 3, 4), SMALL, seed=7)
    # symbolic sizes too, as a compiled model called at a second shape recompiles; and the 3-D backward kernel
    assert_compiled_training_scan_matches_reference((3, 8, 3, 4, 5), dataclasses.replace(SMALL, lanes_bwd=0), seed=8,
                                                    dynamic=True)


def test_training_scan_operators_pass_opcheck():
    """The forward and backward operators' fake implementations, schemas and autograd registration as
    torch.library checks them (shapes, dtypes and strides of the fakes against the real results)."""
    Bt, Dm, N, H, W = shape = (2, 8, 3, 3, 4)
    u, delta, A, B, C, D, bias = make_inputs(*shape, dtype=torch.bfloat16, seed=9)
    A2, D32, bias32 = triton_scan._inputs32(A, D, bias)
    config = list(dataclasses.astuple(SMALL))
    torch.library.opcheck(triton_scan._scan_fwd_op, (u, delta, A2, B, C, D32, bias32, H, W, config))
    _, states = triton_scan._scan_fwd_op(u, delta, A2, B, C, D32, bias32, H, W, config)
    gy = torch.randn(Bt, H * W, Dm, device=DEVICE)
    torch.library.opcheck(triton_scan._scan_bwd_op, (u, delta, A2, B, C, D32, bias32, states, gy, H, W, config))


def test_strided_inputs_and_partial_requires_grad():
    """B, C sliced out of one projection and u, delta transposed views, as a layer would pass them."""
    Bt, Dm, N, H, W = 2, 7, 4, 3, 4
    L = H * W
    u, delta, A, B, C, D, bias = make_inputs(Bt, Dm, N, H, W, seed=5)
    proj = torch.cat([B, C], dim=-1)                         # [Bt, 4, L, 2N]
    B_view, C_view = proj[..., :N], proj[..., N:]            # strided views
    u_view = u.transpose(1, 2).contiguous().transpose(1, 2)  # [Bt, L, Dm], channel stride L
    delta_view = delta.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    u_view.requires_grad_()
    y = selective_scan_2d_triton(u_view, delta_view, A, B_view, C_view, D, bias, H, W, config=SMALL)
    gy = torch.randn(Bt, L, Dm, device=DEVICE)
    (du,) = torch.autograd.grad(y, [u_view], gy)
    u_ref = u.clone().requires_grad_()
    y_ref = selective_scan_2d_ref(u_ref, delta, A, B, C, D, bias, H, W)
    (du_ref,) = torch.autograd.grad(y_ref, [u_ref], gy)
    assert rel_err(y, y_ref) < 1e-5
    assert rel_err(du, du_ref) < 1e-4


@pytest.mark.parametrize("name, bad", [("u", lambda xs: xs[0][:, :-1]), ("B", lambda xs: xs[3][..., :-1]),
                                       ("delta_bias", lambda xs: xs[6][:, :-1]), ("A", lambda xs: xs[2][:2])])
def test_bad_shapes_raise_naming_the_argument(name, bad):
    xs = make_inputs(1, 4, 4, 2, 2)
    i = NAMES.index(name)
    xs[i] = bad(xs)
    with pytest.raises(ValueError, match=name):
        selective_scan_2d_triton(*xs, 2, 2)


def test_too_many_positions_times_channels_raise():
    """One order's positions x channels are indexed in 32 bits: 2^21 positions x 1024 channels is refused
    (expanded views, no memory)."""
    H, W, Dm, N = 2048, 1024, 1024, 4
    L = H * W
    e = torch.empty(1, 1, 1, 1, device=DEVICE)
    xs = [e[0].expand(1, L, Dm), e.expand(1, 4, L, Dm), e[0].expand(4, Dm, N), e.expand(1, 4, L, N),
          e.expand(1, 4, L, N), e[0, 0].expand(4, Dm), e[0, 0].expand(4, Dm)]
    with pytest.raises(ValueError, match="too large"):
        selective_scan_2d_triton(*xs, H, W)


def test_grid_must_match_length():
    xs = make_inputs(1, 4, 4, 2, 3)
    with pytest.raises(ValueError, match="H, W"):
        selective_scan_2d_triton(*xs, 3, 3)


# ------------------------------------------------------------------------------- GPU (compiled) tests

GPU_CONFIGS = [DEFAULT_CONFIG, FEW_SEQUENCES_CONFIG, ONE_IMAGE_CONFIG, GIVEN_STEPS_CONFIG,
               dataclasses.replace(FEW_SEQUENCES_CONFIG, segments_fwd=4),
               ScanKernelConfig(chunk=8, tile_fwd=8, block_d_fwd=32, lanes_fwd=4, block_d_bwd=16, warps_bwd=4),
               ScanKernelConfig(chunk=32, tile_fwd=2, block_d_fwd=16, lanes_fwd=8, block_d_bwd=8, warps_fwd=4),
               ScanKernelConfig(chunk=16, tile_fwd=4, block_d_fwd=8, lanes_fwd=16, warps_fwd=4),
               TRAINING_CONFIG, dataclasses.replace(TRAINING_CONFIG, chunk=8, tile_fwd=8, lanes_bwd=1, block_d_bwd=32)]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("config", GPU_CONFIGS, ids=lambda c: f"T{c.chunk}-{c.tile_fwd}-D{c.block_d_fwd}-{c.block_d_bwd}-lanes{c.lanes_fwd}-{c.lanes_bwd}")
def test_gpu_model_sized_forward_and_backward(config):
    Bt, Dm, N, H, W = shape = (2, 1024, 16, 16, 24)     # the model's inner width and state size
    xs = make_inputs(*shape, seed=20)
    y_ref = assert_forward_and_backward_match(xs, H, W, config)
    with torch.no_grad():   # the inference forward (the operator; segments_fwd applies here)
        assert rel_err(selective_scan_2d_triton(*xs, H, W, config=config), y_ref) < 1e-5


@pytest.mark.gpu
@gpu
def test_gpu_training_scan_under_compile_model_sized():
    assert_compiled_training_scan_matches_reference((4, 1024, 16, 16, 16), TRAINING_CONFIG, seed=23)


@pytest.mark.gpu
@gpu
def test_gpu_long_sequence_odd_sizes():
    Bt, Dm, N, H, W = shape = (1, 100, 16, 61, 67)      # L = 4087: ragged last tile, Dm not a multiple
    assert_forward_and_backward_match(make_inputs(*shape, seed=21), H, W, None)


@pytest.mark.gpu
@gpu
def test_gpu_bf16_model_sized():
    Bt, Dm, N, H, W = shape = (2, 1024, 16, 32, 32)
    xs = make_inputs(*shape, seed=22)
    low = [x.to(torch.bfloat16) for x in xs]
    y = selective_scan_2d_triton(*low, H, W)
    assert rel_err(y, selective_scan_2d_ref(*low, H, W)) < 1e-5
    assert rel_err(y, selective_scan_2d_ref(*xs, H, W)) < 1e-2


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("config", [None, ONE_IMAGE_CONFIG, dataclasses.replace(FEW_SEQUENCES_CONFIG, segments_fwd=4)],
                         ids=["default", "one-image", "segments"])
def test_gpu_forward_is_bitwise_repeatable(config):
    """Two addends per output buffer: the same inputs give the same bits on every call (a still video scene gives
    identical frames), also for identical images at different places in the batch."""
    shape = (1, 1024, 16, 32, 32)   # one image, then four copies of it: u, delta, B and C repeated over the batch
    H, W = shape[3:]
    xs = make_inputs(*shape, dtype=torch.bfloat16, seed=23)
    xs = [x.repeat(4, *[1] * (x.dim() - 1)) if i in (0, 1, 3, 4) else x for i, x in enumerate(xs)]
    with torch.no_grad():
        ys = [selective_scan_2d_triton(*xs, H, W, config=config) for _ in range(5)]
    for y in ys:
        assert torch.equal(y, ys[0])
        assert all(torch.equal(y[i], y[0]) for i in range(4))
