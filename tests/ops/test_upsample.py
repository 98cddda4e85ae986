"""The decoder's nearest x2 upsampling: the expand-and-reshape form used under autograd computes its PyTorch
definition (`upsample_nearest2x_ref`), forward and backward, on fresh random inputs."""

import pytest
import torch

from _compare import rel_err
from mambast.ops import upsample_nearest2x, upsample_nearest2x_ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,channels_last", [((2, 5, 3, 7), False), ((1, 8, 4, 4), True), ((3, 1, 1, 2), False)])
def test_upsample_with_gradients_matches_the_reference(shape, channels_last, dtype):
    x = torch.randn(*shape, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(shape[0], shape[1], 2 * shape[2], 2 * shape[3], dtype=dtype)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    fast, ref = upsample_nearest2x(xs[0]), upsample_nearest2x_ref(xs[1])
    assert torch.equal(fast, ref)                     # copies of the inputs: exact
    fast.backward(g)
    ref.backward(g)
    assert xs[0].grad.shape == x.shape
    assert rel_err(xs[0].grad.float(), xs[1].grad.float()) < (1e-2 if dtype == torch.bfloat16 else 1e-6)
    # each input pixel's gradient is the sum over its 2x2 block
    block_sums = g.float().reshape(shape[0], shape[1], shape[2], 2, shape[3], 2).sum((3, 5))
    assert rel_err(xs[0].grad.float(), block_sums) < (1e-2 if dtype == torch.bfloat16 else 1e-6)


def test_upsample_without_gradients_is_the_reference_and_keeps_the_layout():
    x = torch.randn(1, 6, 3, 5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = upsample_nearest2x(x)
    assert torch.equal(y, upsample_nearest2x_ref(x))
    assert y.is_contiguous(memory_format=torch.channels_last)
