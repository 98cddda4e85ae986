"""FID: the Frechet distance against closed forms and the scipy sqrtm reference; feature preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mambast.metrics.fid import (feature_statistics, fid_from_features, frechet_distance, frechet_distance_sqrtm,
                                 to_inception_input)


def _random_spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_closed_form_for_commuting_covariances():
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T share eigenvectors: tr((S1 S2)^1/2) = sum sqrt(a b)
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.2, 2.0, 5), rng.uniform(0.2, 2.0, 5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu = rng.normal(size=5)
    expected = a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_scaled_covariance():
    # S2 = c^2 S1: distance (1 - c)^2 tr(S1)
    rng = np.random.default_rng(2)
    s1 = _random_spd(rng, 7)
    assert frechet_distance(np.zeros(7), s1, np.zeros(7), 4.0 * s1) == pytest.approx(np.trace(s1), rel=1e-9)


def test_frechet_distance_agrees_with_scipy_sqrtm_on_general_covariances():
    rng = np.random.default_rng(3)
    for d in (3, 16):
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        ref = frechet_distance_sqrtm(mu1, s1, mu2, s2)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_is_zero_for_identical_and_symmetric():
    rng = np.random.default_rng(4)
    mu, s = rng.normal(size=8), _random_spd(rng, 8)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9
    s2, mu2 = _random_spd(rng, 8), rng.normal(size=8)
    assert frechet_distance(mu, s, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu, s), rel=1e-9)


def test_frechet_distance_handles_rank_deficient_covariances():
    # fewer samples than dimensions (as 800 images vs 2048 features): stays finite, real and >= 0
    rng = np.random.default_rng(5)
    s1, s2 = _random_spd(rng, 30, rank=4), _random_spd(rng, 30, rank=6)
    d = frechet_distance(np.zeros(30), s1, np.ones(30), s2)
    assert np.isfinite(d) and d > 0
    assert d == pytest.approx(frechet_distance_sqrtm(np.zeros(30), s1, np.ones(30), s2), rel=1e-5)


@pytest.mark.parametrize("n1,n2,d", [(10, 12, 20), (60, 30, 20), (15, 15, 15)])
def test_fid_from_features_low_rank_form_matches_covariance_form(n1, n2, d):
    rng = np.random.default_rng(n1 + n2 + d)
    x1 = rng.normal(size=(n1, d))
    x2 = rng.normal(size=(n2, d)) @ rng.normal(size=(d, d)) * 0.5 + 0.3
    ref = frechet_distance(*feature_statistics(x1), *feature_statistics(x2))
    assert fid_from_features(x1, x2) == pytest.approx(ref, rel=1e-7)


def test_fid_from_features_with_repeated_reference_rows():
    # the protocol's reference set repeats each style image once per content
    rng = np.random.default_rng(6)
    x1, styles = rng.normal(size=(12, 32)), rng.normal(size=(4, 32))
    ref_rows = np.tile(styles, (3, 1))
    ref = frechet_distance_sqrtm(*feature_statistics(x1), *feature_statistics(ref_rows))
    assert fid_from_features(x1, ref_rows) == pytest.approx(ref, rel=1e-5)


def test_fid_of_samples_approaches_the_gaussian_distance():
    rng = np.random.default_rng(7)
    a, b = np.array([1.0, 2.0, 0.5]), np.array([2.0, 0.5, 1.0])
    x1 = rng.normal(size=(200_000, 3)) * np.sqrt(a)
    x2 = rng.normal(size=(200_000, 3)) * np.sqrt(b) + 1.0
    expected = 3.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid_from_features(x1, x2) == pytest.approx(expected, rel=0.02)


def test_fid_inputs_are_checked():
    with pytest.raises(ValueError, match="features1"):
        fid_from_features(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="feature sizes"):
        fid_from_features(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_inception_input_is_299_and_in_tf_range():
    x = torch.stack([torch.zeros(3, 64, 80), torch.ones(3, 64, 80)])
    y = to_inception_input(x)
    assert y.shape == (2, 3, 299, 299)
    assert y[0].min().item() == -1.0 and y[1].max().item() == pytest.approx(127 / 128)


def _keys_bicubic(t):
    """The bicubic convolution kernel with a = -0.5 (Keys 1981), the one PIL's BICUBIC filter uses."""
    t = np.abs(t)
    a = -0.5
    return np.where(t < 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                    np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))


def _resample_matrix(n_in, n_out):
    """[n_out, n_in] weights of an antialiased bicubic resize: pixel centres at i + 0.5, the kernel stretched by
    the downscale factor (never shrunk), taps clipped to the image and the weights renormalised to sum 1."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - 2 * support + 0.5), 0), min(int(centre + 2 * support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = _keys_bicubic((j + 0.5 - centre) / support)
        m[i, lo:hi] = w / w.sum()
    return m


def _clean_fid_input(u8):
    """Independent clean-fid preprocessing in numpy: uint8 [N, H, W, 3] -> float64 [N, 3, 299, 299]."""
    x = u8.astype(np.float64).transpose(0, 3, 1, 2)                           # [N, 3, H, W]
    rows, cols = _resample_matrix(x.shape[2], 299), _resample_matrix(x.shape[3], 299)
    return np.clip(rows @ x @ cols.T, 0, 255) / 128 - 1                     # rows, then columns


@pytest.mark.parametrize("h,w", [(512, 512), (300, 420), (128, 200)])
def test_inception_input_matches_an_independent_clean_fid_computation(h, w):
    # downscales (512 -> 299, the protocol) and an upscale; uint8 images as read from files
    rng = np.random.default_rng(h + w)
    u8 = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    u8[1] = np.clip(np.cumsum(rng.integers(-8, 9, (h, w, 3)), axis=1) + 128, 0, 255)   # smooth too
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255
    got = to_inception_input(x).double().numpy()
    ref = _clean_fid_input(u8)
    assert np.abs(got - ref).max() < 1e-6                           # float32 PIL vs float64 numpy
    assert got.min() >= -1 and got.max() < 1


def test_inception_input_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        to_inception_input(torch.rand(3, 32, 32))


@pytest.mark.parametrize("n1,n2,d", [(30, 50, 64), (80, 90, 40)])
def test_fid_from_features_matches_scipy_sqrtm_on_random_features(n1, n2, d):
    # both paths of fid_from_features (fewer samples than dimensions, and more) against scipy.linalg.sqrtm
    rng = np.random.default_rng(n1 * n2 + d)
    x1 = rng.normal(size=(n1, d)) * rng.uniform(0.5, 2.0, d)
    x2 = rng.normal(size=(n2, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.2
    ref = frechet_distance_sqrtm(*feature_statistics(x1), *feature_statistics(x2))
    assert fid_from_features(x1, x2) == pytest.approx(ref, rel=1e-6)


def test_fid_of_a_set_against_itself_is_exactly_zero_not_negative():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 40)) * 30
    assert fid_from_features(x, x) == 0.0 or 0.0 < fid_from_features(x, x) < 1e-8
    assert fid_from_features(x, np.tile(x[:3], (2, 1))) >= 0.0
    mu, s = feature_statistics(rng.normal(size=(50, 5)))
    assert frechet_distance(mu, s, mu, s) >= 0.0
