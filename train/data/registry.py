"""`load(name, ...)`: the dataset registry and its argument checks."""

import numbers
import os

from train.config import PREPROCESSING
from train.data import cifar, digits, fashion_mnist, imagenet, tiny_imagenet

_LOADERS = {
    "cifar10": cifar.load,
    "cifar100": cifar.load,
    "digits": digits.load,
    "fashion_mnist": fashion_mnist.load,
    "imagenet2012": imagenet.load,
    "tiny_imagenet": tiny_imagenet.load,
}
_ZCA = ("cifar10", "cifar100")
_RESIZABLE = ("imagenet2012", "tiny_imagenet")


def available():
    """Names accepted by `load`, sorted."""
    return sorted(_LOADERS)


def load(
    name,
    *,
    batch_size=128,
    data_dir=None,
    val_split=0.1,
    limit_train=None,
    seed=0,
    augment=True,
    preprocess="standard",
    image_size=None,
):
    """Loads a dataset as batched `tf.data` pipelines.

    | name            | source                                   | input     |
    |-----------------|------------------------------------------|-----------|
    | `cifar10`       | TFDS (prepared, offline)                 | 32×32×3   |
    | `cifar100`      | TFDS (prepared, offline)                 | 32×32×3   |
    | `imagenet2012`  | TFDS (prepared, offline)                 | 224×224×3 |
    | `tiny_imagenet` | `tiny-imagenet-200/` folder at data_dir  | 224×224×3 |
    | `fashion_mnist` | IDX files (Debian package), else TFDS    | 28×28×1   |
    | `digits`        | scikit-learn, bundled                    | 8×8×1     |

    Each dataset's module documents its preprocessing and augmentation
    (`train.data.cifar`, `.imagenet`, `.tiny_imagenet`, `.fashion_mnist`,
    `.digits`). Nothing is ever downloaded.

    The validation set (`val_split`, 10% as the weight compander paper's 9/1
    split) is carved from the training split with `seed`, stratified by
    class except on ImageNet; `limit_train` then keeps that many of the
    remaining training examples (stratified, seeded), the small-data regime.
    The test set is always complete. Statistics fitted on data (per-channel
    mean/std, ZCA) are fitted on the final training examples only.

    Args:
        name: one of `available()`.
        batch_size: examples per batch.
        data_dir: where the data lives: the TFDS data directory for the TFDS
            datasets, the `tiny-imagenet-200/` folder (or its parent) for
            `tiny_imagenet`, an optional folder of IDX files for
            `fashion_mnist`; unused for `digits`.
        val_split: fraction of the training split held out, in [0, 1);
            0 gives `val=None`.
        limit_train: `None`, or the number of training examples to keep.
        seed: non-negative integer fixing the split, the shuffling, the
            augmentation and the `init_batch` images.
        augment: whether to augment the training pipeline.
        preprocess: `"standard"`, or `"zca"` (CIFAR only) for the weight
            normalization recipe's ZCA whitening.
        image_size: ImageNet and TinyImageNet only: crop side, default 224.

    Returns:
        A `train.data.DataBundle`.

    Raises:
        ValueError: for an unknown name or a bad argument.
        FileNotFoundError: when the data is not found; the message says
            what to pass as `--data-dir`.

    Example:

    >>> bundle = train.data.load("digits", batch_size=64, seed=1)
    >>> bundle.input_shape, bundle.num_train, bundle.num_val
    ((8, 8, 1), 1078, 120)
    """
    if name not in _LOADERS:
        raise ValueError(
            f"Unknown dataset `{name}`; available: {available()}. "
            f"Received: name={name!r}"
        )
    _check_integer("batch_size", batch_size, minimum=1)
    if (
        isinstance(val_split, bool)
        or not isinstance(val_split, numbers.Real)
        or not 0 <= val_split < 1
    ):
        raise ValueError(
            f"`val_split` must be a number in [0, 1). "
            f"Received: val_split={val_split!r}"
        )
    if limit_train is not None:
        _check_integer("limit_train", limit_train, minimum=1)
    _check_integer("seed", seed, minimum=0)
    if not isinstance(augment, bool):
        raise TypeError(
            f"`augment` must be a bool. Received: augment={augment!r}"
        )
    if preprocess not in PREPROCESSING:
        raise ValueError(
            f"`preprocess` must be one of {PREPROCESSING}. "
            f"Received: preprocess={preprocess!r}"
        )
    if preprocess == "zca" and name not in _ZCA:
        raise ValueError(
            f"`preprocess='zca'` is only defined for {_ZCA} (the weight "
            f"normalization recipe). Received: name={name!r}"
        )
    options = dict(
        batch_size=batch_size,
        val_split=float(val_split),
        limit_train=limit_train,
        seed=seed,
        augment=augment,
        preprocess=preprocess,
    )
    if name in _RESIZABLE:
        if image_size is not None:
            _check_integer("image_size", image_size, minimum=1)
        options["image_size"] = image_size
    elif image_size is not None:
        raise ValueError(
            f"`image_size` only applies to {_RESIZABLE}. "
            f"Received: name={name!r}, image_size={image_size!r}"
        )
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
    return _LOADERS[name](name, data_dir=data_dir, **options)


def _check_integer(arg, value, *, minimum):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        raise ValueError(
            f"`{arg}` must be an integer >= {minimum}. "
            f"Received: {arg}={value!r}"
        )
