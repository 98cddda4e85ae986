import pytest
import torch

from conftest import randomize, tiny_config
from mambast import MambaST


def test_reference_config_size():
    m = MambaST()
    n = sum(p.numel() for p in m.parameters())
    # 27.1 M in the authors' files, minus the tensors they store but never use
    # (encoders' in_style_proj 6 x 0.52 M, new_ps 0.26 M, skip_scale2)
    assert 23.5e6 < n < 23.8e6


def test_forward_shapes_non_square(tiny_model):
    c, s = torch.rand(2, 3, 24, 40), torch.rand(2, 3, 24, 40)
    with torch.no_grad():
        y = tiny_model(c, s, shuffle=False)
    assert y.shape == (2, 3, 24, 40)
    assert torch.isfinite(y).all()


def test_forward_rejects_sizes_not_multiple_of_patch(tiny_model):
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny_model(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 20))


def test_shuffle_with_seed_is_deterministic(tiny_model):
    c, s = torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        a = tiny_model(c, s, shuffle=True, generator=7)
        b = tiny_model(c, s, shuffle=True, generator=torch.Generator().manual_seed(7))
        other = tiny_model(c, s, shuffle=True, generator=8)
        plain = tiny_model(c, s, shuffle=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - other).abs().max() > 1e-4, "a different seed must give another permutation"
    assert (a - plain).abs().max() > 1e-4, "shuffling must change the result"


def test_scan_implementations_agree_in_model(tiny_model, monkeypatch):
    from mambast import ops
    from mambast.ops import scan_ref
    c, s = torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 24)
    calls = []
    ref = scan_ref.selective_scan_2d_ref
    monkeypatch.setattr(ops, "selective_scan_2d_ref", lambda *a: calls.append(1) or ref(*a))
    outs = {}
    for impl in ("ref", "cpu"):
        with torch.no_grad(), ops.use_impl(impl):
            outs[impl] = tiny_model(c, s, shuffle=False)
        if impl == "ref":
            assert calls, "use_impl('ref') must route the layers' scans to the reference"
            n_ref = len(calls)
    assert len(calls) == n_ref, "outside use_impl('ref') the reference must not run"
    rel = (outs["cpu"] - outs["ref"]).norm() / outs["ref"].norm()
    assert rel < 1e-5
    with pytest.raises(ValueError, match="impl must be one of"):
        with ops.use_impl("fast"):
            pass


def test_training_mode_backward_runs():
    m = randomize(MambaST(tiny_config())).train()
    c, s = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    m(c, s, generator=0).square().mean().backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_stylize_refuses_a_working_size_beyond_the_limit(tiny_model):
    from mambast.inference.config import MAX_WORKING_PIXELS
    from mambast.inference.stylizer import stylize_tensor
    strip = torch.rand(1, 3, 1, 64)
    with pytest.raises(ValueError, match="too large"):
        stylize_tensor(tiny_model, strip, torch.rand(1, 3, 8, 8), size=int(MAX_WORKING_PIXELS ** 0.5))


def test_fit_style_of_a_long_strip_stays_small_and_matches():
    """A strip is cropped before it is resized (resizing all of it first would make it huge); the result
    matches resize-then-crop up to the rounding of the crop offset (a smooth strip shows it)."""
    import torch.nn.functional as F
    from mambast.inference.geometry import _centre_crop, fit_style, resize_short_side
    g = torch.Generator().manual_seed(0)
    strip = F.interpolate(torch.rand(1, 3, 2, 60, generator=g), size=(3, 4000), mode="bilinear", align_corners=True)
    out = fit_style(strip, 32, 48)                                       # resized whole: 32 x 42,667
    assert out.shape == (1, 3, 32, 48)
    plain = _centre_crop(resize_short_side(strip, 32), 32, 48)
    assert (out - plain).abs().max() < 0.03
    assert fit_style(torch.rand(1, 3, 3, 400000, generator=g), 32, 48).shape == (1, 3, 32, 48)   # quick, small


def test_permutations_are_the_same_wherever_they_are_put():
    """draw_permutations(..., device): the same draws for one seed whatever the device (CUDA gets them through
    pinned memory when present)."""
    from mambast.model import draw_permutations

    def draw(device):
        return draw_permutations(3, 50, torch.Generator().manual_seed(5), device)

    base = draw(None)
    assert base.shape == (3, 50) and all(torch.equal(row.sort().values, torch.arange(50)) for row in base)
    assert torch.equal(draw("cpu"), base)
    if torch.cuda.is_available():
        got = draw("cuda")
        assert got.is_cuda and torch.equal(got.cpu(), base)


def test_patch_embedding_is_its_conv():
    """PatchEmbed runs its stride-p conv as one product over the flattened patches: the conv's result (and
    gradients) on non-square, non-contiguous inputs, and the conv itself for sides that are not multiples of p."""
    from mambast.config import MambaSTConfig
    from mambast.nn.blocks import PatchEmbed
    torch.manual_seed(0)
    pe = PatchEmbed(MambaSTConfig(dim=24))                                # 8 x 8 patches
    x = torch.rand(2, 24, 16, 3).permute(0, 3, 1, 2).requires_grad_()     # [2, 3, 24, 16], channels-last strides
    got = pe(x)
    want = pe.proj(x).permute(0, 2, 3, 1)
    assert got.shape == (2, 3, 2, 24) and got.is_contiguous()
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-5
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, (x, pe.proj.weight, pe.proj.bias), g)
    want_grads = torch.autograd.grad(want, (x, pe.proj.weight, pe.proj.bias), g)
    for a, b in zip(grads, want_grads):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5
    odd = torch.rand(1, 3, 20, 17)
    assert torch.equal(pe(odd), pe.proj(odd).permute(0, 2, 3, 1))
    assert pe(torch.rand(0, 3, 16, 8)).shape == (0, 2, 1, 24)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):              # as bf16 inference runs it
        x16 = torch.rand(2, 3, 16, 24)
        got16, want16 = pe(x16), pe.proj(x16).permute(0, 2, 3, 1)
    assert got16.dtype == torch.bfloat16 and ((got16 - want16).float().abs().max() / want16.float().abs().max()) < 2e-2
    seen = []
    pe.proj.register_forward_hook(lambda *a: seen.append(1))                  # a hooked conv is called as it is
    pe(x16)
    assert seen == [1]


def test_scan_dispatch_compiles_without_a_graph_break_and_follows_use_impl():
    from mambast import ops

    def f(x):
        return x * 2 if ops._resolve("auto") == "auto" else x - 1

    assert torch._dynamo.explain(f)(torch.ones(2)).graph_break_count == 0
    g = torch.compile(f, backend="eager", fullgraph=True)
    assert g(torch.ones(2)).tolist() == [2.0, 2.0]
    with ops.use_impl("ref"):
        assert g(torch.ones(2)).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("drop_path_encoder", [0.0, 0.2])
def test_identity_passes_in_one_call_match_the_three_calls_with_gradients(drop_path_encoder):
    """forward(c, s, identities=True) = [f(c, s); f(c, c); f(s, s)] as the 3B batch computes them (the training
    step's call), outputs and every parameter's gradient; the encoders then see each image once, unless the encoder
    drops paths (then each use draws its own, as in the 3B batch: the same random numbers, the same result)."""
    import dataclasses
    m = randomize(MambaST(dataclasses.replace(tiny_config(), drop_path_encoder=drop_path_encoder))).train()
    c, s = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(1))
    perms = torch.stack([torch.randperm(6) for _ in range(m.config.depth_decoder)])
    seen = []                                         # batch sizes entering the encoders
    for encoder in (m.encoder_c, m.encoder_s):
        encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    results = []
    for call in (lambda: m(c, s, perms=perms, identities=True),
                 lambda: m(torch.cat([c, c, s]), torch.cat([s, c, s]), perms=perms)):
        m.zero_grad()
        torch.manual_seed(3)                          # the decoder's (and encoder's) dropped paths
        y = call()
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        results.append((y.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    (y1, g1), (y2, g2) = results
    assert y1.shape == (6, 3, 16, 24)
    assert seen == ([4, 4] if drop_path_encoder == 0 else [6, 6]) + [6, 6]   # 2B once each, unless paths drop
    torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-3, atol=1e-5, msg=name)
    with pytest.raises(ValueError, match="one shape"):
        m(c, s[:, :, :8], identities=True)
