"""`tf.data` plumbing shared by the dataset loaders.

Determinism: every random choice is tied to the run's `seed`. Shuffling uses
`Dataset.shuffle(seed=..., reshuffle_each_iteration=True)` and augmentation
draws one stateless seed per batch (or image) from
`Dataset.random(seed=..., rerandomize_each_iteration=True)`, so each epoch
sees a new order and new crops, and two pipelines built with the same seed
replay the same epochs. TensorFlow combines these operation seeds with its
global seed (`keras.utils.set_random_seed`), which must therefore be the same
too. Parallel maps keep their order (`deterministic=True`).
"""

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def op_seeds(seed, count):
    """`count` independent TF operation seeds derived from `seed`."""
    state = np.random.SeedSequence([seed, 0x7F4A7C15]).generate_state(count)
    return [int(s) for s in state]


def seed_stream(seed):
    """An endless, seeded dataset of shape `[2]` int64 stateless seeds."""
    return tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True
    ).batch(2)


def finish(dataset):
    """Makes the order deterministic and prefetches."""
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options).prefetch(AUTOTUNE)


def from_arrays(
    images,
    labels,
    indices,
    *,
    batch_size,
    transform,
    augment=None,
    shuffle_seed=None,
    augment_seed=None,
):
    """A batched pipeline over the rows `indices` of in-memory arrays.

    Indices, not images, are shuffled and batched; each batch is then
    gathered and transformed as a whole, which keeps the per-example
    overhead of `tf.data` out of the hot path.

    Args:
        images: tensor `(N, H, W, C)` (uint8 pixels or float32).
        labels: int32 tensor `(N,)`.
        indices: int64 numpy array, the rows to visit in this order.
        batch_size: examples per batch (the last batch may be smaller).
        transform: batch function `float32 (B, H, W, C) -> float32`,
            the preprocessing (normalization).
        augment: `None` or a function `(batch, seed) -> batch` applied
            before `transform`.
        shuffle_seed: `None` for the given order, else the shuffle seed.
        augment_seed: seed of the augmentation stream (with `augment`).

    Returns:
        A prefetched `tf.data.Dataset` of `(images, labels)`.
    """

    def load(index):
        batch = tf.cast(tf.gather(images, index), tf.float32)
        return batch, tf.gather(labels, index)

    dataset = tf.data.Dataset.from_tensor_slices(indices)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(
            len(indices), seed=shuffle_seed, reshuffle_each_iteration=True
        )
    dataset = dataset.batch(batch_size)
    if augment is None:
        dataset = dataset.map(
            lambda index: _apply(transform, *load(index)),
            num_parallel_calls=AUTOTUNE,
        )
    else:
        dataset = tf.data.Dataset.zip(dataset, seed_stream(augment_seed))
        dataset = dataset.map(
            lambda index, seed: _apply(
                lambda batch: transform(augment(batch, seed)), *load(index)
            ),
            num_parallel_calls=AUTOTUNE,
        )
    return finish(dataset)


def images_only(dataset):
    """Unbatches a pipeline of `(images, labels)` into single images."""
    return dataset.map(lambda images, labels: images).unbatch()


def _apply(fn, images, labels):
    return fn(images), labels
