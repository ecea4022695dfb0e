"""Seeded splits of a training set: stratified subsets and index windows.

`split_sizes` fixes how many examples go to validation and training;
`train_val_indices` draws them. Two ways to carve a validation set (and a
smaller training set) out of a training split:

- `stratified_split` when every label is known in memory (CIFAR,
  Fashion-MNIST, digits, TinyImageNet): each class keeps its share, and the
  rounding of the per-class shares is fixed by largest remainders so that the
  total is exact.
- `rotated_windows` when the split is too large to read its labels
  (ImageNet): contiguous index windows starting at a seeded offset, relying on
  the example order being shuffled once when the dataset was prepared (TFDS
  does this).
"""

import numpy as np


def stratified_split(labels, count, rng):
    """Splits indices into a stratified subset of `count` and the rest.

    Class `c` with `n_c` of the `n` examples contributes `⌊count·n_c/n⌋`
    examples, plus one for the classes with the largest remainders (ties
    broken at random) until the subset holds exactly `count`. Inside a class
    the examples are drawn uniformly at random.

    Args:
        labels: 1-D integer array of length `n`.
        count: size of the subset, `0 <= count <= n`.
        rng: a `numpy.random.Generator`.

    Returns:
        `(subset, rest)`: two sorted int64 index arrays partitioning
        `range(n)`.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if not 0 <= count <= n:
        raise ValueError(
            f"`count` must be in [0, {n}]. Received: count={count}"
        )
    classes, inverse, sizes = np.unique(
        labels, return_inverse=True, return_counts=True
    )
    quota = sizes * (count / max(n, 1))
    take = np.floor(quota).astype(np.int64)
    missing = count - int(take.sum())
    if missing:
        # Random order first, then a stable sort by remainder: ties are
        # broken at random instead of by class id.
        order = rng.permutation(len(classes))
        order = order[np.argsort(-(quota - take)[order], kind="stable")]
        take[order[:missing]] += 1
    chosen = np.zeros(n, dtype=bool)
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        chosen[rng.permutation(members)[: take[c]]] = True
    return np.flatnonzero(chosen), np.flatnonzero(~chosen)


def rotated_windows(total, num_val, num_train, rng):
    """Contiguous validation and training windows at a seeded offset.

    The indices `0..total-1` are read as a circle starting at a random
    offset `o`: the validation window is `[o, o + num_val)` and the training
    window the next `num_train` indices, both modulo `total`. Each window is
    returned as at most two `(start, stop)` ranges.

    Args:
        total: number of examples in the split.
        num_val: size of the validation window.
        num_train: size of the training window, `num_val + num_train <=
            total`.
        rng: a `numpy.random.Generator`.

    Returns:
        `(train_ranges, val_ranges)`: lists of `(start, stop)` pairs with
        `start < stop`.
    """
    if num_val < 0 or num_train < 0 or num_val + num_train > total:
        raise ValueError(
            "`num_val` and `num_train` must be non-negative and sum to at "
            f"most `total`. Received: total={total}, num_val={num_val}, "
            f"num_train={num_train}"
        )
    offset = int(rng.integers(total))
    val = _circular_ranges(offset, num_val, total)
    train = _circular_ranges(offset + num_val, num_train, total)
    return train, val


def _circular_ranges(start, length, total):
    start %= total
    stop = start + length
    if stop <= total:
        return [(start, stop)] if length else []
    return [(start, total), (0, stop - total)]


def split_sizes(total, val_split, limit_train):
    """Sizes `(num_train, num_val)` of the splits of `total` examples.

    `num_val = round(val_split·total)`, at least 1 when `val_split > 0`;
    `num_train` is the rest, or `limit_train` when given.

    Raises:
        ValueError: if no training example is left, or `limit_train` asks
            for more than are left.
    """
    num_val = max(1, round(val_split * total)) if val_split > 0 else 0
    left = total - num_val
    if left < 1:
        raise ValueError(
            f"`val_split` leaves no training example out of {total}. "
            f"Received: val_split={val_split}"
        )
    if limit_train is None:
        return left, num_val
    if limit_train > left:
        raise ValueError(
            f"`limit_train` must be at most the {left} training examples "
            f"left after the validation split. Received: "
            f"limit_train={limit_train}"
        )
    return limit_train, num_val


def train_val_indices(labels, val_split, limit_train, rng):
    """Stratified, seeded training and validation indices.

    The validation set (`split_sizes`) is drawn first from all of `labels`;
    `limit_train` then keeps a stratified subset of the remaining examples.

    Args:
        labels: 1-D integer array of the training split's labels.
        val_split: fraction held out for validation, in [0, 1).
        limit_train: `None` or the number of training examples to keep.
        rng: a `numpy.random.Generator`.

    Returns:
        `(train, val)`: sorted int64 index arrays into `labels`.
    """
    labels = np.asarray(labels)
    num_train, num_val = split_sizes(len(labels), val_split, limit_train)
    val, train = stratified_split(labels, num_val, rng)
    if num_train < len(train):
        keep, _ = stratified_split(labels[train], num_train, rng)
        train = train[keep]
    return train, val
