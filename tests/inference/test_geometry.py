"""Working sizes, the memory check and weights stored in the autocast dtype."""


import copy

import torch

from mambast.inference.geometry import add_margin, prepare_content, prepare_style
from mambast.inference.precision import cast_autocast_weights


def test_weights_stored_in_the_autocast_dtype_give_the_same_output(tiny_model):
    c, s = torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 24)
    cast = cast_autocast_weights(copy.deepcopy(tiny_model), torch.bfloat16)
    assert cast.encoder_c.layers[0].self_attention.in_proj.weight.dtype == torch.bfloat16
    assert cast.encoder_c.layers[0].self_attention.A_logs.dtype == torch.float32
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = tiny_model(c, s, generator=3)
        got = cast(c, s, generator=3)
    assert torch.equal(got, want)


def test_weights_are_cast_before_the_move_to_a_device(tiny_model):
    moved = cast_autocast_weights(copy.deepcopy(tiny_model), torch.bfloat16, "meta")
    assert all(p.device.type == "meta" for p in moved.parameters())
    assert moved.encoder_c.layers[0].self_attention.in_proj.weight.dtype == torch.bfloat16
    assert moved.encoder_c.layers[0].self_attention.A_logs.dtype == torch.float32
    kept = cast_autocast_weights(copy.deepcopy(tiny_model), None, "meta")     # float32: only moved
    assert all(p.device.type == "meta" and p.dtype == torch.float32 for p in kept.parameters())


def test_ordinary_images_keep_the_short_side_rule():
    from mambast.inference.geometry import working_size
    assert working_size(512, 683, 512) == (512, 683)
    assert working_size(3000, 4000, 512) == (512, 683)
    assert working_size(100, 200, 512) == (512, 1024)        # 2:1: still short side 512


def test_strips_are_worked_at_a_bounded_number_of_pixels():
    """Compute follows pixels: a strip gets at most the padded pixels of a 2:1 image at the same --size."""
    from mambast.inference.geometry import MAX_SQUARES, pad_to_multiple, working_size
    for H, W, size in [(24, 1000, 512), (500, 1, 64), (1, 20000, 256), (1000, 3000, 512), (7, 7000, 32)]:
        h, w = working_size(H, W, size)
        padded = pad_to_multiple(torch.zeros(1, 3, h, w), 8)[0].shape
        assert padded[-2] * padded[-1] <= MAX_SQUARES * size * size * 1.02, (H, W, size)
        assert abs(h * W - w * H) <= H + W, "aspect ratio kept up to rounding (a side is at least 1)"
    assert working_size(24, 1000, 512) == (112, 4674)          # was 512 x 21,333


def test_a_one_pixel_strip_is_stylized_in_ordinary_time(tiny_model):
    import time

    from mambast.inference.stylizer import stylize_tensor
    t = time.perf_counter()
    out = stylize_tensor(tiny_model, torch.rand(1, 3, 500, 1), torch.rand(1, 3, 40, 30), size=64, seed=0)
    assert out.shape == (1, 3, 500, 1) and time.perf_counter() - t < 10


def test_the_cpu_memory_check_refuses_what_cannot_fit(monkeypatch):
    import pytest

    from mambast.inference.geometry import check_working_size
    monkeypatch.setattr("mambast.inference.geometry.available_memory", lambda: 1_000_000_000)
    check_working_size(512, 512, "cpu")
    check_working_size(2048, 2048, "meta")                     # only the CPU's memory is estimated
    with pytest.raises(ValueError, match=r"needs about 6\.4 GB of memory, 1\.0 GB is available"):
        check_working_size(2048, 2048, "cpu")


def test_margins_keep_the_style_at_the_contents_scale():
    g = torch.Generator().manual_seed(0)
    style = torch.rand(1, 3, 50, 70, generator=g)
    plain, wide = prepare_style(style, (24, 40), 8), prepare_style(style, (24, 40), 8, margin=16)
    assert wide.shape[-2:] == (56, 72)
    torch.testing.assert_close(wide[..., 16:40, 16:56], plain)   # the same pixels in the middle: no rescaling
    content, working = prepare_content(torch.rand(1, 3, 24, 40, generator=g), None, 8, margin=16)
    assert working == (24, 40) and content.shape[-2:] == wide.shape[-2:]


def test_a_margin_longer_than_a_side_replicates_the_edges():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    y = add_margin(x, 3)                         # mirroring 3 pixels needs a side of 4 or more
    assert y.shape[-2:] == (9, 10)
    assert torch.equal(y[..., :3, :3], x[..., :1, :1].expand(1, 1, 3, 3))
    assert torch.equal(y[..., 3:6, 3:7], x) and torch.equal(add_margin(x, 0), x)
    torch.testing.assert_close(add_margin(x, 2), torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect"))
