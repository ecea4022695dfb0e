"""TinyImageNet from its extracted folder (weight compander paper §IV-B).

`data_dir` is the standard `tiny-imagenet-200/` folder (or its parent):

    wnids.txt                        one class id (wnid) per line
    train/<wnid>/images/*.JPEG       500 training images per class
    val/images/*.JPEG                10,000 validation images
    val/val_annotations.txt          "<file>\\t<wnid>\\t..." per line

Labels index the sorted wnids (the order of torchvision's `ImageFolder`).
As in the paper, the official validation set is the test set; the
validation split is carved from `train/`.

Preprocessing follows §IV-B, which states 224-pixel crops for these 64×64
images: training images are resized to 256×256, randomly cropped to 224×224
and randomly flipped; evaluation (and un-augmented training) images are
resized to 256×256 and center-cropped to 224×224; all are normalized with
the ImageNet mean and std. `image_size` scales both sides (resize to
`round(image_size·256/224)`, crop `image_size`), e.g. `image_size=64` for the
native resolution. The decoded 64×64 images are cached in memory (about
1.2 GB for the full dataset).
"""

import os

import numpy as np
import tensorflow as tf

from train.data import pipelines, split, standardize, transforms
from train.data.bundle import DataBundle

FOLDER = "tiny-imagenet-200"
DEFAULT_SIZE = 224
LAYOUT = (
    f"the extracted `{FOLDER}/` folder (wnids.txt, "
    "train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
    "val/val_annotations.txt)"
)


def find_root(data_dir):
    """The `tiny-imagenet-200` folder at or directly under `data_dir`."""
    if data_dir is None:
        raise ValueError(
            f"tiny_imagenet needs `--data-dir DIR` (Python: `data_dir=DIR`) "
            f"pointing at {LAYOUT}."
        )
    for root in (os.path.join(data_dir, FOLDER), data_dir):
        if os.path.isfile(os.path.join(root, "wnids.txt")):
            return root
    raise FileNotFoundError(
        f"No TinyImageNet at {data_dir}: pass `--data-dir DIR` (Python: "
        f"`data_dir=DIR`) pointing at {LAYOUT}."
    )


def list_files(root):
    """Lists the dataset folder.

    Returns:
        `(wnids, train_paths, train_labels, test_paths, test_labels)`, the
        paths as numpy string arrays and the labels as int32 arrays.
    """
    with open(os.path.join(root, "wnids.txt")) as f:
        wnids = sorted({line.strip() for line in f if line.strip()})
    index = {wnid: i for i, wnid in enumerate(wnids)}
    train_paths, train_labels = [], []
    for wnid in wnids:
        directory = os.path.join(root, "train", wnid, "images")
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                f"TinyImageNet class folder {directory} is missing; "
                f"`--data-dir` must point at {LAYOUT}."
            )
        files = sorted(
            name
            for name in os.listdir(directory)
            if name.lower().endswith((".jpeg", ".jpg"))
        )
        train_paths += [os.path.join(directory, name) for name in files]
        train_labels += [index[wnid]] * len(files)
    annotations = os.path.join(root, "val", "val_annotations.txt")
    if not os.path.isfile(annotations):
        raise FileNotFoundError(
            f"{annotations} is missing; `--data-dir` must point at {LAYOUT}."
        )
    test_paths, test_labels = [], []
    with open(annotations) as f:
        for line in f:
            fields = line.split("\t")
            if len(fields) < 2:
                continue
            if fields[1] not in index:
                raise ValueError(
                    f"{annotations} labels {fields[0]} with `{fields[1]}`, "
                    "which is not in wnids.txt."
                )
            test_paths.append(os.path.join(root, "val", "images", fields[0]))
            test_labels.append(index[fields[1]])
    return (
        wnids,
        np.array(train_paths),
        np.array(train_labels, np.int32),
        np.array(test_paths),
        np.array(test_labels, np.int32),
    )


def load(
    name,
    *,
    data_dir,
    batch_size,
    val_split,
    limit_train,
    seed,
    augment,
    preprocess,
    image_size,
):
    """Loads TinyImageNet; arguments as in `train.data.load`."""
    del preprocess  # Only "standard" reaches here.
    root = find_root(data_dir)
    wnids, paths, labels, test_paths, test_labels = list_files(root)
    if len(paths) == 0:
        raise FileNotFoundError(
            f"No training JPEGs under {root}/train; `--data-dir` must point "
            f"at {LAYOUT}."
        )
    rng = np.random.default_rng(seed)
    train_idx, val_idx = split.train_val_indices(
        labels, val_split, limit_train, rng
    )
    size = image_size or DEFAULT_SIZE
    resized = transforms.resize_for_crop(size)
    shuffle_seed, augment_seed = pipelines.op_seeds(seed, 2)

    def decoded(rows):
        return _decoded(paths[rows], labels[rows])

    def resize(image, label):
        return transforms.resize(image, resized), label

    def evaluate(images, labels):
        return (
            standardize.imagenet_standardize(
                transforms.center_crop(images, size)
            ),
            labels,
        )

    def augmented(images_and_labels, seed):
        images, labels = images_and_labels
        images = transforms.random_crop_flip(images, size, seed)
        return standardize.imagenet_standardize(images), labels

    def evaluation(dataset):
        dataset = dataset.map(resize, num_parallel_calls=pipelines.AUTOTUNE)
        dataset = dataset.batch(batch_size)
        return pipelines.finish(
            dataset.map(evaluate, num_parallel_calls=pipelines.AUTOTUNE)
        )

    train = decoded(train_idx).cache()
    train = train.shuffle(
        len(train_idx), seed=shuffle_seed, reshuffle_each_iteration=True
    )
    if augment:
        train = train.map(resize, num_parallel_calls=pipelines.AUTOTUNE)
        train = tf.data.Dataset.zip(
            train.batch(batch_size), pipelines.seed_stream(augment_seed)
        )
        train = pipelines.finish(
            train.map(augmented, num_parallel_calls=pipelines.AUTOTUNE)
        )
    else:
        train = evaluation(train)
    return DataBundle(
        name=name,
        train=train,
        val=evaluation(decoded(val_idx).cache()) if len(val_idx) else None,
        test=evaluation(_decoded(test_paths, test_labels).cache()),
        num_classes=len(wnids),
        input_shape=(size, size, 3),
        num_train=len(train_idx),
        num_val=len(val_idx),
        num_test=len(test_paths),
        init_source=pipelines.images_only(
            evaluation(decoded(rng.permutation(train_idx)))
        ),
    )


def _decoded(paths, labels):
    """The decoded uint8 images of JPEG files, with their labels."""

    def decode(path, label):
        return tf.io.decode_jpeg(tf.io.read_file(path), channels=3), label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    return dataset.map(decode, num_parallel_calls=pipelines.AUTOTUNE)
