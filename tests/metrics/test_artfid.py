"""ArtFID combines FID and LPIPS as (1 + LPIPS)(1 + FID)."""

from __future__ import annotations

import pytest

from mambast.metrics.artfid import art_fid


def test_art_fid_formula():
    assert art_fid(0.0, 0.0) == 1.0
    assert art_fid(17.5, 0.5) == pytest.approx(1.5 * 18.5)
    assert art_fid(fid=30.0, lpips=0.25) == pytest.approx(1.25 * 31.0)


def test_art_fid_grows_with_either_term():
    assert art_fid(10.0, 0.6) > art_fid(10.0, 0.5)
    assert art_fid(11.0, 0.5) > art_fid(10.0, 0.5)


def test_art_fid_rejects_negative_inputs():
    with pytest.raises(ValueError, match="fid and lpips"):
        art_fid(-1.0, 0.2)
