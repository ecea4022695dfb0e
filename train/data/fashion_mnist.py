"""Fashion-MNIST, offline from IDX files or from TFDS.

The IDX files (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`) are read from
`data_dir` when it holds them, else from Debian's `dataset-fashion-mnist`
package (`/usr/share/datasets/fashion-mnist/`); without either, TFDS
`fashion_mnist` is read from `data_dir`.

Preprocessing: pixels scaled to [0, 1], then standardized with the training
split's mean and std. No augmentation (`augment` has no effect): the
offline runs on this dataset compare parameterizations, not augmentation
recipes.
"""

import os

import numpy as np

from train.data import idx, in_memory, tfds_source

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
NUM_CLASSES = 10


def idx_dir(data_dir):
    """The first of `data_dir`, `DEBIAN_DIR` holding the 4 IDX files."""
    for directory in (data_dir, DEBIAN_DIR):
        if directory is not None and all(
            os.path.isfile(os.path.join(directory, file))
            for pair in FILES.values()
            for file in pair
        ):
            return directory
    return None


def read_split(directory, split):
    """`(images uint8 (N, 28, 28, 1), labels int32 (N,))` of one split."""
    image_file, label_file = FILES[split]
    images = idx.read_idx(os.path.join(directory, image_file))
    labels = idx.read_idx(os.path.join(directory, label_file))
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"Fashion-MNIST {split} files in {directory} disagree: images "
            f"{images.shape}, labels {labels.shape}; expected (N, H, W) and "
            "(N,)"
        )
    return images[..., None], labels.astype(np.int32)


def load(name, *, data_dir, **options):
    """Loads Fashion-MNIST; `options` as in `train.data.load`."""
    directory = idx_dir(data_dir)
    if directory is None:
        train = tfds_source.to_numpy(
            tfds_source.load_split(name, "train", data_dir=data_dir)
        )
        test = tfds_source.to_numpy(
            tfds_source.load_split(name, "test", data_dir=data_dir)
        )
    else:
        train = read_split(directory, "train")
        test = read_split(directory, "test")
    return in_memory.build(
        name,
        *train,
        *test,
        num_classes=NUM_CLASSES,
        scale=1 / 255,
        augment_fn=None,
        **options,
    )
