"""Presets: the papers' numbers and recipes, and every preset's wiring."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from keras_wc.layers.wc_base import CompanderMixin
from keras_wc.layers.wn_base import WeightNormMixin
from train import assembly, cli, presets, schedules
from train.data import DataBundle

NAMES = presets.names()


@pytest.mark.backend_independent
def test_every_table_row_has_a_preset():
    tables = {}
    for name in NAMES:
        preset = presets.get(name)
        tables.setdefault(preset["table"], []).append(name)
    # Tables II (16 rows), III (18), IV (2), V (2), VI (3 learnable rows),
    # VII (12), the WN recipe's 5 configurations and the 2 demo runs.
    sizes = {table: len(rows) for table, rows in tables.items()}
    assert sizes == {
        "Table II": 16,
        "Table III": 18,
        "Table IV": 2,
        "Table V": 2,
        "Table VI": 3,
        "Table VII": 12,
        "WN §5.1": 5,
        "demo (CPU)": 2,
    }


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "name, mean, std",
    [
        ("t2-resnet18-wc", 94.44, 0.12),
        ("t2-resnet50-pp", 93.47, 0.14),
        ("t2-vgg19bn-base", 93.21, 0.08),
        ("t3-resnet50-wc", 77.73, 0.40),
        ("t3-wrn28-10-wc", 80.24, 0.36),
        ("t4-resnet50-wc", 65.93, 0.12),
        ("t5-resnet50-base", 76.80, 0.11),
        ("t6-resnet50-wc-fine", 94.80, 0.14),
        ("t7-c100-resnet34-erf", 77.26, 0.39),
        ("wn-wn-mobn", 92.69, None),
    ],
)
def test_published_numbers(name, mean, std):
    assert presets.get(name)["paper"] == {"mean": mean, "std": std}


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "model, dataset, a, b",
    [
        ("resnet18", "cifar10", 1.0, 0.6),
        ("resnet34", "cifar10", 0.8, 0.5),
        ("vgg19bn", "cifar10", 0.5, 0.7),
        ("resnet34", "cifar100", 0.7, 0.8),
        ("vgg16bn", "cifar100", 0.7, 1.0),
        ("wrn28-10", "cifar100", 0.7, 0.7),
    ],
)
def test_table_i_values(model, dataset, a, b):
    number = "t2" if dataset == "cifar10" else "t3"
    config = presets.get(f"{number}-{model}-wc")["config"]
    assert (config["a"], config["b"], config["dataset"]) == (a, b, dataset)


@pytest.mark.backend_independent
def test_recipes_follow_the_paper():
    c10 = presets.get("t2-resnet34-base")["config"]
    assert (c10["milestones"], c10["gamma"], c10["weight_decay"]) == (
        [90, 136],
        0.1,
        1e-4,
    )
    vgg = presets.get("t2-vgg16bn-wc")["config"]
    assert (vgg["milestones"], vgg["gamma"], vgg["weight_decay"]) == (
        [60, 120, 160],
        0.2,
        5e-4,
    )
    for config in (c10, vgg):
        assert (
            config["lr"],
            config["momentum"],
            config["batch_size"],
            config["epochs"],
            config["seeds"],
            config["val_split"],
        ) == (0.1, 0.9, 128, 200, 5, 0.1)
    imagenet = presets.get("t5-resnet50-wc")["config"]
    assert (
        imagenet["batch_size"],
        imagenet["epochs"],
        imagenet["seeds"],
        imagenet["milestones"],
        imagenet["a"],
        imagenet["b"],
    ) == (256, 300, 3, [75, 150, 225], 0.6, 0.7)
    fine = presets.get("t6-resnet18-wc-fine")["config"]
    assert (fine["learnable"], fine["a"], fine["b"]) == ("fine", 0.5, 1.0)
    wn = presets.get("wn-wn")["config"]
    assert (
        wn["optimizer"],
        wn["lr"],
        wn["batch_size"],
        wn["epochs"],
        wn["schedule"],
        wn["init_examples"],
        wn["preprocess"],
        wn["augment"],
    ) == ("adam", 0.003, 100, 200, "wn-linear", 500, "zca", False)
    assert presets.get("wn-bn")["config"]["method"] == "bn"
    assert presets.get("wn-wn")["report"]["mean"] == pytest.approx(82.12)


@pytest.mark.backend_independent
def test_listing_shows_every_preset_with_its_number():
    text = presets.listing()
    for name in NAMES:
        assert name in text
    assert "94.44 ± 0.12" in text and "91.95" in text


@pytest.mark.backend_independent
def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown preset 'nope'"):
        presets.get("nope")


@pytest.mark.backend_independent
def test_get_returns_a_copy():
    presets.get("t2-resnet18-wc")["config"]["a"] = 99
    assert presets.get("t2-resnet18-wc")["config"]["a"] == 1.0


# === Every preset's wiring, one training step ===


def _stand_in(name, num_classes, input_shape, **options):
    """Test-only: a small CNN in place of the preset's network, with the
    preset's normalization (the model's default unless --method sets it)."""
    norm = options.get("norm", models.defaults(name)["norm"])
    return models.build(
        "small_cnn",
        num_classes=num_classes,
        input_shape=input_shape,
        norm=norm,
    )


def _bundle(num_classes, batch=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * batch, 8, 8, 3)).astype("float32")
    y = rng.integers(0, num_classes, 4 * batch).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    return DataBundle(
        name="mock",
        train=data,
        val=data,
        test=data,
        num_classes=num_classes,
        input_shape=(8, 8, 3),
        num_train=len(x),
        num_val=len(x),
        num_test=len(x),
        init_source=tf.data.Dataset.from_tensor_slices(x),
    )


_CLASSES = {
    "cifar10": 10,
    "cifar100": 100,
    "tiny_imagenet": 200,
    "imagenet2012": 1000,
    "fashion_mnist": 10,
}


def _kernel_layers(model):
    return [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    ]


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_wiring_one_step(name):
    given = {"preset": name}
    if presets.get(name)["dataset"] in ("tiny_imagenet", "imagenet2012"):
        given["data_dir"] = "/unused"
    config = cli.make_config(given).replace(run_eagerly=True)
    bundle = _bundle(_CLASSES[config.dataset])
    keras.utils.set_random_seed(0)
    model = assembly.build_model(config, bundle, build=_stand_in)
    layers = _kernel_layers(model)

    # Reparameterization as the preset says.
    if config.method in ("wc", "pp"):
        assert all(isinstance(layer, CompanderMixin) for layer in layers)
    if config.method == "wc":
        compander = type(layers[0].compander).__name__.lower()
        assert compander == config.compander
        assert all(layer.learnable == config.learnable for layer in layers)
        assert layers[0].initial_a == config.a
        assert layers[0].initial_b == config.b
    if config.method in ("wn", "wn+mobn"):
        assert all(isinstance(layer, WeightNormMixin) for layer in layers)
    if config.method in ("mobn", "wn+mobn"):
        assert any(
            isinstance(layer, MeanOnlyBatchNorm) for layer in model.layers
        )
    if config.method == "bn" or (
        config.method != "mobn"
        and models.defaults(config.model)["norm"] == "bn"
        and config.method != "wn+mobn"
    ):
        assert any(
            isinstance(layer, keras.layers.BatchNormalization)
            for layer in model.layers
        )

    # Weight decay: PyTorch's wd as L2(wd/2) on every kernel.
    for layer in layers:
        regularizer = layer.kernel_regularizer
        if config.weight_decay:
            assert regularizer.l2 == pytest.approx(config.weight_decay / 2)
        else:
            assert regularizer is None

    # Optimizer and schedule.
    steps = 4
    optimizer = assembly.make_optimizer(config, steps)
    expected = {"sgd": "SGD", "adam": "Adam", "modified-adam": "ModifiedAdam"}
    assert type(optimizer).__name__ == expected[config.optimizer]
    lr = optimizer._learning_rate
    if config.schedule == "step":
        assert isinstance(lr, schedules.StepDecay)
        assert lr.milestones == tuple(config.milestones)
        first = config.milestones[0]
        assert float(lr(first * steps)) == pytest.approx(
            config.lr * config.gamma
        )
    else:
        assert isinstance(lr, schedules.LinearDecay)
        assert float(lr(config.epochs * 3 // 4 * steps)) == pytest.approx(
            config.lr / 2
        )

    assembly.compile_model(model, config, optimizer)
    # (numpy: `train_on_batch` takes no tf.Tensor on the JAX/torch backends)
    x, y = (np.asarray(t) for t in next(iter(bundle.train)))
    before = [np.array(layer.kernel) for layer in layers]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    for layer, kernel in zip(layers, before, strict=True):
        assert not np.array_equal(kernel, np.array(layer.kernel)), layer.name


def _one_preset_per_model():
    chosen = {}
    for name in NAMES:
        preset = presets.get(name)
        model = preset["config"]["model"]
        method = preset["config"]["method"]
        # Prefer the row that reparameterizes the real network.
        if model not in chosen or method in ("wc", "wn+mobn"):
            if chosen.get(model, ("", ""))[1] not in ("wc", "wn+mobn"):
                chosen[model] = (name, method)
    return sorted(name for name, _ in chosen.values())


@pytest.mark.slow
@pytest.mark.backends(
    "tensorflow",
    reason="each piece runs on every backend: every network trains a step "
    "(tests/models), every preset's wiring a step on a stand-in "
    "(test_every_preset_wiring_one_step), real networks convert "
    "(test_conversion, test_reach)",
)
@pytest.mark.parametrize("name", _one_preset_per_model())
def test_preset_on_its_real_network_one_step(name):
    given = {"preset": name}
    if presets.get(name)["dataset"] in ("tiny_imagenet", "imagenet2012"):
        given["data_dir"] = "/unused"
    config = cli.make_config(given)
    size = 32
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, size, size, 3)).astype("float32")
    y = rng.integers(0, _CLASSES[config.dataset], 4).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    bundle = DataBundle(
        name="mock", train=data, val=None, test=data,
        num_classes=_CLASSES[config.dataset], input_shape=(size, size, 3),
        num_train=4, num_val=0, num_test=4,
        init_source=tf.data.Dataset.from_tensor_slices(x),
    )
    keras.utils.set_random_seed(0)
    model = assembly.build_model(config, bundle)
    assert model.name == config.model
    assembly.compile_model(model, config, assembly.make_optimizer(config, 2))
    logs = model.train_on_batch(x[:2], y[:2], return_dict=True)
    assert np.isfinite(logs["loss"])
