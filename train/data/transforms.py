"""Image transforms as TF ops, stateless-random so that pipelines replay.

Batch transforms take `(B, H, W, C)` float32 images; random ones take a
shape `[2]` integer `seed` (one per batch, drawn from a seeded
`tf.data.Dataset.random`) and draw an independent crop and flip per image.
Per-image transforms (resizing, ImageNet's random-resized crop) take and
return one `(H, W, C)` image.
"""

import tensorflow as tf


def random_crop_flip(images, size, seed):
    """Crops a random `size × size` window and flips it with probability ½.

    Each image of the batch gets its own offset (uniform over all windows
    inside the image) and its own flip; the crop is an exact gather, not an
    interpolation.

    Args:
        images: float32 tensor `(B, H, W, C)` with `H, W >= size`.
        size: side of the crop.
        seed: shape `[2]` integer tensor.

    Returns:
        A float32 tensor `(B, size, size, C)`.
    """
    batch = tf.shape(images)[0]
    height = tf.shape(images)[1]
    width = tf.shape(images)[2]
    seeds = tf.random.split(seed, 3)
    top = tf.random.stateless_uniform(
        [batch], seeds[0], maxval=height - size + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [batch], seeds[1], maxval=width - size + 1, dtype=tf.int32
    )
    window = tf.range(size)
    rows = top[:, None] + window[None, :]
    cols = left[:, None] + window[None, :]
    crops = tf.gather(images, rows, axis=1, batch_dims=1)
    crops = tf.gather(crops, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], seeds[2]) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(crops, [2]), crops)


def pad_random_crop_flip(images, padding, seed):
    """Zero-pads by `padding` pixels, then `random_crop_flip` to `(H, W)`.

    The CIFAR augmentation (`RandomCrop(32, padding=4)` + horizontal flip).
    Requires square images.
    """
    size = images.shape[1]
    padded = tf.pad(
        images, [[0, 0], [padding, padding], [padding, padding], [0, 0]]
    )
    return random_crop_flip(padded, size, seed)


def center_crop(images, size):
    """The central `size × size` window of `(..., H, W, C)` images."""
    top = (tf.shape(images)[-3] - size) // 2
    left = (tf.shape(images)[-2] - size) // 2
    return images[..., top : top + size, left : left + size, :]


def resize(image, size):
    """Resizes one RGB image to `size × size` (bilinear), returns float32."""
    image = tf.image.resize(image, [size, size])
    return tf.ensure_shape(image, [size, size, 3])


def resize_shorter_side(image, size):
    """Resizes one image so its shorter side is `size` (bilinear).

    The aspect ratio is kept (torchvision `Resize(size)`); returns float32.
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    factor = tf.cast(size, tf.float32) / tf.reduce_min(shape)
    new_shape = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), size)
    return tf.image.resize(image, new_shape)


def decode_random_resized_crop(jpeg, size, seed):
    """ImageNet's training crop, decoding only the sampled window.

    Samples a window covering 8%–100% of the image area with aspect ratio in
    [3/4, 4/3] (torchvision `RandomResizedCrop` defaults; after 10 failed
    attempts the whole image is used), decodes it with
    `tf.image.decode_and_crop_jpeg`, resizes it to `size × size` and flips it
    with probability ½.

    Args:
        jpeg: scalar string tensor, the encoded image.
        size: output side.
        seed: shape `[2]` integer tensor.

    Returns:
        A float32 tensor `(size, size, 3)` in [0, 255].
    """
    seeds = tf.random.split(seed, 2)
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(jpeg),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seeds[0],
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = resize(image, size)
    return tf.image.stateless_random_flip_left_right(image, seeds[1])


def resize_for_crop(size):
    """Side to resize to before a `size` crop: 256 for 224, same ratio else.

    The ImageNet evaluation convention (resize to 256, center crop 224).
    """
    return round(size * 256 / 224)
