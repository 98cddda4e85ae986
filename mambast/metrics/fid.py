"""FID: Frechet distance between Gaussians fitted to Inception pool features of two image sets.

Feature extraction takes images in [0, 1] and prepares them as clean-fid does (PIL bicubic to 299 x 299,
x / 128 - 1); the statistics and the distance are float64 numpy.
"""

from __future__ import annotations

import numpy as np
import torch

INCEPTION_SIZE = 299


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> [N, 3, 299, 299] in [-1, 1), as clean-fid prepares images for standard FID.

    Each image as uint8 (our images are read from 8-bit files, so this is exact), each channel resized to
    299 x 299 by PIL's bicubic filter in float precision (antialiased: PIL widens the kernel by the downscale
    factor), clipped to [0, 255], then x / 128 - 1, the input scaling of the TF Inception graph (its Sub 128,
    Mul 1/128). The authors' art Inception takes the 512 x 512 image as it is; this is the standard-FID way.
    """
    from PIL import Image
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W]; got {tuple(images.shape)}")
    u8 = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()     # [N, 3, H, W]
    out = np.empty((u8.shape[0], 3, INCEPTION_SIZE, INCEPTION_SIZE), np.float32)
    for n in range(u8.shape[0]):
        for c in range(3):       # PIL resizes float images one channel at a time (mode "F")
            channel = Image.fromarray(u8[n, c].astype(np.float32))
            out[n, c] = np.asarray(channel.resize((INCEPTION_SIZE, INCEPTION_SIZE), Image.BICUBIC))
    np.clip(out, 0, 255, out=out)
    return torch.from_numpy(out) / 128 - 1


@torch.no_grad()
def inception_features(net: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """Pool features [N, D] (float64) of images [N, 3, H, W] in [0, 1] (clean-fid preprocessing)."""
    device = next(net.parameters()).device
    return net(to_inception_input(images).to(device)).double().cpu().numpy()


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2; got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2; this stays real and stable
    for the rank-deficient covariances of fewer samples than feature dimensions.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean))   # >= 0; round-off


def frechet_distance_sqrtm(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """The same distance through scipy.linalg.sqrtm(S1 S2) (the common reference form; slower and less
    stable for singular covariances). Kept as the reference the eigen form is tested against."""
    from scipy import linalg
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets [N1, D] and [N2, D].

    With fewer samples than dimensions (800 images vs 2048 features) the covariances are
    S_i = A_i^T A_i with A_i = (X_i - mu_i) / sqrt(N_i - 1), and tr((S1 S2)^(1/2)) equals the sum of the
    singular values of the small [N1, N2] matrix A1 A2^T: exact, and far cheaper than D x D algebra.
    """
    x1, x2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    for name, x in (("features1", x1), ("features2", x2)):
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"{name} must be [N, D] with N >= 2; got shape {x.shape}")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"feature sizes differ: {x1.shape[1]} vs {x2.shape[1]}")
    if max(x1.shape[0], x2.shape[0]) > x1.shape[1]:
        return frechet_distance(*feature_statistics(x1), *feature_statistics(x2))
    mu1, mu2 = x1.mean(0), x2.mean(0)
    a1 = (x1 - mu1) / np.sqrt(x1.shape[0] - 1)                          # [N1, D]
    a2 = (x2 - mu2) / np.sqrt(x2.shape[0] - 1)                          # [N2, D]
    tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()       # nuclear norm of [N1, N2]
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum() - 2.0 * tr_covmean))
