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


def test_fid_of_a_set_against_itself_is_exactly_zero_not_negative():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 40)) * 30
    assert fid_from_features(x, x) == 0.0 or 0.0 < fid_from_features(x, x) < 1e-8
    assert fid_from_features(x, np.tile(x[:3], (2, 1))) >= 0.0
    mu, s = feature_statistics(rng.normal(size=(50, 5)))
    assert frechet_distance(mu, s, mu, s) >= 0.0
