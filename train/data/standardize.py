"""Per-channel standardization fitted on the training split.

`x ↦ (scale·x − mean) / std` per channel, with `mean` and `std` measured on
the scaled training images (the usual "Normalize(mean, std)" of CIFAR
recipes, here computed from the examples actually trained on rather than
hard-coded, so that the same code serves CIFAR, Fashion-MNIST and digits).
"""

import numpy as np
import tensorflow as tf

# Mean and std of ImageNet's training images on the [0, 1] scale, the
# constants torchvision's ImageNet recipes normalize with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channel_stats(images, scale, chunk=4096):
    """Per-channel mean and standard deviation of `scale·images`.

    Args:
        images: array of shape `(N, H, W, C)` (any real dtype).
        scale: factor applied to the pixels first (`1/255` for 8-bit images).
        chunk: number of images converted to float64 at a time, to bound the
            temporary memory.

    Returns:
        `(mean, std)`: two float32 arrays of shape `(C,)`.
    """
    channels = images.shape[-1]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].astype(np.float64) * scale
        total += x.sum(axis=(0, 1, 2))
        squares += np.square(x).sum(axis=(0, 1, 2))
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


def standardize(images, scale, mean, std):
    """Returns `(scale·images − mean) / std` as float32 (a TF op)."""
    images = tf.cast(images, tf.float32) * scale
    return (images - tf.constant(mean, tf.float32)) / tf.constant(
        std, tf.float32
    )


def imagenet_standardize(images):
    """Standardizes 8-bit RGB pixels with the ImageNet mean and std."""
    return standardize(images, 1 / 255, IMAGENET_MEAN, IMAGENET_STD)
