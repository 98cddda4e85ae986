"""CFSD: chunked computation against the authors' formula; zero for identical content, positive otherwise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import TinyVGG
from mambast.metrics.cfsd import RELU3_1, cfsd_distance, cfsd_from_features, content_features


def _reference(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The definition, whole matrix at once: F [1, HW, C] / C, S = F F^T, kl_div(log_softmax(S_stylized),
    softmax(S_content), 'batchmean') over one flattened image."""
    out = []
    for s, c in zip(stylized, content):
        C = s.shape[0]
        fs = s.reshape(C, -1).T[None] / C
        fc = c.reshape(C, -1).T[None] / C
        log_q = F.log_softmax(fs @ fs.transpose(1, 2), dim=-1).reshape(1, -1)
        p = F.softmax(fc @ fc.transpose(1, 2), dim=-1).reshape(1, -1)
        out.append(F.kl_div(log_q, p, reduction="batchmean"))
    return torch.stack(out)


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_chunked_cfsd_matches_reference(chunk):
    torch.manual_seed(1)
    s = torch.rand(3, 16, 6, 9) * 8
    c = torch.rand(3, 16, 6, 9) * 8
    got, ref = cfsd_from_features(s, c, chunk=chunk), _reference(s, c)
    assert got.shape == (3,)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("chunk", [5, 1024])
def test_one_content_for_all_images_gives_each_image_its_own_cfsd(chunk):
    """A [1, ...] content (its rows computed once per chunk) gives what the content repeated N times gives."""
    torch.manual_seed(2)
    s = torch.rand(4, 16, 5, 7) * 8
    c = torch.rand(1, 16, 5, 7) * 8
    got = cfsd_from_features(s, c, chunk=chunk)
    assert torch.allclose(got, _reference(s, c.expand_as(s)), rtol=1e-4, atol=1e-7)
    assert torch.equal(got, cfsd_from_features(s, c.expand_as(s).contiguous(), chunk=chunk))
    with pytest.raises(ValueError, match="stylized and content"):   # 2 contents for 4 images
        cfsd_from_features(s, torch.rand(2, 16, 5, 7))


def test_cfsd_is_zero_for_identical_features_and_positive_otherwise():
    torch.manual_seed(2)
    c = torch.rand(2, 8, 5, 5) * 10
    assert cfsd_from_features(c, c).abs().max().item() < 1e-5
    other = torch.rand(2, 8, 5, 5) * 10
    assert (cfsd_from_features(other, c) > 1e-4).all()


def test_cfsd_is_not_symmetric_but_direction_is_content_to_stylized():
    # KL(content || stylized): swapping the roles changes the value in general
    torch.manual_seed(3)
    a, b = torch.rand(1, 8, 4, 4) * 10, torch.rand(1, 8, 4, 4) * 10
    assert torch.allclose(cfsd_from_features(a, b), _reference(a, b), rtol=1e-4)
    assert not torch.allclose(cfsd_from_features(a, b), cfsd_from_features(b, a), rtol=1e-3)


def test_cfsd_distance_on_images_uses_relu3_1():
    vgg = TinyVGG()
    torch.manual_seed(4)
    content, stylized = torch.rand(1, 3, 32, 32), torch.rand(2, 3, 32, 32)
    same = cfsd_distance(vgg, content, content)
    assert same.abs().max().item() < 1e-5
    d = cfsd_distance(vgg, stylized, content.expand(2, -1, -1, -1))
    assert (d > 0).all()
    # precomputed content features broadcast over the batch give the same numbers
    d2 = cfsd_distance(vgg, stylized, content_features=content_features(vgg, content))
    assert torch.allclose(d, d2)
    feats = vgg(stylized)
    assert torch.allclose(d, cfsd_from_features(feats[RELU3_1], vgg(content)[RELU3_1].expand(2, -1, -1, -1)))


def test_cfsd_rejects_mismatched_features():
    with pytest.raises(ValueError, match="stylized and content"):
        cfsd_from_features(torch.rand(1, 4, 3, 3), torch.rand(1, 4, 3, 4))
