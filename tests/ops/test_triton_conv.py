"""The fused convolutions (Triton) compute their PyTorch definitions: SS2D's depthwise conv + SiLU
(`dwconv_silu_ref`) and the decoder's output layer (ReLU, reflection padding, 3x3 conv; `conv3x3_reflect_ref`).

Without CUDA the kernel runs in Triton's CPU interpreter on tiny shapes; `gpu` tests need a CUDA device.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # only effective if set before triton's first import

pytest.importorskip("triton")

from _compare import rel_err  # noqa: E402
from mambast.config import MambaSTConfig  # noqa: E402
from mambast.nn import cnn_decoder  # noqa: E402
from mambast.nn import SS2D  # noqa: E402
from mambast.ops import conv3x3_reflect, conv3x3_reflect_ref, dwconv_silu, dwconv_silu_ref  # noqa: E402
from mambast.ops import triton_conv  # noqa: E402
from mambast.ops.triton_conv import conv3x3_reflect_triton, dwconv_silu_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# bf16 / fp16 outputs are rounded once: errors up to half an ulp of the largest values and then some
TOL = {torch.bfloat16: 8e-3, torch.float16: 1e-3, torch.float32: 1e-5}


def inputs(B, C, H, W, Cout, dtype, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g).to(DEVICE, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = (torch.randn(Cout, C, 3, 3, generator=g) * (9 * C) ** -0.5).to(DEVICE)
    return x, w, torch.randn(Cout, generator=g).to(DEVICE)


@pytest.mark.parametrize("shape", [(2, 8, 5, 7, 3), (1, 64, 3, 130, 3), (1, 20, 2, 2, 5), (1, 3, 4, 2, 16),
                                   (1, 4, 19, 6, 3)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_matches_reference(shape, dtype, channels_last):
    """Odd sizes, rows of more than one program (W = 130), the smallest image (2 x 2), columns of more than one
    program (H = 19), both memory layouts."""
    B, C, H, W, Cout = shape
    x, w, b = inputs(B, C, H, W, Cout, dtype, channels_last, seed=sum(shape))
    got = conv3x3_reflect_triton(x, w, b)
    want = conv3x3_reflect_ref(x.float(), w.to(dtype).float(), b)     # the kernel's inputs, exact sums
    assert got.dtype == dtype and got.shape == (B, Cout, H, W)
    assert rel_err(got, want) < TOL[dtype]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_bias_of_the_previous_conv_added_before_the_relu(channels_last):
    x, w, b = inputs(2, 12, 6, 9, 3, torch.bfloat16, channels_last, seed=4)
    in_bias = torch.randn(12, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    x_biased = (x.float() + in_bias.view(-1, 1, 1)).bfloat16().float()    # the kernel rounds x + in_bias to bf16
    want = conv3x3_reflect_ref(x_biased, w.bfloat16().float(), b)
    assert rel_err(conv3x3_reflect_triton(x, w, b, in_bias=in_bias), want) < TOL[torch.bfloat16]
    assert rel_err(conv3x3_reflect_ref(x.float(), w.bfloat16().float(), b, in_bias=in_bias), want) < TOL[torch.bfloat16]
    # the reference on bf16 x rounds in_bias to bf16 and the sum to bf16, as the kernel does
    got_ref = conv3x3_reflect_ref(x, w.bfloat16(), b.bfloat16(), in_bias=in_bias)
    assert got_ref.dtype == torch.bfloat16 and rel_err(got_ref, want) < TOL[torch.bfloat16]
    with pytest.raises(ValueError, match="in_bias must be"):
        conv3x3_reflect_triton(x, w, b, in_bias=in_bias[:8])


def test_without_relu_or_bias():
    x, w, _ = inputs(2, 8, 5, 6, 3, torch.float16, seed=3)
    want = conv3x3_reflect_ref(x.float(), w.half().float(), None, relu=False)
    assert rel_err(conv3x3_reflect_triton(x, w, None, relu=False), want) < TOL[torch.float16]


def test_unsupported_arguments_raise():
    x, w, b = inputs(1, 8, 4, 4, 3, torch.bfloat16)
    for bad_x, bad_w in [(x.float(), w), (x[:, :, :1], w), (x, w[:, :4]), (x, torch.zeros(17, 8, 3, 3, device=DEVICE)),
                         (torch.zeros(1, 200, 4, 4, device=DEVICE, dtype=torch.bfloat16), w.new_zeros(3, 200, 3, 3))]:
        assert not triton_conv.supported(bad_x, bad_w)
        with pytest.raises(ValueError, match="conv3x3_reflect_triton takes"):
            conv3x3_reflect_triton(bad_x, bad_w, None)


def test_dispatch_falls_back_where_the_kernel_does_not_apply(monkeypatch):
    """CPU, float32, or gradients (bf16 channels-last input, which the kernel would take without them): PyTorch's
    operators (the kernel is never called)."""
    monkeypatch.setattr(triton_conv, "conv3x3_reflect_triton", lambda *a: pytest.fail("kernel called"))
    x, w, b = inputs(1, 8, 4, 5, 3, torch.float32)
    assert torch.equal(conv3x3_reflect(x, w, b), conv3x3_reflect_ref(x, w, b))
    x, w, b = inputs(1, 8, 4, 5, 3, torch.bfloat16, channels_last=True)
    w, b = w.bfloat16().requires_grad_(), b.bfloat16()
    want = conv3x3_reflect_ref(x, w, b).detach()
    y = conv3x3_reflect(x, w, b)
    assert y.requires_grad and torch.equal(y.detach(), want)
    assert torch.equal(conv3x3_reflect(x, w, None).detach(), conv3x3_reflect_ref(x, w, None).detach())


def test_inputs_whose_offsets_pass_int32_are_not_taken():
    """One image's offsets must stay below 2^31 (the kernels' index arithmetic); the batch may be any size."""
    w = torch.zeros(3, 64, 3, 3)
    big = torch.empty(1, 64, 6000, 6000, device="meta", dtype=torch.bfloat16).contiguous(
        memory_format=torch.channels_last)
    assert not triton_conv.supported(big, w)
    assert triton_conv.supported(torch.empty(64, 64, 512, 512, device="meta", dtype=torch.bfloat16), w)
    strided = torch.empty_strided((1, 4, 4, 8), (2 ** 33, 2 ** 30, 1, 4), device="meta")   # [B, H, W, C]
    assert not triton_conv.dwconv_supported(strided, torch.zeros(8, 1, 3, 3))
    assert triton_conv.dwconv_supported(torch.empty(64, 64, 64, 1024, device="meta"), torch.zeros(1024, 1, 3, 3))


def test_output_layer_operator_takes_the_kernel_for_channels_last_input_only(monkeypatch):
    """The compiled graph's operator: channels-last x (coalesced loads) runs the kernel, NCHW PyTorch's operators."""
    calls = []
    kernel = triton_conv.conv3x3_reflect_triton
    monkeypatch.setattr(triton_conv, "conv3x3_reflect_triton", lambda *a: calls.append(1) or kernel(*a))
    x, w, b = inputs(2, 8, 4, 5, 3, torch.bfloat16, channels_last=True, seed=2)
    want = conv3x3_reflect_ref(x.float(), w.bfloat16().float(), b)
    assert rel_err(triton_conv.conv3x3_reflect_op(x, w, b), want) < TOL[torch.bfloat16] and calls == [1]
    got = triton_conv.conv3x3_reflect_op(x.contiguous(), w, b)
    assert got.dtype == torch.bfloat16 and rel_err(got, want) < 2 * TOL[torch.bfloat16] and calls == [1]


def test_cnn_decoder_slices_are_plain_sequentials():
    dec = cnn_decoder(MambaSTConfig(dim=16, decoder_channels=(8, 8, 4)))
    head = dec[:3]
    assert type(head) is torch.nn.Sequential and len(head) == 3 and head[1] is dec[1]


def test_cnn_decoder_output_layer_is_its_last_modules():
    """The decoder's fused tail computes what its ReLU, ReflectionPad2d and Conv2d modules compute (float32 on
    the CPU takes those operators; the module indices of the authors' checkpoint are unchanged)."""
    cfg = MambaSTConfig(dim=16, decoder_channels=(8, 8, 4))
    dec = cnn_decoder(cfg).to(DEVICE)
    x = torch.randn(1, 16, 2, 3, device=DEVICE)
    with torch.no_grad():
        want = torch.nn.Sequential.forward(dec, x)
        assert rel_err(dec(x), want) < 1e-6
    assert [name for name, _ in dec.named_parameters()][-2:] == ["28.weight", "28.bias"]


def test_cnn_decoder_path_for_the_kernel_computes_its_modules(monkeypatch):
    """Under torch.compile, where the kernel runs, the last hidden conv goes without its bias and the output layer
    adds it: the same result (the path forced on the CPU here, with PyTorch's operators behind the dispatch point)."""
    from mambast.nn import blocks
    in_biases = []
    fused = blocks.conv3x3_reflect
    monkeypatch.setattr(blocks, "conv3x3_reflect", lambda *a, **k: in_biases.append(k.get("in_bias")) or fused(*a, **k))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    cfg = MambaSTConfig(dim=16, decoder_channels=(8, 8, 4))
    dec = cnn_decoder(cfg).to(DEVICE)
    x = torch.randn(1, 16, 2, 3, device=DEVICE)
    with torch.no_grad():
        assert rel_err(dec(x), torch.nn.Sequential.forward(dec, x)) < 1e-5
    assert len(in_biases) == 1 and in_biases[0] is dec[25].bias
    # a hook on that conv: the module is called as it is (the hook runs, no bias moves)
    seen = []
    dec[25].register_forward_hook(lambda *a: seen.append(1))
    with torch.no_grad():
        assert rel_err(dec(x), torch.nn.Sequential.forward(dec, x)) < 1e-5
    assert len(seen) == 2 and in_biases[1:] == [None]


def test_cnn_decoder_compiled_forward_and_gradients():
    """The decoder through torch.compile (one graph; the bias moved to the output layer, PyTorch's operators on the
    CPU): the eager result and the gradients of the input and of every parameter, that conv's bias included."""
    torch.manual_seed(0)
    dec = cnn_decoder(MambaSTConfig(dim=16, decoder_channels=(8, 8, 4)))
    x = torch.randn(1, 16, 2, 3, requires_grad=True)
    compiled = torch.compile(dec, backend="aot_eager", fullgraph=True)
    outs = [f(x) for f in (dec, compiled)]
    assert rel_err(outs[1], outs[0]) < 1e-5
    g = torch.randn_like(outs[0])
    params = [x, *dec.parameters()]
    want, got = (torch.autograd.grad(y, params, g) for y in outs)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-4
    torch._dynamo.reset()


@pytest.mark.gpu
@gpu
def test_gpu_decoder_with_the_bias_added_by_the_kernel(monkeypatch):
    """The decoder's path under torch.compile (forced here) in bf16: the fused operator gets the last hidden conv's
    bias to add, and the result matches the plain modules (the kernel's own in_bias: test below)."""
    from mambast.inference.precision import cast_autocast_weights
    calls = []
    op = triton_conv.conv3x3_reflect_op
    monkeypatch.setattr(triton_conv, "conv3x3_reflect_op", lambda *a: calls.append(a[4] is not None) or op(*a))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    dec = cast_autocast_weights(cnn_decoder(MambaSTConfig(dim=64, decoder_channels=(64, 64, 64))).to(DEVICE),
                                torch.bfloat16)
    x = torch.randn(2, 64, 8, 12, device=DEVICE).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
        want = torch.nn.Sequential.forward(dec, x)
        got = dec(x)
    assert calls == [True]
    assert rel_err(got, want) < 2e-2


@pytest.mark.gpu
@gpu
def test_gpu_model_sized_output_layer():
    x, w, b = inputs(2, 64, 64, 96, 3, torch.bfloat16, channels_last=True, seed=7)
    in_bias = torch.randn(64, device=DEVICE)
    with torch.no_grad():
        got, got_biased = conv3x3_reflect(x, w, b), conv3x3_reflect(x, w, b, in_bias=in_bias)
    assert rel_err(got, conv3x3_reflect_ref(x.float(), w.bfloat16().float(), b)) < TOL[torch.bfloat16]
    x_biased = (x.float() + in_bias.view(-1, 1, 1)).bfloat16().float()
    assert rel_err(got_biased, conv3x3_reflect_ref(x_biased, w.bfloat16().float(), b)) < TOL[torch.bfloat16]


# ------------------------------------------------------------------------------ depthwise conv + SiLU

def dw_inputs(B, H, W, C, k, dtype, seed=0, strided=False):
    """x [B, H, W, C] (strided: every other channel of a wider tensor, as a chunk of a projection), weight and bias."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, H, W, 2 * C if strided else C, generator=g).to(DEVICE, dtype)
    x = x[..., ::2] if strided else x
    w = (torch.randn(C, 1, k, k, generator=g) / k).to(DEVICE)
    return x, w, torch.randn(C, generator=g).to(DEVICE)


@pytest.mark.parametrize("shape", [(2, 5, 7, 12, 3), (1, 3, 21, 200, 3), (1, 1, 1, 4, 3), (2, 4, 6, 8, 5),
                                   (1, 2, 3, 5, 1), (1, 17, 70, 200, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dwconv_silu_matches_reference(shape, dtype):
    """Odd sizes, channels over more than one program (C = 200), with rows and columns over more than one too
    (H = 17, W = 70), a single pixel, k = 5 and 1."""
    B, H, W, C, k = shape
    x, w, b = dw_inputs(B, H, W, C, k, dtype, seed=sum(shape))
    got = dwconv_silu_triton(x, w, b)
    want = dwconv_silu_ref(x.float(), w, b)                      # the kernel's inputs, float32 arithmetic
    assert got.dtype == dtype and got.shape == (B, H * W, C)
    assert rel_err(got, want) < TOL[dtype]


def test_dwconv_silu_strided_input_and_16_bit_weights():
    x, w, b = dw_inputs(2, 4, 5, 24, 3, torch.bfloat16, seed=5, strided=True)
    assert not x.is_contiguous()
    w16, b16 = w.bfloat16(), b.bfloat16()
    want = dwconv_silu_ref(x.float(), w16.float(), b16.float())
    assert rel_err(dwconv_silu_triton(x, w16, b16), want) < TOL[torch.bfloat16]


def test_dwconv_silu_unsupported_arguments_raise():
    x, w, b = dw_inputs(1, 3, 3, 8, 3, torch.float32)
    for bad_x, bad_w in [(x, w[:4]), (x, w.expand(8, 2, 3, 3)), (x, w[..., :2, :2]), (x, w[..., :2]),
                         (x[0], w), (x.to(torch.float64), w)]:
        assert not triton_conv.dwconv_supported(bad_x, bad_w)
        with pytest.raises(ValueError, match="dwconv_silu_triton takes"):
            dwconv_silu_triton(bad_x, bad_w, b)
    with pytest.raises(ValueError, match="and a \\[C\\] bias"):
        dwconv_silu_triton(x, w, b[:4])


def test_dwconv_silu_dispatch_falls_back_where_the_kernel_does_not_apply(monkeypatch):
    """CPU, gradients, or no bias: PyTorch's operators (the kernel is never called)."""
    monkeypatch.setattr(triton_conv, "dwconv_silu_triton", lambda *a: pytest.fail("kernel called"))
    x, w, b = dw_inputs(1, 3, 4, 8, 3, torch.float32)
    if DEVICE == "cpu":
        assert torch.equal(dwconv_silu(x, w, b), dwconv_silu_ref(x, w, b))
    assert torch.equal(dwconv_silu(x, w, None), dwconv_silu_ref(x, w, None))
    w.requires_grad_()
    y = dwconv_silu(x, w, b)
    assert y.requires_grad and torch.equal(y.detach(), dwconv_silu_ref(x, w, b).detach())


def test_ss2d_conv_is_its_conv2d_module_then_silu():
    """The layer's conv path computes what its Conv2d module and a SiLU compute (checkpoint names unchanged)."""
    layer = SS2D(MambaSTConfig(dim=8, d_state=4)).to(DEVICE)
    x = torch.randn(2, 3, 5, layer.d_inner, device=DEVICE)
    with torch.no_grad():
        want = torch.nn.functional.silu(layer.conv2d(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1).reshape(2, 15, -1)
        assert rel_err(layer._conv(x), want) < TOL[torch.float32]
    assert {"conv2d.weight", "conv2d.bias"} <= dict(layer.named_parameters()).keys()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_model_sized_dwconv_silu(dtype):
    x, w, b = dw_inputs(2, 64, 48, 1024, 3, dtype, seed=11)
    with torch.no_grad():
        got = dwconv_silu(x, w, b)
    assert rel_err(got, dwconv_silu_ref(x.float(), w, b)) < TOL[dtype]
