"""ImageNet (ILSVRC 2012) from TFDS `imagenet2012` (paper §IV-C).

The test set is the official validation split (50,000 images), as in the
paper. The validation split is a contiguous window of TFDS's `train` split
at a seeded offset, and `limit_train` keeps the next `limit_train` examples
(`train.data.split.rotated_windows`): TFDS stores the examples shuffled, and
reading 1.28 M labels to stratify would cost a full pass, so neither split is
stratified.

Preprocessing, the standard ImageNet recipe the paper's §IV-B/C describes:
training images get a random-resized crop (8%–100% of the area, aspect ratio
3/4–4/3) resized to 224×224 and a random horizontal flip; evaluation (and
un-augmented training) images are resized so that their shorter side is 256
and center-cropped to 224×224; all are normalized with the ImageNet mean and
std. `image_size` replaces 224 (and 256 by `round(image_size·256/224)`).
Training reads files in a seeded, per-epoch order and shuffles through a
10,000-example buffer of undecoded JPEGs.
"""

import numpy as np
import tensorflow as tf

from train.data import pipelines, split, standardize, tfds_source, transforms
from train.data.bundle import DataBundle

NUM_CLASSES = 1000
DEFAULT_SIZE = 224
SHUFFLE_BUFFER = 10_000


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
    """Loads `imagenet2012`; arguments as in `train.data.load`."""
    import tensorflow_datasets as tfds

    del preprocess  # Only "standard" reaches here.
    size = image_size or DEFAULT_SIZE
    resized = transforms.resize_for_crop(size)
    shuffle_seed, augment_seed, file_seed = pipelines.op_seeds(seed, 3)

    def jpegs(spec, **kwargs):
        return tfds_source.load_split(
            name,
            spec,
            data_dir=data_dir,
            decoders={"image": tfds.decode.SkipDecoding()},
            **kwargs,
        )

    def center(jpeg, label):
        image = tf.io.decode_jpeg(jpeg, channels=3)
        image = transforms.resize_shorter_side(image, resized)
        image = tf.ensure_shape(
            transforms.center_crop(image, size), [size] * 2 + [3]
        )
        return image, label

    def random_crop(jpeg_and_label, seed):
        jpeg, label = jpeg_and_label
        return transforms.decode_random_resized_crop(jpeg, size, seed), label

    def normalize(images, labels):
        return (
            standardize.imagenet_standardize(images),
            tf.cast(labels, tf.int32),
        )

    def batched(dataset, per_example):
        dataset = dataset.map(
            per_example, num_parallel_calls=pipelines.AUTOTUNE
        )
        dataset = dataset.batch(batch_size)
        return pipelines.finish(
            dataset.map(normalize, num_parallel_calls=pipelines.AUTOTUNE)
        )

    total = int(jpegs("train").cardinality())
    num_train, num_val = split.split_sizes(total, val_split, limit_train)
    train_ranges, val_ranges = split.rotated_windows(
        total, num_val, num_train, np.random.default_rng(seed)
    )
    train_split = split_string(train_ranges)
    train = jpegs(
        train_split,
        shuffle_files=True,
        read_config=tfds.ReadConfig(
            shuffle_seed=file_seed, shuffle_reshuffle_each_iteration=True
        ),
    ).shuffle(SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    if augment:
        train = batched(
            tf.data.Dataset.zip(train, pipelines.seed_stream(augment_seed)),
            random_crop,
        )
    else:
        train = batched(train, center)
    test = jpegs("validation")
    return DataBundle(
        name=name,
        train=train,
        val=batched(jpegs(split_string(val_ranges)), center)
        if val_ranges
        else None,
        test=batched(test, center),
        num_classes=NUM_CLASSES,
        input_shape=(size, size, 3),
        num_train=num_train,
        num_val=num_val,
        num_test=int(test.cardinality()),
        # TFDS stored the examples shuffled and the window starts at a
        # seeded offset, so its first examples are a seeded random sample.
        init_source=pipelines.images_only(batched(jpegs(train_split), center)),
    )


def split_string(ranges):
    """TFDS split string of `(start, stop)` ranges of the train split."""
    return "+".join(f"train[{start}:{stop}]" for start, stop in ranges)
