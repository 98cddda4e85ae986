"""The training losses on tiny tensors: hand-computed values, zeros for identical inputs, one VGG pass."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from mambast.networks.vgg import VGG19Features
from mambast.train.losses import (EPS, StyleTransferLoss, content_loss, identity1_loss, identity2_loss, mean_std,
                                  normalize, style_loss)


def tiny_vgg(seed: int = 0) -> VGG19Features:
    torch.manual_seed(seed)
    return VGG19Features((4, 6, 8, 8, 8))


def test_mean_std_matches_hand_computation():
    f = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    mean, std = mean_std(f)
    assert mean.shape == std.shape == (1, 1, 1, 1)
    assert mean.item() == pytest.approx(2.5)
    # unbiased variance: (1.5^2 + 0.5^2 + 0.5^2 + 1.5^2) / 3 = 5/3
    assert std.item() == pytest.approx(math.sqrt(5 / 3 + EPS), rel=1e-6)


def test_normalize_matches_numpy():
    f = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    a = f.numpy().reshape(2, 3, -1).astype(np.float64)
    want = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, ddof=1, keepdims=True) + EPS)
    np.testing.assert_allclose(normalize(f).numpy().reshape(2, 3, -1), want, rtol=1e-5, atol=1e-6)


def _five(f):
    return [f.clone() for _ in range(5)]


def test_content_loss_uses_layers_4_and_5_only():
    o4 = torch.tensor([0.0, 0.0, 0.0, 2.0]).view(1, 1, 2, 2)   # mean 0.5, var 1
    c4 = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)   # mean 2.5, var 5/3
    no = (o4 - 0.5) / math.sqrt(1 + EPS)
    nc = (c4 - 2.5) / math.sqrt(5 / 3 + EPS)
    per_layer = ((no - nc) ** 2).mean().item()
    garbage = torch.full((1, 1, 2, 2), 100.0)
    out = [garbage, garbage, garbage, o4, o4]
    cont = [-garbage, -garbage, -garbage, c4, c4]
    assert content_loss(out, cont).item() == pytest.approx(2 * per_layer, rel=1e-6)


def test_style_loss_hand_case():
    o = torch.full((1, 1, 2, 2), 2.0)                              # mean 2, std sqrt(eps)
    s = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)      # mean 2.5, std sqrt(5/3 + eps)
    per_layer = 0.25 + (math.sqrt(EPS) - math.sqrt(5 / 3 + EPS)) ** 2
    assert style_loss(_five(o), _five(s)).item() == pytest.approx(5 * per_layer, rel=1e-6)


def test_identity_losses_hand_case():
    c, s = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    assert identity1_loss(c + 0.1, c, s, s).item() == pytest.approx(0.01, rel=1e-5)
    f = [torch.zeros(1, 2, 2, 2)] * 5
    g = [torch.full((1, 2, 2, 2), 2.0)] * 5
    # each layer: MSE(Fcc, Fc) = 4 and MSE(Fss, Fs) = 0
    assert identity2_loss(g, f, f, f).item() == pytest.approx(20.0)


def test_identical_images_give_zero_losses():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    terms = StyleTransferLoss(tiny_vgg())(x, x, x, x, x)
    for k, v in terms.items():
        assert v.item() == pytest.approx(0.0, abs=1e-10), k


def test_module_terms_equal_the_functions_and_total_is_weighted_sum():
    g = torch.Generator().manual_seed(3)
    c, s, o, icc, iss = (torch.rand(2, 3, 32, 32, generator=g) for _ in range(5))
    vgg = tiny_vgg()
    terms = StyleTransferLoss(vgg)(c, s, o, icc, iss)
    fc, fs, fo, fcc, fss = (vgg(t) for t in (c, s, o, icc, iss))
    want = {"content": content_loss(fo, fc), "style": style_loss(fo, fs),
            "identity1": identity1_loss(icc, c, iss, s), "identity2": identity2_loss(fcc, fc, fss, fs)}
    for k, v in want.items():
        assert terms[k].item() == pytest.approx(v.item(), rel=1e-5), k
        assert v.item() > 0, k
    total = 7 * want["content"] + 10 * want["style"] + 70 * want["identity1"] + want["identity2"]
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-5)


def test_gradient_reaches_the_output_only():
    g = torch.Generator().manual_seed(4)
    c, s = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    o = torch.rand(1, 3, 32, 32, generator=g, requires_grad=True)
    vgg = tiny_vgg()
    StyleTransferLoss(vgg)(c, s, o, c, s)["total"].backward()
    assert o.grad is not None and o.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_gradients_equal_those_of_the_terms_computed_one_image_batch_at_a_time():
    """The targets' features run without autograd: the gradients for the three model outputs must be those of
    the plain definitions, where every VGG call is differentiable."""
    g = torch.Generator().manual_seed(5)
    c, s = (torch.rand(2, 3, 32, 32, generator=g) for _ in range(2))
    outs = [torch.rand(2, 3, 32, 32, generator=g) for _ in range(3)]
    vgg = tiny_vgg()

    def grads(fn):
        xs = [x.clone().requires_grad_() for x in outs]
        return torch.autograd.grad(fn(*xs), xs)

    def reference(o, icc, iss):
        fc, fs, fo, fcc, fss = (vgg(t) for t in (c, s, o, icc, iss))
        return (7 * content_loss(fo, fc) + 10 * style_loss(fo, fs) + 70 * identity1_loss(icc, c, iss, s)
                + identity2_loss(fcc, fc, fss, fs))

    for got, want in zip(grads(lambda *xs: StyleTransferLoss(vgg)(c, s, *xs)["total"]), grads(reference)):
        assert ((got - want).norm() / want.norm()).item() < 1e-5


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on the CPU needs a C compiler")
def test_compiled_loss_gives_the_eager_terms_and_gradients():
    """`mambast train --compile` compiles the loss network with the model: the same terms, and the same gradients
    for the three model outputs, up to float32 rounding (on the CPU; the GPU training tests cover bf16 on CUDA)."""
    criterion = StyleTransferLoss(tiny_vgg())
    g = torch.Generator().manual_seed(0)
    content, style, *outputs = (torch.rand(2, 3, 32, 32, generator=g) for _ in range(5))

    def terms_and_grads(fn):
        xs = [o.clone().requires_grad_(True) for o in outputs]
        terms = fn(content, style, *xs)
        terms["total"].backward()
        return terms, [x.grad for x in xs]

    eager, eager_grads = terms_and_grads(criterion)
    compiled, compiled_grads = terms_and_grads(torch.compile(criterion))
    for name in eager:
        assert compiled[name].item() == pytest.approx(eager[name].item(), rel=1e-4, abs=1e-9), name
    for a, b in zip(compiled_grads, eager_grads):
        assert ((a - b).norm() / b.norm()).item() < 1e-3
