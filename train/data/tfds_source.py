"""Offline access to prepared TensorFlow Datasets (never downloads)."""

import numpy as np


def load_split(name, split, *, data_dir, **kwargs):
    """`tfds.load` of a prepared dataset as `(image, label)` pairs.

    Args:
        name: TFDS dataset name.
        split: TFDS split string (slicing such as `"train[:10]+train[20:]"`
            is allowed).
        data_dir: TFDS data directory, or `None` for TFDS's default
            (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        **kwargs: forwarded to `tfds.load` (`decoders`, `shuffle_files`,
            `read_config`).

    Returns:
        A `tf.data.Dataset`.

    Raises:
        FileNotFoundError: if the dataset is not prepared in `data_dir`.
    """
    import tensorflow_datasets as tfds

    try:
        return tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=False,
            as_supervised=True,
            **kwargs,
        )
    except AssertionError as error:
        # TFDS signals "not prepared in data_dir" with an AssertionError.
        where = data_dir or "the default TFDS data dir"
        raise FileNotFoundError(
            f"No prepared TFDS data for `{name}` in {where}: pass "
            f"`--data-dir DIR` (Python: `data_dir=DIR`) where "
            f"DIR/{name}/<version>/ holds the files written by "
            f"`tfds build {name}`{_BUILD_HINTS.get(name, '')} "
            "(this loader never downloads)."
        ) from error


def to_numpy(dataset, chunk=8192):
    """Reads a dataset of `(image, label)` pairs into two numpy arrays."""
    images, labels = [], []
    for x, y in dataset.batch(chunk).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


_BUILD_HINTS = {
    "imagenet2012": (
        " --manual_dir=M, M holding ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar"
    ),
    "fashion_mnist": (
        ", or where DIR holds the four Fashion-MNIST IDX .gz files "
        "(`apt-get install dataset-fashion-mnist` puts them in "
        "/usr/share/datasets/fashion-mnist)"
    ),
}
