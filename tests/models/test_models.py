"""Tests for the `models` registry and builders."""

import re

import keras
import numpy as np
import pytest
from backend_utils import CHEAPEST_JIT, gradients

import models
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from models import _layers
from models.resnet import resnet
from models.wide_resnet import wide_resnet

NAMES = (
    "convpool_cnn_c",
    "mlp",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet50_imagenet",
    "small_cnn",
    "vgg16_bn",
    "vgg19_bn",
    "wrn_28_10",
)
SMALL = ("convpool_cnn_c", "mlp", "small_cnn")
BIG = tuple(name for name in NAMES if name not in SMALL)
NATURAL_INPUT = {
    name: (28, 28, 1) if name in ("mlp", "small_cnn") else (32, 32, 3)
    for name in NAMES
}
NATURAL_INPUT["resnet50_imagenet"] = (224, 224, 3)
# The smallest input each model accepts that still exercises every layer;
# VGG needs 32x32 (five 2x2 poolings), so it is reduced in channels only.
REDUCED_INPUT = {
    "convpool_cnn_c": (12, 12, 3),
    "mlp": (8, 8, 1),
    "resnet18": (8, 8, 3),
    "resnet34": (8, 8, 3),
    "resnet50": (8, 8, 3),
    "resnet50_imagenet": (32, 32, 3),
    "small_cnn": (8, 8, 1),
    "vgg16_bn": (32, 32, 1),
    "vgg19_bn": (32, 32, 1),
    "wrn_28_10": (8, 8, 3),
}
# Keras' automatic layer names ("flatten" is also a name we choose).
_AUTO_NAME = re.compile(
    r"^(input_layer|conv2d|dense|batch_normalization|mean_only_batch_norm|"
    r"re_lu|leaky_re_lu|add|dropout|max_pooling2d|zero_padding2d|"
    r"global_average_pooling2d|gaussian_noise)(_\d+)?$|_\d+$"
)


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _layers_of(model, cls):
    return [layer for layer in model.layers if type(layer) is cls]


def _random_batch(model, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, *model.input_shape[1:]))
    y = rng.integers(0, model.output_shape[-1], size=batch_size)
    return x.astype("float32"), y


# === Independent parameter counts ===


def _vgg_count(stages, in_channels, num_classes):
    # Conv kernel + bias + BN gamma/beta, then the 512-512-classes head.
    total = 0
    for filters in (f for stage in stages for f in stage):
        total += 9 * in_channels * filters + filters + 2 * filters
        in_channels = filters
    return total + 2 * (512 * 512 + 512) + 512 * num_classes + num_classes


def _convpool_count(in_channels, num_classes):
    layers = [(3, in_channels, 96), (3, 96, 96), (3, 96, 96)]
    layers += [(3, 96, 192), (3, 192, 192), (3, 192, 192), (3, 192, 192)]
    layers += [(1, 192, 192), (1, 192, 192)]
    convs = sum(k * k * c_in * c_out + c_out for k, c_in, c_out in layers)
    return convs + 192 * num_classes + num_classes


def _small_cnn_count(height, width, channels, num_classes):
    flat = (height // 4) * (width // 4) * 64
    convs = 9 * channels * 32 + 2 * 32 + 9 * 32 * 64 + 2 * 64
    return convs + flat * 128 + 2 * 128 + 128 * num_classes + num_classes


VGG16 = ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3)
VGG19 = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)
TRAINABLE_COUNTS = {
    # PyTorch CIFAR ResNets (kuangliu/pytorch-cifar) and WRN-28-10
    # (xternalz/WideResNet-pytorch), `sum(p.numel() for p in parameters())`.
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "resnet50": 23_520_842,
    # torchvision's resnet50 (25,557,032 for 1000 classes) with 10 classes.
    "resnet50_imagenet": 25_557_032 - 2048 * 990 - 990,
    "wrn_28_10": 36_479_194,
    "vgg16_bn": _vgg_count(VGG16, 3, 10),
    "vgg19_bn": _vgg_count(VGG19, 3, 10),
    "convpool_cnn_c": _convpool_count(3, 10),
    "small_cnn": _small_cnn_count(28, 28, 1, 10),
    "mlp": 28 * 28 * 256 + 256 + 256 * 10 + 10,
}


# === Registry ===


def test_available_lists_every_model_sorted():
    assert models.available() == list(NAMES)


def test_build_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"^`name` must be one of \[") as info:
        models.build("resnet19")
    for name in NAMES:
        assert repr(name) in str(info.value)
    assert "Received: name='resnet19'" in str(info.value)


def test_build_non_string_name_raises():
    with pytest.raises(ValueError, match=r"Received: name=\['mlp'\]"):
        models.build(["mlp"])


def test_build_unknown_option_raises_type_error():
    with pytest.raises(
        TypeError,
        match=(
            r"Model 'resnet18' got unknown option\(s\) \['depth', 'drop'\]\. "
            r"Valid options: \['kernel_initializer', 'norm'\]"
        ),
    ):
        models.build("resnet18", drop=0.1, depth=20)


def test_defaults_reports_each_models_options():
    assert models.defaults("resnet50") == {
        "norm": "bn",
        "kernel_initializer": "kaiming_uniform",
    }
    assert models.defaults("vgg16_bn") == {
        "norm": "bn",
        "dropout": 0.5,
        "kernel_initializer": "kaiming_normal_fan_out",
        "dense_initializer": "kaiming_uniform",
    }
    assert models.defaults("wrn_28_10")["dropout"] == 0.3
    assert models.defaults("convpool_cnn_c") == {
        "norm": "none",
        "dropout": 0.5,
        "noise_stddev": 0.15,
        "kernel_initializer": "random_normal",
    }


def test_build_forwards_options_and_natural_input():
    model = models.build("small_cnn", num_classes=3, norm="none", dropout=0.2)
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 3)
    assert not _layers_of(model, keras.layers.BatchNormalization)
    assert model.get_layer("fc1_dropout").rate == 0.2


@pytest.mark.parametrize(
    "name, kwargs, pattern",
    [
        ("mlp", {"num_classes": 0}, r"`num_classes` must be a positive"),
        ("mlp", {"num_classes": True}, r"Received: num_classes=True"),
        ("mlp", {"num_classes": 2.0}, r"Received: num_classes=2\.0"),
        ("mlp", {"input_shape": (28, 28)}, r"`input_shape` must be a tuple"),
        ("mlp", {"input_shape": (28, 0, 1)}, r"input_shape=\(28, 0, 1\)"),
        ("mlp", {"input_shape": (28, None, 1)}, r"three positive integers"),
        ("vgg16_bn", {"input_shape": (16, 16, 3)}, r"height and width >= 32"),
        ("convpool_cnn_c", {"input_shape": (8, 8, 3)}, r">= 12"),
        ("small_cnn", {"input_shape": (3, 8, 1)}, r">= 4"),
        ("resnet18", {"norm": "ln"}, r"`norm` must be one of .*norm='ln'"),
        ("vgg16_bn", {"dropout": 1.0}, r"`dropout` must be a number in"),
        ("wrn_28_10", {"dropout": -0.1}, r"Received: dropout=-0\.1"),
        ("small_cnn", {"dropout": "0.5"}, r"Received: dropout='0\.5'"),
        (
            "resnet18",
            {"kernel_initializer": "kaiming"},
            r"`kernel_initializer` must be one of .*kernel_initializer=",
        ),
        (
            "resnet18",
            {"kernel_initializer": keras.initializers.HeUniform(seed=1)},
            r"`kernel_initializer` must be unseeded",
        ),
        (
            "vgg19_bn",
            {"dense_initializer": 3},
            r"Received: dense_initializer=3",
        ),
        (
            "convpool_cnn_c",
            {"noise_stddev": -1},
            r"`noise_stddev` must be a non-negative number",
        ),
    ],
)
def test_invalid_arguments_raise_value_error(name, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        models.build(name, **kwargs)


def test_family_builders_validate_their_structure_arguments():
    common = {
        "num_classes": 10,
        "input_shape": (32, 32, 3),
        "norm": "bn",
        "kernel_initializer": "kaiming_uniform",
        "name": "x",
    }
    with pytest.raises(ValueError, match=r"Received: block='plain'"):
        resnet("plain", (2, 2, 2, 2), **common)
    with pytest.raises(ValueError, match=r"`depth` must be .*depth=27"):
        wide_resnet(27, 10, dropout=0.0, **common)
    with pytest.raises(ValueError, match=r"`widen_factor` must be .*=0"):
        wide_resnet(16, 0, dropout=0.0, **common)


# === Parameter counts ===


@pytest.mark.parametrize("name", NAMES)
def test_natural_input_parameter_count_and_forward(name):
    model = models.build(name)
    assert model.name == name
    assert model.input_shape == (None, *NATURAL_INPUT[name])
    assert _count(model.trainable_weights) == TRAINABLE_COUNTS[name]
    x, _ = _random_batch(model, 2)
    logits = model(x, training=False)
    assert tuple(logits.shape) == (2, 10)
    assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize("name", ("resnet18", "vgg16_bn", "wrn_28_10"))
def test_non_trainable_weights_are_the_bn_moving_statistics(name):
    model = models.build(name, input_shape=REDUCED_INPUT[name])
    bn_layers = _layers_of(model, keras.layers.BatchNormalization)
    channels = sum(layer.gamma.shape[0] for layer in bn_layers)
    assert _count(model.non_trainable_weights) == 2 * channels


def test_parameter_counts_follow_num_classes_and_input_shape():
    # PyTorch CIFAR-100 ResNet-18: 11,220,132 parameters.
    assert _count(models.build("resnet18", 100).trainable_weights) == (
        11_220_132
    )
    assert _count(
        models.build("vgg19_bn", 100, (32, 32, 1)).trainable_weights
    ) == _vgg_count(VGG19, 1, 100)
    assert _count(
        models.build("small_cnn", 5, (8, 8, 1)).trainable_weights
    ) == _small_cnn_count(8, 8, 1, 5)
    assert _count(
        models.build("convpool_cnn_c", 7, (12, 12, 1)).trainable_weights
    ) == _convpool_count(1, 7)
    assert _count(models.build("mlp", 10, (8, 8, 1)).trainable_weights) == (
        64 * 256 + 256 + 256 * 10 + 10
    )


# === Forward passes, gradients and training ===


@pytest.mark.parametrize("name", NAMES)
def test_reduced_input_forward_gives_every_weight_a_gradient(name):
    keras.utils.set_random_seed(0)
    model = models.build(name, num_classes=3, input_shape=REDUCED_INPUT[name])
    x, y = _random_batch(model, 4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert tuple(model(x, training=True).shape) == (4, 3)
    grads = gradients(
        lambda: loss_fn(y, model(x, training=True)),
        model.trainable_weights,
        jit=CHEAPEST_JIT,
    )
    for variable, grad in zip(model.trainable_weights, grads, strict=True):
        assert np.all(np.isfinite(grad)), variable.path
        assert np.any(grad != 0), variable.path


def _fit_one_step(model, batch_size):
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=CHEAPEST_JIT,
    )
    before = [np.array(v) for v in model.trainable_weights]
    x, y = _random_batch(model, batch_size)
    history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [np.array(v) for v in model.trainable_weights]
    changed = [
        not np.array_equal(b, a) for b, a in zip(before, after, strict=True)
    ]
    assert all(changed)


@pytest.mark.parametrize(
    "name, input_shape",
    [
        ("small_cnn", (28, 28, 1)),
        ("small_cnn", (8, 8, 1)),
        ("mlp", (28, 28, 1)),
        ("mlp", (8, 8, 1)),
        ("convpool_cnn_c", (16, 16, 3)),
    ],
)
def test_fit_one_step_small(name, input_shape):
    _fit_one_step(models.build(name, input_shape=input_shape), batch_size=8)


@pytest.mark.slow
@pytest.mark.parametrize("name", BIG)
def test_fit_one_step_big_at_natural_input(name):
    _fit_one_step(models.build(name), batch_size=2)


# === Normalization options ===

# (convolutions + dense layers normalized, convolutions) per model.
NORMALIZED = {
    "convpool_cnn_c": (10, 9),
    "mlp": (1, 0),
    "resnet18": (20, 20),
    "resnet34": (36, 36),
    "resnet50": (53, 53),
    "resnet50_imagenet": (53, 53),
    "small_cnn": (3, 2),
    "vgg16_bn": (13, 13),
    "vgg19_bn": (16, 16),
    "wrn_28_10": (25, 28),
}


def _kernel_layers(model):
    return _layers_of(model, keras.layers.Conv2D) + _layers_of(
        model, keras.layers.Dense
    )


@pytest.mark.parametrize("name", NAMES)
def test_norm_bn_and_none_produce_expected_layers(name):
    num_normalized, num_convs = NORMALIZED[name]
    with_bn = models.build(name, input_shape=REDUCED_INPUT[name], norm="bn")
    without = models.build(name, input_shape=REDUCED_INPUT[name], norm="none")
    bn_layers = _layers_of(with_bn, keras.layers.BatchNormalization)
    assert len(bn_layers) == num_normalized
    assert all(layer.momentum == 0.9 for layer in bn_layers)
    assert all(layer.epsilon == 1e-5 for layer in bn_layers)
    assert not _layers_of(without, keras.layers.BatchNormalization)
    assert len(_layers_of(with_bn, keras.layers.Conv2D)) == num_convs
    assert len(_layers_of(without, keras.layers.Conv2D)) == num_convs
    # Without normalization every kernel layer has its bias.
    assert all(layer.use_bias for layer in _kernel_layers(without))


@pytest.mark.parametrize(
    "name, biased_under_bn",
    [
        ("resnet18", {"predictions"}),
        ("wrn_28_10", {"predictions"}),
        ("small_cnn", {"predictions"}),
        ("mlp", {"predictions"}),
        ("convpool_cnn_c", set()),
    ],
)
def test_layers_followed_by_bn_have_no_bias(name, biased_under_bn):
    model = models.build(name, input_shape=REDUCED_INPUT[name], norm="bn")
    biased = {layer.name for layer in _kernel_layers(model) if layer.use_bias}
    assert biased == biased_under_bn


def test_vgg_convolutions_keep_their_bias_under_bn_like_pytorch():
    model = models.build("vgg16_bn", input_shape=(32, 32, 1))
    assert all(layer.use_bias for layer in _kernel_layers(model))


@pytest.mark.parametrize("name", NAMES)
def test_norm_mobn_uses_mean_only_batch_norm_without_bias(name):
    num_normalized, _ = NORMALIZED[name]
    model = models.build(name, input_shape=REDUCED_INPUT[name], norm="mobn")
    assert len(_layers_of(model, MeanOnlyBatchNorm)) == num_normalized
    assert not _layers_of(model, keras.layers.BatchNormalization)
    biased = {layer.name for layer in _kernel_layers(model) if layer.use_bias}
    # Only the classifier and the VGG hidden dense layers are not
    # normalized, and so keep their bias.
    expected = {"predictions"} if name != "convpool_cnn_c" else set()
    if name.startswith("vgg"):
        expected |= {"fc1", "fc2"}
    assert biased == expected
    x, _ = _random_batch(model, 2)
    assert tuple(model(x, training=True).shape) == (2, 10)


# === Architecture details ===


def test_convpool_layers_follow_the_wn_paper():
    model = models.build("convpool_cnn_c")
    assert model.get_layer("noise").stddev == 0.15
    leaky = _layers_of(model, keras.layers.LeakyReLU)
    assert len(leaky) == 9
    assert all(layer.negative_slope == 0.1 for layer in leaky)
    assert [
        layer.rate for layer in _layers_of(model, keras.layers.Dropout)
    ] == [
        0.5,
        0.5,
    ]
    assert model.get_layer("block1_conv3").output.shape[1:] == (32, 32, 96)
    assert model.get_layer("block2_pool").output.shape[1:] == (8, 8, 192)
    assert model.get_layer("block3_conv1").output.shape[1:] == (6, 6, 192)
    assert model.get_layer("block3_conv3").kernel.shape == (1, 1, 192, 192)
    bare = models.build("convpool_cnn_c", noise_stddev=0.0, dropout=0.0)
    assert not _layers_of(bare, keras.layers.GaussianNoise)
    assert not _layers_of(bare, keras.layers.Dropout)


def test_convpool_bn_normalizes_the_logits():
    model = models.build("convpool_cnn_c", norm="bn")
    assert model.layers[-1].name == "predictions_bn"


def test_vgg_head_has_dropout_in_the_fully_connected_layers():
    model = models.build("vgg16_bn")
    names = [layer.name for layer in model.layers]
    head = names[names.index("flatten") + 1 :]
    assert head == [
        "fc1_dropout",
        "fc1",
        "fc1_relu",
        "fc2_dropout",
        "fc2",
        "fc2_relu",
        "predictions",
    ]
    assert model.get_layer("fc1").kernel.shape == (512, 512)
    assert model.get_layer("fc2_dropout").rate == 0.5
    assert len(_layers_of(model, keras.layers.MaxPooling2D)) == 5
    no_dropout = models.build("vgg16_bn", dropout=0.0)
    assert not _layers_of(no_dropout, keras.layers.Dropout)


def test_wrn_has_dropout_between_the_convolutions_of_every_block():
    model = models.build("wrn_28_10")
    dropouts = _layers_of(model, keras.layers.Dropout)
    assert len(dropouts) == 12
    assert all(layer.rate == 0.3 for layer in dropouts)
    # The dropout feeds the second convolution of its block.
    conv2 = model.get_layer("group2_block3_conv2")
    assert conv2.input is model.get_layer("group2_block3_dropout").output
    widths = [
        model.get_layer(f"group{g}_block1_conv1").filters for g in (1, 2, 3)
    ]
    assert widths == [160, 320, 640]


def test_resnet50_bottleneck_expands_by_four():
    model = models.build("resnet50", input_shape=(8, 8, 3))
    assert model.get_layer("stage1_block1_conv1").filters == 64
    assert model.get_layer("stage1_block1_conv3").filters == 256
    assert model.get_layer("stage1_block1_shortcut_conv").strides == (1, 1)
    assert model.get_layer("stage4_block3_conv3").filters == 2048
    assert model.get_layer("stage2_block1_conv2").strides == (2, 2)


def test_resnet_stem_has_no_max_pool_and_stride_one():
    model = models.build("resnet18")
    assert not _layers_of(model, keras.layers.MaxPooling2D)
    stem = model.get_layer("stem_conv")
    assert (stem.filters, stem.kernel_size, stem.strides) == (
        64,
        (3, 3),
        (1, 1),
    )
    assert model.get_layer("stage4_block2_out").output.shape[1:] == (4, 4, 512)


def test_strided_convolution_pads_symmetrically_like_pytorch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 6, 6, 2)).astype("float32")
    inputs = keras.Input((6, 6, 2))
    outputs = _layers.apply_conv(
        inputs,
        3,
        3,
        strides=2,
        use_bias=False,
        initializer=_layers.initializer_factory("kaiming_uniform"),
        name="conv",
    )
    model = keras.Model(inputs, outputs)
    kernel = np.array(model.get_layer("conv").kernel)
    # PyTorch Conv2d(kernel_size=3, stride=2, padding=1).
    padded = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    expected = np.empty((3, 3, 3), dtype="float32")
    for i in range(3):
        for j in range(3):
            window = padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            expected[i, j] = np.einsum("hwc,hwco->o", window, kernel)
    np.testing.assert_allclose(model(x)[0], expected, rtol=1e-5, atol=1e-5)


# === Initializers ===


def test_vgg_convolutions_start_from_untruncated_normal_fan_out():
    kernel = np.array(models.build("vgg16_bn").get_layer("block5_conv1").kernel)
    std = np.sqrt(2.0 / (3 * 3 * 512))
    assert abs(kernel.mean()) < 0.01 * std
    np.testing.assert_allclose(kernel.std(), std, rtol=0.01)
    # N(0, std) puts 4.55 % of the mass beyond 2 std; a truncated normal none.
    np.testing.assert_allclose(
        np.mean(np.abs(kernel) > 2 * std), 0.0455, atol=0.002
    )


@pytest.mark.parametrize(
    "name, layer, kwargs, fan_in, limit_scale",
    [
        ("vgg16_bn", "fc1", {}, 512, np.sqrt(6.0)),
        ("resnet18", "stage4_block2_conv2", {}, 9 * 512, np.sqrt(6.0)),
        (
            "resnet18",
            "stage4_block2_conv2",
            {"kernel_initializer": "torch_default"},
            9 * 512,
            1.0,
        ),
    ],
)
def test_uniform_initializers_have_the_documented_limit(
    name, layer, kwargs, fan_in, limit_scale
):
    kernel = np.array(models.build(name, **kwargs).get_layer(layer).kernel)
    limit = limit_scale / np.sqrt(fan_in)
    # float32 rounding may put a sample one ulp above the float64 limit.
    assert np.abs(kernel).max() <= limit * (1 + 1e-6)
    assert np.abs(kernel).max() > 0.99 * limit
    # The variance of U(-l, l) is l^2 / 3.
    np.testing.assert_allclose(kernel.var(), limit**2 / 3, rtol=0.02)


def test_convpool_starts_from_normal_0_05():
    kernel = np.array(
        models.build("convpool_cnn_c").get_layer("block2_conv2").kernel
    )
    np.testing.assert_allclose(kernel.std(), 0.05, rtol=0.01)


def test_same_shaped_layers_start_from_different_weights():
    for initializer in ("kaiming_uniform", keras.initializers.HeNormal()):
        model = models.build(
            "resnet18", input_shape=(8, 8, 3), kernel_initializer=initializer
        )
        first = np.array(model.get_layer("stage1_block1_conv1").kernel)
        second = np.array(model.get_layer("stage1_block1_conv2").kernel)
        assert not np.allclose(first, second)


def test_seeded_builds_are_reproducible():
    weights = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        model = models.build("small_cnn", input_shape=(8, 8, 1))
        weights.append([np.array(v) for v in model.weights])
    for first, second in zip(*weights, strict=True):
        np.testing.assert_array_equal(first, second)


# === Names and saving ===


@pytest.mark.parametrize("name", NAMES)
def test_layer_names_are_deterministic(name):
    shape = REDUCED_INPUT[name]
    first = [
        layer.name for layer in models.build(name, input_shape=shape).layers
    ]
    models.build("mlp")
    second = [
        layer.name for layer in models.build(name, input_shape=shape).layers
    ]
    assert first == second
    assert len(set(first)) == len(first)
    assert not [n for n in first if _AUTO_NAME.match(n)]


@pytest.mark.parametrize(
    "name, input_shape",
    [("small_cnn", (8, 8, 1)), ("convpool_cnn_c", (12, 12, 3))],
)
def test_keras_save_and_load_round_trip(tmp_path, name, input_shape):
    keras.utils.set_random_seed(1)
    model = models.build(name, input_shape=input_shape, norm="bn")
    # One step moves the weights and the BN statistics off their defaults.
    _fit_one_step(model, batch_size=8)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.name == name
    assert [v.path for v in restored.weights] == [v.path for v in model.weights]
    for original, loaded in zip(model.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(np.array(original), np.array(loaded))
    x, _ = _random_batch(model, 4, seed=3)
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
