"""Bundles of small datasets held as numpy arrays (CIFAR, Fashion-MNIST,
digits).

The decoded images stay in memory as one uint8 tensor (float32 after ZCA),
and every pipeline gathers its batches from it by index.
"""

import numpy as np
import tensorflow as tf

from train.data import pipelines, split, standardize, zca
from train.data.bundle import DataBundle


def build(
    name,
    train_images,
    train_labels,
    test_images,
    test_labels,
    *,
    num_classes,
    scale,
    augment_fn,
    batch_size,
    val_split,
    limit_train,
    seed,
    augment,
    preprocess,
):
    """Splits, preprocesses and wraps in-memory arrays into a `DataBundle`.

    Args:
        name: dataset name.
        train_images, test_images: uint8 arrays `(N, H, W, C)`.
        train_labels, test_labels: integer arrays `(N,)`.
        num_classes: number of classes.
        scale: maps a stored pixel to [0, 1] (`1/255` for 8-bit images).
        augment_fn: `None` or the training augmentation, a batch function
            `(images, seed) -> images` on float32 pixels (before
            normalization, so zero padding is black).
        batch_size, val_split, limit_train, seed, augment, preprocess: as in
            `train.data.load`.

    Returns:
        A `DataBundle`.
    """
    rng = np.random.default_rng(seed)
    train_idx, val_idx = split.train_val_indices(
        train_labels, val_split, limit_train, rng
    )
    # Only the examples in use are kept (and whitened).
    kept = np.concatenate([train_idx, val_idx])
    images = train_images[kept]
    labels = tf.constant(train_labels[kept], tf.int32)
    train_rows = np.arange(len(train_idx), dtype=np.int64)
    val_rows = np.arange(len(train_idx), len(kept), dtype=np.int64)
    if preprocess == "zca":
        whitening = zca.fit(zca.scale_pixels(images[train_rows]))
        images = whitening.apply(zca.scale_pixels(images))
        test_images = whitening.apply(zca.scale_pixels(test_images))

        def transform(batch):
            return batch

    else:
        mean, std = standardize.channel_stats(images[train_rows], scale)

        def transform(batch):
            return standardize.standardize(batch, scale, mean, std)

    images = tf.constant(images)
    shuffle_seed, augment_seed = pipelines.op_seeds(seed, 2)
    common = dict(batch_size=batch_size, transform=transform)
    train = pipelines.from_arrays(
        images,
        labels,
        train_rows,
        shuffle_seed=shuffle_seed,
        augment=augment_fn if augment else None,
        augment_seed=augment_seed,
        **common,
    )
    val = (
        pipelines.from_arrays(images, labels, val_rows, **common)
        if len(val_rows)
        else None
    )
    test = pipelines.from_arrays(
        tf.constant(test_images),
        tf.constant(test_labels, tf.int32),
        np.arange(len(test_labels), dtype=np.int64),
        **common,
    )
    init_source = pipelines.images_only(
        pipelines.from_arrays(
            images, labels, rng.permutation(train_rows), **common
        )
    )
    return DataBundle(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in train_images.shape[1:]),
        num_train=len(train_rows),
        num_val=len(val_rows),
        num_test=len(test_labels),
        init_source=init_source,
    )
