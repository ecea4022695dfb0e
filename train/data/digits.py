"""scikit-learn's bundled 8×8 digits (always offline; 1,797 images).

The dataset has no official test split. A fixed stratified third is the test
set — 599 images drawn with seed 0, independent of the run's `seed` so that
every run is scored on the same images — and the other 1,198 form the
training split that `val_split` and `limit_train` carve up.

Pixels are integers in [0, 16]; they are scaled to [0, 1] and standardized
with the training split's mean and std. No augmentation (`augment` has no
effect).
"""

import numpy as np

from train.data import in_memory, split

NUM_CLASSES = 10
MAX_PIXEL = 16
TEST_FRACTION = 1 / 3
TEST_SEED = 0


def test_indices(labels):
    """`(train, test)` indices of the fixed stratified test split."""
    count = round(TEST_FRACTION * len(labels))
    test, train = split.stratified_split(
        labels, count, np.random.default_rng(TEST_SEED)
    )
    return train, test


def load(name, *, data_dir, **options):
    """Loads the digits; `data_dir` is unused; `options` as in `load`."""
    from sklearn.datasets import load_digits

    del data_dir
    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    train, test = test_indices(labels)
    return in_memory.build(
        name,
        images[train],
        labels[train],
        images[test],
        labels[test],
        num_classes=NUM_CLASSES,
        scale=1 / MAX_PIXEL,
        augment_fn=None,
        **options,
    )
