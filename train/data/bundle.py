"""`DataBundle`: the datasets and facts a training run needs."""

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class DataBundle:
    """Training, validation and test pipelines of one dataset.

    Every pipeline yields `(images, labels)` batches: float32 NHWC images,
    already preprocessed, and int32 labels.

    Attributes:
        name: dataset name, as given to `train.data.load`.
        train: batched training pipeline; reshuffled every epoch and, when
            augmentation is on, re-augmented, deterministically for a seed.
        val: batched validation pipeline (held out of the training split,
            no augmentation, fixed order), or `None` without a validation
            split.
        test: batched test pipeline (the complete test split, no
            augmentation, fixed order).
        num_classes: number of classes.
        input_shape: `(H, W, C)` of the images the model receives.
        num_train: examples in `train`, after the validation split and
            `limit_train`.
        num_val: examples in `val` (0 when `val` is `None`).
        num_test: examples in `test`.
        init_source: unbatched pipeline of preprocessed, un-augmented
            training images in a seeded random order; what `init_batch`
            reads. `None` when the bundle was built by hand without one.
    """

    name: str
    train: tf.data.Dataset
    val: tf.data.Dataset | None
    test: tf.data.Dataset
    num_classes: int
    input_shape: tuple
    num_train: int
    num_val: int
    num_test: int
    init_source: tf.data.Dataset | None = dataclasses.field(
        default=None, repr=False
    )

    def init_batch(self, n):
        """The first `n` training images of a seeded random order.

        Preprocessed like the evaluation data and never augmented: the
        batch a data-dependent initialization (weight normalization,
        `keras_wc.initialize`) should see. The same seed gives the same
        images.

        Args:
            n: number of images, `1 <= n <= num_train`.

        Returns:
            A float32 numpy array of shape `(n, *input_shape)`.
        """
        if self.init_source is None:
            raise ValueError(
                f"DataBundle `{self.name}` has no `init_source`, so it "
                "cannot provide an initialization batch."
            )
        if (
            isinstance(n, bool)
            or not isinstance(n, (int, np.integer))
            or not 1 <= n <= self.num_train
        ):
            raise ValueError(
                f"`n` must be an integer in [1, num_train={self.num_train}]."
                f" Received: n={n!r}"
            )
        images = next(iter(self.init_source.take(n).batch(n)))
        return images.numpy()
