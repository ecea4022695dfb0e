"""The data layer: splits, IDX reading, preprocessing and pipelines.

TFDS datasets run on `tfds.testing.mock_data` (random images; every split
yields the same examples; split slicing is ignored), TinyImageNet on a small
folder written here, Fashion-MNIST on IDX files written here and on the
Debian package's files when installed.
"""

import contextlib
import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from train import data
from train.data import digits, fashion_mnist, idx, imagenet, split, zca

# Nothing here depends on the Keras backend: run once (tests/conftest.py).
pytestmark = pytest.mark.backend_independent

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def collect(dataset):
    """All `(images, labels)` of a batched pipeline as numpy arrays."""
    images, labels = zip(*dataset.as_numpy_iterator(), strict=True)
    return np.concatenate(images), np.concatenate(labels)


@contextlib.contextmanager
def mock_tfds(num_examples):
    with tfds.testing.mock_data(num_examples=num_examples):
        yield


def raw_tfds(name, split_name="train"):
    """The mocked raw `(images, labels)`, read without `train.data`."""
    dataset = tfds.load(name, split=split_name, as_supervised=True)
    images, labels = next(iter(tfds.as_numpy(dataset.batch(10_000))))
    return images, labels


def write_idx(path, array, compress=True):
    """An independent IDX encoder (magic, big-endian dims, big-endian data)."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D}
    kind = array.dtype.kind + str(array.dtype.itemsize)
    header = bytes([0, 0, codes[kind], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)


# --- registry and argument checks -------------------------------------------


def test_available_lists_every_dataset():
    assert data.available() == [
        "cifar10",
        "cifar100",
        "digits",
        "fashion_mnist",
        "imagenet2012",
        "tiny_imagenet",
    ]


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match=r"Unknown dataset `mnist`.*cifar10"):
        data.load("mnist")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"batch_size": 0}, r"`batch_size` must be an integer >= 1.*=0"),
        ({"batch_size": 2.5}, r"`batch_size`.*=2.5"),
        ({"batch_size": True}, r"`batch_size`.*=True"),
        ({"val_split": -0.1}, r"`val_split` must be a number in \[0, 1\)"),
        ({"val_split": 1.0}, r"`val_split`.*=1.0"),
        ({"val_split": "0.1"}, r"`val_split`.*='0.1'"),
        ({"limit_train": 0}, r"`limit_train` must be an integer >= 1.*=0"),
        ({"limit_train": -3}, r"`limit_train`.*=-3"),
        ({"seed": -1}, r"`seed` must be an integer >= 0.*=-1"),
        ({"preprocess": "pca"}, r"`preprocess` must be one of.*'pca'"),
        ({"preprocess": "zca"}, r"only defined for.*cifar10.*'digits'"),
        ({"image_size": 32}, r"`image_size` only applies to.*'digits'"),
        ({"limit_train": 5000}, r"at most the 1078 training.*=5000"),
        ({"val_split": 0.9999}, r"leaves no training example"),
    ],
)
def test_bad_arguments_raise(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        data.load("digits", **kwargs)


def test_augment_must_be_bool():
    with pytest.raises(TypeError, match=r"`augment` must be a bool.*'yes'"):
        data.load("digits", augment="yes")


def test_image_size_is_validated(tmp_path):
    with pytest.raises(ValueError, match=r"`image_size`.*>= 1.*=0"):
        data.load("tiny_imagenet", data_dir=tmp_path, image_size=0)


@pytest.mark.parametrize(
    "name, hint",
    [
        ("cifar10", "tfds build cifar10"),
        ("imagenet2012", "manual_dir"),
        ("fashion_mnist", "apt-get install dataset-fashion-mnist"),
    ],
)
def test_missing_tfds_data_says_what_to_pass(tmp_path, monkeypatch, name, hint):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="--data-dir") as info:
        data.load(name, data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message and hint in message


def test_init_batch_rejects_bad_sizes():
    bundle = data.load("digits")
    for n in (0, bundle.num_train + 1, 2.0):
        with pytest.raises(ValueError, match=r"`n` must be an integer"):
            bundle.init_batch(n)
    bare = data.DataBundle(
        "x", bundle.train, None, bundle.test, 10, (8, 8, 1), 1, 0, 1
    )
    with pytest.raises(ValueError, match="no `init_source`"):
        bare.init_batch(1)


# --- splits ------------------------------------------------------------------


def test_stratified_split_is_exact_and_proportional():
    labels = np.repeat(np.arange(5), [10, 20, 30, 7, 3])
    subset, rest = split.stratified_split(labels, 23, np.random.default_rng(0))
    assert len(subset) == 23
    np.testing.assert_array_equal(
        np.sort(np.concatenate([subset, rest])), np.arange(len(labels))
    )
    share = np.bincount(labels[subset], minlength=5)
    expected = np.bincount(labels) * 23 / len(labels)
    assert np.all(np.abs(share - expected) < 1)
    again, _ = split.stratified_split(labels, 23, np.random.default_rng(0))
    other, _ = split.stratified_split(labels, 23, np.random.default_rng(1))
    np.testing.assert_array_equal(subset, again)
    assert not np.array_equal(subset, other)


def test_stratified_split_rejects_bad_count():
    with pytest.raises(ValueError, match=r"`count` must be in \[0, 3\]"):
        split.stratified_split([0, 1, 1], 4, np.random.default_rng(0))


def test_rotated_windows_partition_a_circle():
    for seed in range(20):
        train, val = split.rotated_windows(
            10, 3, 5, np.random.default_rng(seed)
        )
        train_idx = np.concatenate([np.arange(a, b) for a, b in train])
        val_idx = np.concatenate([np.arange(a, b) for a, b in val])
        assert len(train_idx) == 5 and len(val_idx) == 3
        assert not set(train_idx) & set(val_idx)
        # Contiguous on the circle: the training window follows val.
        np.testing.assert_array_equal(
            np.concatenate([val_idx, train_idx]) % 10,
            (val_idx[0] + np.arange(8)) % 10,
        )
    with pytest.raises(ValueError, match="sum to at most"):
        split.rotated_windows(10, 6, 5, np.random.default_rng(0))


def test_split_sizes_round_and_limit():
    assert split.split_sizes(50_000, 0.1, None) == (45_000, 5_000)
    assert split.split_sizes(7, 0.01, None) == (6, 1)
    assert split.split_sizes(50, 0.0, 20) == (20, 0)


# --- IDX ---------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-5, 0, 70000], np.int32),
        np.array([[1.5, -2.25]], np.float32),
    ],
)
def test_read_idx_matches_independent_encoder(tmp_path, array, compress):
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array, compress)
    result = idx.read_idx(path)
    assert result.shape == array.shape
    assert result.dtype == array.dtype
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize(
    "payload, pattern",
    [
        (b"\x01\x00\x08\x01", "two zero bytes"),
        (b"\x00\x00\x07\x01", "unknown IDX element type 0x07"),
        (b"\x00\x00\x08\x02\x00\x00", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "implies 13"),
    ],
)
def test_read_idx_rejects_malformed_files(tmp_path, payload, pattern):
    path = tmp_path / "bad.idx"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=pattern):
        idx.read_idx(path)


@pytest.mark.skipif(
    fashion_mnist.idx_dir(None) is None,
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_debian_fashion_mnist_files():
    directory = fashion_mnist.idx_dir(None)
    for name, count in (("train", 60_000), ("test", 10_000)):
        images, labels = fashion_mnist.read_split(directory, name)
        assert images.shape == (count, 28, 28, 1)
        assert images.dtype == np.uint8 and labels.dtype == np.int32
        np.testing.assert_array_equal(np.unique(labels), np.arange(10))
        assert images.max() == 255


def write_fashion_idx(directory, rng, train=40, test=10):
    arrays = {}
    for split_name, count in (("train", train), ("test", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        image_file, label_file = fashion_mnist.FILES[split_name]
        write_idx(directory / image_file, images)
        write_idx(directory / label_file, labels)
        arrays[split_name] = images, labels
    return arrays


def test_fashion_mnist_from_idx_files(tmp_path):
    arrays = write_fashion_idx(tmp_path, np.random.default_rng(0))
    bundle = data.load(
        "fashion_mnist", data_dir=tmp_path, val_split=0.0, batch_size=16
    )
    assert (bundle.num_train, bundle.num_val, bundle.num_test) == (40, 0, 10)
    assert bundle.val is None and bundle.input_shape == (28, 28, 1)
    # Standardized with the training split's statistics.
    raw = arrays["train"][0].astype(np.float64) / 255
    test_images, test_labels = collect(bundle.test)
    expected = (arrays["test"][0] / 255 - raw.mean()) / raw.std()
    np.testing.assert_allclose(test_images[..., 0], expected, atol=1e-5)
    np.testing.assert_array_equal(test_labels, arrays["test"][1])


def test_fashion_mnist_falls_back_to_tfds(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "none"))
    with mock_tfds(20):
        bundle = data.load("fashion_mnist", data_dir=tmp_path, batch_size=8)
        images, labels = next(iter(bundle.train))
    assert images.shape == (8, 28, 28, 1) and labels.dtype == tf.int32
    assert (bundle.num_train, bundle.num_val, bundle.num_test) == (18, 2, 20)


# --- digits ------------------------------------------------------------------


def test_digits_fixed_stratified_test_split():
    bundle = data.load("digits", seed=3)
    assert (bundle.num_train, bundle.num_val, bundle.num_test) == (
        1078,
        120,
        599,
    )
    from sklearn.datasets import load_digits

    labels = load_digits().target
    train, test = digits.test_indices(labels)
    assert len(test) == 599 and not set(train) & set(test)
    assert np.all(
        np.abs(np.bincount(labels[test]) - np.bincount(labels) / 3) < 1
    )
    # The test set does not depend on the run's seed.
    _, first = collect(bundle.test)
    _, second = collect(data.load("digits", seed=4).test)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, labels[test])


def test_digits_validation_split_is_stratified():
    bundle = data.load("digits", seed=1, limit_train=500)
    _, val_labels = collect(bundle.val)
    _, train_labels = collect(bundle.train)
    assert len(train_labels) == 500 and len(val_labels) == 120
    train_share = np.bincount(train_labels, minlength=10) / 500
    val_share = np.bincount(val_labels, minlength=10) / 120
    np.testing.assert_allclose(train_share, val_share, atol=1 / 60)


# --- CIFAR (TFDS, mocked) ----------------------------------------------------


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_shapes_sizes_and_normalization(name, classes):
    with mock_tfds(50):
        bundle = data.load(name, batch_size=16, augment=False)
        raw, raw_labels = raw_tfds(name, "test")
    assert bundle.num_classes == classes and bundle.input_shape == (32, 32, 3)
    assert (bundle.num_train, bundle.num_val, bundle.num_test) == (45, 5, 50)
    images, labels = next(iter(bundle.train))
    assert images.shape == (16, 32, 32, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    train_images, train_labels = collect(bundle.train)
    val_images, _ = collect(bundle.val)
    assert len(train_images) == 45 and len(val_images) == 5
    assert train_labels.min() >= 0 and train_labels.max() < classes
    np.testing.assert_allclose(train_images.mean((0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(train_images.std((0, 1, 2)), 1, atol=1e-3)
    # The test split is the complete one, in order, with the same affine
    # normalization: check it against the raw pixels.
    test_images, test_labels = collect(bundle.test)
    np.testing.assert_array_equal(test_labels, raw_labels)
    flat_raw = raw.reshape(-1, 3) / 255
    flat_test = test_images.reshape(-1, 3)
    for c in range(3):
        slope, intercept = np.polyfit(flat_raw[:, c], flat_test[:, c], 1)
        residual = flat_test[:, c] - (slope * flat_raw[:, c] + intercept)
        assert slope > 0 and np.abs(residual).max() < 1e-4


def test_cifar_test_normalization_uses_train_statistics():
    with mock_tfds(30):
        bundle = data.load("cifar10", val_split=0.0, augment=False)
        raw, _ = raw_tfds("cifar10", "test")
    scaled = raw.astype(np.float64) / 255
    expected = (scaled - scaled.mean((0, 1, 2))) / scaled.std((0, 1, 2))
    test_images, _ = collect(bundle.test)
    np.testing.assert_allclose(test_images, expected, atol=1e-4)


def find_crop(image, padded, size):
    """Whether `image` is a (possibly flipped) crop of `padded`."""
    for flipped in (image, image[:, ::-1]):
        for top in range(padded.shape[0] - size + 1):
            for left in range(padded.shape[1] - size + 1):
                window = padded[top : top + size, left : left + size]
                if np.allclose(window, flipped, atol=1e-4):
                    return True
    return False


def test_cifar_augmentation_is_a_padded_crop_and_flip():
    with mock_tfds(24):
        plain = data.load("cifar10", val_split=0.0, augment=False, seed=5)
        augmented = data.load("cifar10", val_split=0.0, seed=5)
        raw, _ = raw_tfds("cifar10")
    images, labels = collect(plain.train)
    aug_images, aug_labels = collect(augmented.train)
    # Same seed, same order: augmentation changes the pixels only.
    np.testing.assert_array_equal(labels, aug_labels)
    assert aug_images.shape == images.shape
    assert not np.allclose(aug_images, images)
    # RandomCrop(32, padding=4) pads with black, before normalization.
    scaled = raw / 255
    black = -scaled.mean((0, 1, 2)) / scaled.std((0, 1, 2))
    for image, aug in zip(images[:6], aug_images[:6], strict=True):
        padded = np.pad(image - black, ((4, 4), (4, 4), (0, 0))) + black
        assert find_crop(aug, padded, 32)
    # Crops move: some image is neither the original nor its mirror image.
    assert any(
        not np.allclose(aug, image) and not np.allclose(aug, image[:, ::-1])
        for image, aug in zip(images, aug_images, strict=True)
    )


def test_cifar_pipelines_are_deterministic_per_seed():
    with mock_tfds(20):
        first = data.load("cifar10", batch_size=8, seed=1)
        second = data.load("cifar10", batch_size=8, seed=1)
        other = data.load("cifar10", batch_size=8, seed=2)
    epochs = [collect(first.train) for _ in range(2)]
    replay = [collect(second.train) for _ in range(2)]
    for (x, y), (x2, y2) in zip(epochs, replay, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    # A new epoch reshuffles and re-augments.
    assert not np.array_equal(epochs[0][0], epochs[1][0])
    assert not np.array_equal(epochs[0][0], collect(other.train)[0])
    np.testing.assert_array_equal(collect(first.val)[0], collect(second.val)[0])


def test_init_batch_is_seeded_and_unaugmented():
    with mock_tfds(30):
        bundle = data.load("cifar10", val_split=0.0, seed=7)
        plain = data.load("cifar10", val_split=0.0, seed=7, augment=False)
        other = data.load("cifar10", val_split=0.0, seed=8)
    batch = bundle.init_batch(10)
    assert batch.shape == (10, 32, 32, 3) and batch.dtype == np.float32
    reference, _ = collect(plain.train)
    for image in batch:
        assert np.any(np.all(reference == image, axis=(1, 2, 3)))
    np.testing.assert_array_equal(batch, bundle.init_batch(10))
    assert not np.array_equal(batch, other.init_batch(10))


def test_cifar_limit_train_keeps_n_examples():
    with mock_tfds(50):
        bundle = data.load("cifar10", limit_train=20, batch_size=64)
    train_images, _ = collect(bundle.train)
    assert bundle.num_train == 20 and len(train_images) == 20
    assert bundle.num_val == 5 and bundle.num_test == 50


def reference_zca(x, regularization=1e-5):
    """openai/weightnorm `ZCA.fit` + `apply`: SVD of the covariance."""
    mean = x.mean(0)
    u, s, _ = np.linalg.svd((x - mean).T @ (x - mean) / len(x))
    return (x - mean) @ (u / np.sqrt(s + regularization)) @ u.T


@pytest.mark.parametrize("n", [200, 7])
def test_zca_matches_reference_formula(n):
    # n >= d (covariance path) and n < d (thin SVD path).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12)) @ rng.normal(size=(12, 12)) + 3.0
    whitening = zca.fit(x.reshape(n, 2, 2, 3))
    white = whitening.apply(x.reshape(n, 2, 2, 3))
    assert white.shape == (n, 2, 2, 3) and white.dtype == np.float32
    np.testing.assert_allclose(
        white.reshape(n, 12), reference_zca(x), rtol=1e-4, atol=2e-3
    )
    np.testing.assert_allclose(whitening.matrix, whitening.matrix.T, atol=1e-6)


def test_zca_whitens_full_rank_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 6)) @ rng.normal(size=(6, 6)) + 3.0
    white = zca.fit(x).apply(x)
    np.testing.assert_allclose(white.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(6), atol=1e-3)
    with pytest.raises(ValueError, match="`regularization` must be positive"):
        zca.fit(x, regularization=0.0)


def test_cifar_zca_whitening_matches_reference_formula():
    with mock_tfds(40):
        bundle = data.load(
            "cifar10", preprocess="zca", val_split=0.0, augment=False
        )
        raw, _ = raw_tfds("cifar10", "test")
    # Pixels (x - 127.5)/128, then ZCA fitted on the same 40 images. Rows in
    # the span of the data satisfy X(XᵀX/n + εI)^{-1/2} = (XXᵀ/n + εI)^{-1/2}X,
    # so the 40×40 Gram matrix gives the reference without a 3072² SVD.
    x = (raw.reshape(len(raw), -1).astype(np.float64) - 127.5) / 128
    centered = x - x.mean(0)
    values, vectors = np.linalg.eigh(centered @ centered.T / len(x))
    gram_root = (vectors / np.sqrt(np.maximum(values, 0) + 1e-5)) @ vectors.T
    expected = (gram_root @ centered).reshape(raw.shape)
    test_images, _ = collect(bundle.test)
    assert test_images.dtype == np.float32
    np.testing.assert_allclose(test_images, expected, atol=2e-3)
    init = bundle.init_batch(4)
    assert np.all(
        [
            np.any(np.all(np.isclose(test_images, image), axis=(1, 2, 3)))
            for image in init
        ]
    )


# --- ImageNet (TFDS, mocked) -------------------------------------------------


def test_imagenet_shapes_and_sizes():
    with mock_tfds(6):
        bundle = data.load("imagenet2012", batch_size=4, seed=3)
        small = data.load("imagenet2012", batch_size=3, image_size=32)
        images, labels = next(iter(bundle.train))
        test_images, _ = next(iter(bundle.test))
        small_images, _ = next(iter(small.train))
        init = small.init_batch(2)
    assert images.shape == (4, 224, 224, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    assert 0 <= int(tf.reduce_min(labels)) <= int(tf.reduce_max(labels)) < 1000
    assert test_images.shape == (4, 224, 224, 3)
    assert bundle.num_classes == 1000 and bundle.input_shape == (224, 224, 3)
    # Mocked TFDS has 6 training and 6 validation examples.
    assert (bundle.num_train, bundle.num_val, bundle.num_test) == (5, 1, 6)
    assert small_images.shape == (3, 32, 32, 3) and init.shape == (2, 32, 32, 3)
    assert np.all(np.isfinite(images)) and abs(float(np.mean(images))) < 3


def test_imagenet_windows_become_tfds_slices():
    spec = imagenet.split_string([(8, 10), (0, 3)])
    assert spec == "train[8:10]+train[0:3]"
    info = tfds.core.SplitInfo(name="train", shard_lengths=[10], num_bytes=0)
    absolute = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
        {"train": info}
    )
    # TFDS writes a bound at the split's edge as None.
    bounds = [(a.from_ or 0, a.to or 10) for a in absolute]
    assert bounds == [(8, 10), (0, 3)]


# --- TinyImageNet (synthetic folder) -----------------------------------------


WNIDS = ["n02", "n01"]


def gradient_image(level):
    """A 64×64 RGB image: a horizontal ramp plus a constant level."""
    ramp = np.linspace(0, 150, 64, dtype=np.float32)[None, :, None]
    image = np.broadcast_to(ramp + level, (64, 64, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_tiny_imagenet(parent):
    root = parent / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for label, wnid in enumerate(sorted(WNIDS)):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(3):
            jpeg = tf.io.encode_jpeg(gradient_image(40 * label + 10 * i))
            (folder / f"{wnid}_{i}.JPEG").write_bytes(jpeg.numpy())
    lines = []
    for i, wnid in enumerate(WNIDS):
        jpeg = tf.io.encode_jpeg(gradient_image(100))
        (root / "val" / "images" / f"val_{i}.JPEG").write_bytes(jpeg.numpy())
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    return root


def test_tiny_imagenet_from_folder(tmp_path):
    root = write_tiny_imagenet(tmp_path)
    bundle = data.load(
        "tiny_imagenet", data_dir=tmp_path, val_split=1 / 3, batch_size=4
    )
    assert bundle.num_classes == 2 and bundle.input_shape == (224, 224, 3)
    assert (bundle.num_train, bundle.num_val, bundle.num_test) == (4, 2, 2)
    test_images, test_labels = collect(bundle.test)
    _, val_labels = collect(bundle.val)
    assert test_images.shape == (2, 224, 224, 3)
    # Labels index the sorted wnids; one validation image per class.
    np.testing.assert_array_equal(test_labels, [1, 0])
    np.testing.assert_array_equal(np.sort(val_labels), [0, 1])
    # Evaluation: resize to 256, center crop 224, ImageNet normalization.
    resized = tf.image.resize(
        tf.io.decode_jpeg((root / "val/images/val_0.JPEG").read_bytes()),
        [256, 256],
    ).numpy()[16:240, 16:240]
    expected = (resized / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(test_images[0], expected, atol=1e-4)
    # The root folder itself is accepted too.
    assert (
        data.load("tiny_imagenet", data_dir=root, image_size=16).num_test == 2
    )


def test_tiny_imagenet_augmentation_and_init_batch(tmp_path):
    write_tiny_imagenet(tmp_path)
    options = dict(data_dir=tmp_path, val_split=0.0, image_size=32, seed=4)
    augmented = data.load("tiny_imagenet", **options)
    plain = data.load("tiny_imagenet", augment=False, **options)
    images, labels = collect(augmented.train)
    plain_images, plain_labels = collect(plain.train)
    np.testing.assert_array_equal(labels, plain_labels)
    assert images.shape == plain_images.shape == (6, 32, 32, 3)
    assert not np.allclose(images, plain_images)
    init = augmented.init_batch(3)
    assert init.shape == (3, 32, 32, 3)
    for image in init:
        assert np.any(np.all(plain_images == image, axis=(1, 2, 3)))


def test_tiny_imagenet_missing_data_says_what_to_pass(tmp_path):
    with pytest.raises(ValueError, match="needs `--data-dir"):
        data.load("tiny_imagenet")
    with pytest.raises(FileNotFoundError, match="No TinyImageNet at .*wnids"):
        data.load("tiny_imagenet", data_dir=tmp_path / "nowhere")
    root = write_tiny_imagenet(tmp_path)
    os.rename(root / "train" / "n01", root / "train" / "other")
    with pytest.raises(FileNotFoundError, match=r"n01/images is missing"):
        data.load("tiny_imagenet", data_dir=tmp_path)
    os.rename(root / "train" / "other", root / "train" / "n01")
    with open(root / "val" / "val_annotations.txt", "a") as f:
        f.write("\nval_9.JPEG\tn99\t0\t0\t1\t1")
    with pytest.raises(ValueError, match="`n99`, which is not in wnids"):
        data.load("tiny_imagenet", data_dir=tmp_path)
