"""Weight decay: PyTorch's `weight_decay` in Keras terms."""

import math

import keras
import numpy as np


def l2_from_pytorch(weight_decay):
    """The Keras `L2` regularizer equal to PyTorch's `weight_decay`.

    PyTorch's SGD/Adam `weight_decay=λ` adds `λ·w` to the gradient, i.e. the
    loss term `(λ/2)·‖w‖²`. Keras's `L2(l2)` adds `l2·‖w‖²` to the loss, whose
    gradient is `2·l2·w`. So PyTorch's `λ` is Keras's `L2(λ/2)`: the WC
    paper's 1e-4 and 5e-4 are `L2(5e-5)` and `L2(2.5e-4)`.

    On a WC layer with fixed `a, b` the regularizer acts on `Ψ(v)` (Eq. 5),
    with learnable `a, b` on `v`.

    Args:
        weight_decay: PyTorch's `weight_decay`: a finite number ≥ 0
            (Python or NumPy).

    Returns:
        A `keras.regularizers.L2`, or `None` for 0.

    Example:

    >>> keras_wc.l2_from_pytorch(5e-4).l2
    0.00025
    """
    if isinstance(weight_decay, bool) or not isinstance(
        weight_decay, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            "`weight_decay` must be a number. "
            f"Received: weight_decay={weight_decay!r}"
        )
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(
            "`weight_decay` must be a finite number >= 0. "
            f"Received: weight_decay={weight_decay}"
        )
    if weight_decay == 0:
        return None
    return keras.regularizers.L2(float(weight_decay) / 2)
