"""CIFAR-10 and CIFAR-100 from TFDS (weight compander paper §IV-A).

Preprocessing (`preprocess="standard"`): pixels scaled to [0, 1], then
per-channel mean/std normalization with statistics of the training split.
Training augmentation: 4-pixel zero padding, a random 32×32 crop and a random
horizontal flip (the PyTorch CIFAR recipe the paper's "different data
augmentations" refers to).

`preprocess="zca"` is the weight normalization recipe instead: pixels
`(x − 127.5)/128`, then ZCA whitening fitted on the training split (see
`train.data.zca`). That recipe trains without augmentation
(`augment=False`); with `augment=True` the crop and flip act on the whitened
images and the padding is the mean image.
"""

from train.data import in_memory, tfds_source, transforms

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
PADDING = 4


def load(name, *, data_dir, **options):
    """Loads `cifar10` or `cifar100`; `options` as in `train.data.load`."""
    train = tfds_source.to_numpy(
        tfds_source.load_split(name, "train", data_dir=data_dir)
    )
    test = tfds_source.to_numpy(
        tfds_source.load_split(name, "test", data_dir=data_dir)
    )
    return in_memory.build(
        name,
        *train,
        *test,
        num_classes=NUM_CLASSES[name],
        scale=1 / 255,
        augment_fn=_augment,
        **options,
    )


def _augment(images, seed):
    return transforms.pad_random_crop_flip(images, PADDING, seed)
