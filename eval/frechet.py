"""Feature statistics and the scores computed from them: the Fréchet distance between two
Gaussians fitted to features (FVD when the features are I3D's, as in TATS and StyleGAN-V) and the
Inception Score of class probabilities (Salimans et al., as TGAN/TGANv2 apply it to videos)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import linalg


@dataclass
class FeatureStats:
    """Mean and covariance of a set of feature vectors, computed in float64."""

    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D)
    count: int

    @classmethod
    def from_features(cls, features: np.ndarray) -> "FeatureStats":
        """`features` (N, D), N >= 2: the sample mean and the unbiased covariance (ddof=1)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"feature statistics need at least 2 feature vectors, got an array of shape {features.shape}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), features.shape[0])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez(path, mu=self.mu, sigma=self.sigma, count=self.count)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        with np.load(path) as data:
            return cls(data["mu"], data["sigma"], int(data["count"]))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the Fréchet distance of two Gaussians.

    The matrix square root is `scipy.linalg.sqrtm`. When S1 S2 is singular enough that the root
    is not finite (fewer samples than feature dimensions), `eps` is added to both diagonals, as
    the FID reference code does; a tiny imaginary part from round-off is dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"statistics do not match: means {mu1.shape} and {mu2.shape}, covariances {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular products are handled below
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(mu1.size) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))), computed on `splits` consecutive chunks of the samples;
    returns the mean and standard deviation over chunks (Salimans et al. 2016, 10 splits).

    `probs` (N, C): class probabilities, one row per video, rows summing to 1.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] < splits or splits < 1:
        raise ValueError(f"the Inception Score over {splits} splits needs at least {splits} rows of class probabilities, got shape {probs.shape}")
    n = probs.shape[0]
    scores = []
    for i in range(splits):
        part = probs[i * n // splits : (i + 1) * n // splits]  # (n_i, C)
        marginal = part.mean(axis=0, keepdims=True)  # (1, C): p(y) over the chunk
        kl = part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
