"""The normalised VGG-19 loss network: Keras import, normalisation, AdaIN .pth mapping, compact exports.

Tiny random stand-ins only: nothing is downloaded.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mambast.errors import WeightsError
from mambast.networks.vgg import (BLOCK_DEPTHS, VGG19Features, activation_means, adain_indices, conv_names,
                                  export_weights, from_keras_h5, load_vgg19, norm_image_files, normalise_,
                                  set_caffe_input_conv)

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


def test_keras_h5_is_read_hwio_to_oihw(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.h5"
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


def test_adain_pth_loads_with_mapped_keys(tmp_path):
    m = tiny()
    torch.save(_adain_state(m), tmp_path / "vgg_normalised.pth")
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


def test_norm_images_are_spread_over_content_and_style_and_refuse_eval(tmp_path):
    from PIL import Image
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
