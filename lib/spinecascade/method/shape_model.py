"""The PCA shape constraint (Eq. 1-5 and 10 of the cascade paper).

A stage regresses Q coefficients; the offset it applies is W^T c (+ the mean offset when the model is centred),
so every update moves the points along the main modes of how training shapes differ from the stage's input.
With `n_components=None` the model is the identity and the stage regresses raw coordinate offsets (the ablation).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class ShapeModel(nn.Module):
    """Maps flattened shape offsets (N, P) to scaled coefficients (N, Q) and back."""

    def __init__(self, n_coords: int, n_components: int | None) -> None:
        super().__init__()
        q = n_coords if n_components is None else n_components
        self.register_buffer("components", torch.eye(q, n_coords))
        self.register_buffer("mean", torch.zeros(n_coords))
        self.register_buffer("scale", torch.ones(()))

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    def fit(self, offsets: np.ndarray, centred: bool, use_pca: bool = True) -> np.ndarray:
        """Fit to the ground-truth offsets of all training samples; returns the explained variance ratio."""
        x = np.asarray(offsets, np.float64).reshape(len(offsets), -1)
        mean = x.mean(axis=0) if centred else np.zeros(x.shape[1])
        if use_pca:
            cov = (x - mean).T @ (x - mean) / len(x)
            eigval, eigvec = np.linalg.eigh(cov)
            order = np.argsort(eigval)[::-1]
            eigval, eigvec = eigval[order], eigvec[:, order]
            # eigh leaves each vector's sign arbitrary; fix it so that refits are reproducible.
            eigvec *= np.where(eigvec[np.abs(eigvec).argmax(axis=0), range(eigvec.shape[1])] < 0, -1.0, 1.0)
            components = eigvec[:, : self.n_components].T
            explained = eigval / max(eigval.sum(), 1e-12)
        else:
            components = np.eye(x.shape[1])
            explained = np.full(x.shape[1], 1.0 / x.shape[1])
        coeffs = (x - mean) @ components.T
        scale = float(np.sqrt(np.mean(coeffs**2))) or 1.0
        self.components.copy_(torch.from_numpy(components).float())
        self.mean.copy_(torch.from_numpy(mean).float())
        self.scale.fill_(scale)
        return explained

    def encode(self, offsets: Tensor) -> Tensor:
        return (offsets.flatten(1) - self.mean) @ self.components.T / self.scale

    def decode(self, coeffs: Tensor) -> Tensor:
        return (coeffs * self.scale) @ self.components + self.mean
