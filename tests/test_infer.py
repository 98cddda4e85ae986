"""Inference helpers."""


import copy

import torch

from mambast.infer import cast_autocast_weights


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
