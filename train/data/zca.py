"""ZCA whitening, the input preprocessing of the weight normalization recipe.

Salimans & Kingma's CIFAR-10 code (openai/weightnorm, `lasagne/nn.py`, class
`ZCA`) maps pixels to `(x − 127.5)/128`, flattens each image, and fits on
the training images

    μ = mean(x),  Σ = (x − μ)ᵀ(x − μ) / N = U diag(S) Uᵀ,
    W = U diag(1/√(S + ε)) Uᵀ,  ε = 1e-5,

then whitens every image as `(x − μ)·W`. Fitting and applying are done in
numpy, once, before the `tf.data` pipeline.
"""

import dataclasses

import numpy as np

REGULARIZATION = 1e-5


@dataclasses.dataclass(frozen=True)
class ZCA:
    """A fitted ZCA whitening transform on flattened images.

    Attributes:
        mean: float32 array of shape `(D,)`, the training mean `μ`.
        matrix: float32 symmetric array of shape `(D, D)`, `W`.
    """

    mean: np.ndarray
    matrix: np.ndarray

    def apply(self, images, chunk=4096):
        """Whitens `images` of shape `(N, ...)` with `D` values per image.

        Returns a float32 array of the same shape, `(x − μ)·W` per image.
        """
        flat = images.reshape(images.shape[0], -1)
        out = np.empty(flat.shape, np.float32)
        for start in range(0, flat.shape[0], chunk):
            x = flat[start : start + chunk].astype(np.float32) - self.mean
            out[start : start + chunk] = x @ self.matrix
        return out.reshape(images.shape)


def fit(images, regularization=REGULARIZATION, chunk=4096):
    """Fits a ZCA whitening transform on `images` of shape `(N, ...)`.

    `W` is built from the eigenpairs `(S, U)` of `Σ` as
    `W = ε^{-1/2}·I + U diag((S + ε)^{-1/2} − ε^{-1/2}) Uᵀ`, which is the
    formula above whether `U` spans the whole space or only `Σ`'s range.
    With at least as many images as values per image, `Σ` is accumulated in
    float64 from float32 chunks and decomposed with `numpy.linalg.eigh`
    (equal to the reference's SVD, `Σ` being symmetric positive
    semi-definite; round-off negatives are clipped to 0). With fewer images
    (the small-data regime) the thin SVD of the centered images gives the
    same nonzero eigenpairs at a fraction of the cost.

    Args:
        images: float array, already scaled (e.g. `(x − 127.5)/128`).
        regularization: `ε` added to the eigenvalues.
        chunk: rows per covariance update.

    Returns:
        A `ZCA`.
    """
    if not regularization > 0:
        raise ValueError(
            "`regularization` must be positive. "
            f"Received: regularization={regularization}"
        )
    flat = images.reshape(images.shape[0], -1)
    n, d = flat.shape
    mean = flat.mean(axis=0, dtype=np.float64)
    if n < d:
        _, singular, vt = np.linalg.svd(flat - mean, full_matrices=False)
        eigenvalues, eigenvectors = np.square(singular) / n, vt.T
    else:
        covariance = np.zeros((d, d))
        for start in range(0, n, chunk):
            x = (flat[start : start + chunk] - mean).astype(np.float32)
            covariance += x.T @ x
        eigenvalues, eigenvectors = np.linalg.eigh(covariance / n)
        eigenvalues = np.maximum(eigenvalues, 0.0)
    floor = 1.0 / np.sqrt(regularization)
    scales = 1.0 / np.sqrt(eigenvalues + regularization) - floor
    matrix = (eigenvectors * scales) @ eigenvectors.T
    matrix[np.diag_indices(d)] += floor
    return ZCA(mean=mean.astype(np.float32), matrix=matrix.astype(np.float32))


def scale_pixels(images):
    """Maps 8-bit pixels to `(x − 127.5)/128` (float32), as the recipe."""
    return (images.astype(np.float32) - 127.5) / 128.0
