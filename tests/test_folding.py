"""Tests for `keras_wc.folding.fold`."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import architectures
import keras
import numpy as np
import pytest
from architectures import leaf_layers

from keras_wc.conversion import convert
from keras_wc.folding import fold
from keras_wc.layers import wc_layers
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm

L = keras.layers
METHODS = ("wc", "pp", "wn")
WITHOUT_MOBN = [name for name in architectures.FAST if name != "mean_only"]


def _randomize_mobn(model, seed=0):
    rng = np.random.default_rng(seed)
    for _, layer in leaf_layers(model):
        if isinstance(layer, MeanOnlyBatchNorm):
            for variable in layer.weights:
                variable.assign(rng.normal(0, 0.5, variable.shape))


def _fold_and_compare(model, inputs):
    folded = fold(model)
    expected = architectures.predict(model, inputs)
    actual = architectures.predict(folded, inputs)
    assert architectures.max_relative_difference(expected, actual) < 1e-6
    return folded


def _types(model):
    return {path: type(layer).__name__ for path, layer in leaf_layers(model)}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(architectures.FAST))
def test_fold_keeps_the_trained_outputs(name, method):
    _, converted, inputs = architectures.converted_and_trained(name, method)
    _fold_and_compare(converted, inputs)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", WITHOUT_MOBN)
def test_fold_gives_back_the_plain_graph(name, method):
    plain, converted, _ = architectures.converted_and_trained(name, method)
    folded = fold(converted)
    assert architectures.graph_signature(folded) == (
        architectures.graph_signature(plain)
    )


@pytest.mark.parametrize("method", METHODS)
def test_fold_writes_the_effective_kernels(method):
    _, converted, _ = architectures.converted_and_trained("functional", method)
    folded = fold(converted)
    for name in ("stem", "depthwise", "separable", "upsample", "logits"):
        source = converted.get_layer(name)
        target = folded.get_layer(name)
        for kernel, value in source.effective_kernels().items():
            np.testing.assert_array_equal(getattr(target, kernel), value)
        np.testing.assert_array_equal(target.bias, source.bias)


@pytest.mark.parametrize("learnable", ["fine", "coarse"])
def test_fold_uses_the_trained_learnable_scales(learnable):
    model = architectures.build("functional")
    inputs = architectures.sample_inputs(model, 3)
    converted = convert(model, learnable=learnable, a=1.2, b=0.8)
    architectures.train_step(converted, inputs, learning_rate=0.1)
    stem = converted.get_layer("stem")
    assert abs(float(stem.a) - 1.2) > 1e-3
    folded = _fold_and_compare(converted, inputs)
    np.testing.assert_allclose(
        folded.get_layer("stem").kernel,
        float(stem.a) * np.arctan(np.array(stem.v) / float(stem.b)),
        rtol=1e-5,
        atol=1e-7,
    )


def test_fold_does_not_mutate_the_input():
    _, converted, inputs = architectures.converted_and_trained("nested", "wc")
    before = [np.array(w) for w in converted.get_weights()]
    types = _types(converted)
    folded = fold(converted)
    architectures.train_step(folded, inputs)
    for old, new in zip(before, converted.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert _types(converted) == types


def test_fold_keeps_shared_layers_shared():
    _, converted, _ = architectures.converted_and_trained("shared", "wc")
    folded = fold(converted)
    calls = {
        entry["name"]: len(entry["inbound_nodes"])
        for entry in folded.get_config()["layers"]
    }
    assert calls["projection"] == calls["encoder"] == 2
    assert type(folded.get_layer("projection")) is L.Dense


def test_fold_of_a_plain_model_is_an_equal_copy():
    model = architectures.build("functional")
    inputs = architectures.sample_inputs(model, 2)
    folded = _fold_and_compare(model, inputs)
    assert folded is not model
    for old, new in zip(model.get_weights(), folded.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_mean_only_batch_norms_fold_into_the_bias():
    model = architectures.build("mean_only")
    _randomize_mobn(model)
    converted = convert(model)
    folded = _fold_and_compare(converted, architectures.sample_inputs(model, 3))
    types = _types(folded)
    assert "conv_mobn" not in types and "fc_mobn" not in types
    assert types["relu_mobn"] == "BatchNormalization"
    conv_mobn = model.get_layer("conv_mobn")
    np.testing.assert_allclose(
        folded.get_layer("conv").bias,
        np.array(conv_mobn.beta) - np.array(conv_mobn.moving_mean),
        rtol=1e-6,
    )
    fc_mobn = model.get_layer("fc_mobn")
    np.testing.assert_allclose(
        folded.get_layer("fc").bias,
        np.array(model.get_layer("fc").bias)
        - np.array(fc_mobn.moving_mean)
        + np.array(fc_mobn.beta),
        rtol=1e-6,
    )


def test_folded_mean_only_model_is_the_plain_equivalent():
    model = architectures.build("mean_only")
    folded = fold(convert(model, "wn"))
    image = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, name="conv")(image)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(4, 1, activation="relu", name="conv_relu")(x)
    x = L.BatchNormalization(
        epsilon=1e-12, scale=False, name="relu_mobn", momentum=0.9
    )(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dense(6, name="fc")(x)
    plain = keras.Model(image, L.Dense(3, name="logits")(x), name="mean_only")
    assert architectures.graph_signature(folded) == (
        architectures.graph_signature(plain)
    )


def _reused_output():
    x = keras.Input((5,))
    h = L.Dense(4, name="fc")(x)
    return keras.Model(x, L.Add()([MeanOnlyBatchNorm(name="mobn")(h), h]))


def _shared_producer():
    x = keras.Input((5,))
    fc = L.Dense(5, name="fc")
    return keras.Model(x, MeanOnlyBatchNorm(name="mobn")(fc(fc(x))))


def _producer_is_an_output():
    x = keras.Input((5,))
    h = L.Dense(4, name="fc")(x)
    return keras.Model(x, [MeanOnlyBatchNorm(name="mobn")(h), h])


def _on_an_input():
    x = keras.Input((5,))
    return keras.Model(x, L.Dense(2)(MeanOnlyBatchNorm(name="mobn")(x)))


def _einsum_producer():
    x = keras.Input((5,))
    h = L.EinsumDense("ab,bc->ac", 4, bias_axes="c", name="fc")(x)
    return keras.Model(x, MeanOnlyBatchNorm(name="mobn")(h))


def _wrong_axis():
    x = keras.Input((6, 6, 3))
    h = L.Conv2D(4, 3, name="fc")(x)
    return keras.Model(x, MeanOnlyBatchNorm(axis=1, name="mobn")(h))


def _sequential_first():
    return keras.Sequential(
        [keras.Input((5,)), MeanOnlyBatchNorm(name="mobn"), L.Dense(3)]
    )


@pytest.mark.parametrize(
    "build",
    [
        _reused_output,
        _shared_producer,
        _producer_is_an_output,
        _on_an_input,
        _einsum_producer,
        _wrong_axis,
        _sequential_first,
    ],
)
def test_mean_only_batch_norm_that_cannot_fold_becomes_batch_norm(build):
    keras.utils.set_random_seed(0)
    model = build()
    architectures.randomize_non_kernels(model)
    _randomize_mobn(model)
    folded = _fold_and_compare(
        convert(model), architectures.sample_inputs(model, 4)
    )
    stand_in = folded.get_layer("mobn")
    assert type(stand_in) is L.BatchNormalization
    assert not stand_in.scale and stand_in.epsilon == 1e-12


def _sequential_after_dense():
    return keras.Sequential(
        [keras.Input((5,)), L.Dense(3, name="fc"), MeanOnlyBatchNorm()]
    )


def _channels_first():
    # Width 5 ≠ 4 channels: Keras 3.15's TF `ops.add` adds a (1, C, 1, 1)
    # bias on the last axis when the width equals C (channels_first only).
    x = keras.Input((3, 7, 7))
    h = L.Conv2D(4, 3, data_format="channels_first", name="fc")(x)
    return keras.Model(x, MeanOnlyBatchNorm(axis=1)(h))


def _transposed_without_center():
    x = keras.Input((6, 6, 3))
    h = L.Conv2DTranspose(4, 3, name="fc")(x)
    return keras.Model(x, MeanOnlyBatchNorm(center=False)(h))


def _nested_block():
    block = keras.Sequential(
        [keras.Input((5,)), L.Dense(4, name="fc"), MeanOnlyBatchNorm()],
        name="block",
    )
    x = keras.Input((5,))
    return keras.Model(x, L.Dense(2, name="head")(block(x)))


@pytest.mark.parametrize(
    "build",
    [
        _sequential_after_dense,
        _channels_first,
        _transposed_without_center,
        _nested_block,
    ],
)
@pytest.mark.parametrize("method", ["wc", None])
def test_mean_only_batch_norm_folds_in_more_places(
    build, method, skip_unless_cpu_runs
):
    keras.utils.set_random_seed(0)
    plain = build()
    architectures.randomize_non_kernels(plain)
    _randomize_mobn(plain)
    model = convert(plain, method) if method else plain
    folded = fold(model)
    types = _types(folded).values()
    assert "MeanOnlyBatchNorm" not in types
    assert "BatchNormalization" not in types
    # The folding arithmetic, checked with numpy (also where the folded
    # model cannot run on this CPU): kernel = the effective kernel,
    # bias = b − moving_mean + β, same config as the plain producer.
    mobn = next(
        layer
        for _, layer in leaf_layers(model)
        if isinstance(layer, MeanOnlyBatchNorm)
    )
    source = _leaf(model, "fc")
    target = _leaf(folded, "fc")
    assert type(target) is type(_leaf(plain, "fc"))
    expected_config = _leaf(plain, "fc").get_config()
    assert target.get_config() == expected_config
    kernels = (
        source.effective_kernels()
        if hasattr(source, "effective_kernels")
        else {"kernel": source.kernel}
    )
    for name, value in kernels.items():
        np.testing.assert_array_equal(getattr(target, name), value)
    bias = np.zeros(mobn.moving_mean.shape, "float32")
    if source.bias is not None:
        bias = bias + np.asarray(source.bias)
    bias = bias - np.asarray(mobn.moving_mean)
    if mobn.beta is not None:
        bias = bias + np.asarray(mobn.beta)
    np.testing.assert_allclose(target.bias, bias, rtol=1e-6, atol=1e-7)
    # Only running the models needs the CPU kernels.
    skip_unless_cpu_runs(model, folded)
    inputs = architectures.sample_inputs(model, 4)
    assert (
        architectures.max_relative_difference(
            architectures.predict(model, inputs),
            architectures.predict(folded, inputs),
        )
        < 1e-6
    )


def _leaf(model, name):
    (layer,) = [x for _, x in leaf_layers(model) if x.name == name]
    return layer


def test_keras_wc_layers_inside_a_custom_layer_are_folded(tmp_path):
    @keras.saving.register_keras_serializable(package="tests")
    class Block(L.Layer):  # builds a keras_wc layer in its own code
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = wc_layers.WCDense(3, a=1.0, b=0.6)

        def build(self, input_shape):
            self.dense.build(input_shape)

        def call(self, x):
            return self.dense(x)

    x = keras.Input((4,))
    model = keras.Model(x, Block(name="block")(x))
    inputs = np.random.default_rng(0).standard_normal((3, 4)).astype("f4")
    expected = np.asarray(model(inputs))
    folded = fold(model)
    block = folded.get_layer("block")
    assert type(block.dense) is keras.layers.Dense
    assert isinstance(model.get_layer("block").dense, wc_layers.WCDense)
    np.testing.assert_allclose(folded(inputs), expected, rtol=1e-6)
    # Block's code builds a WCDense again when loading: the folded model
    # records that its Dense was released, and loads as it was saved.
    folded.save(tmp_path / "folded.keras")
    loaded = keras.saving.load_model(tmp_path / "folded.keras")
    assert type(loaded.get_layer("block").dense) is keras.layers.Dense
    np.testing.assert_array_equal(loaded(inputs), folded(inputs))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(architectures.FAST))
def test_convert_and_fold_in_place(name, method, tmp_path):
    model = architectures.build(name)
    cls = type(model)
    inputs = architectures.sample_inputs(model, 3)
    expected = architectures.predict(model, inputs)
    assert convert(model, method, inplace=True) is model
    assert type(model) is cls  # graph models need no record
    actual = architectures.predict(model, inputs)
    assert architectures.max_relative_difference(expected, actual) < 1e-5
    architectures.train_step(model, inputs)
    trained = architectures.predict(model, inputs)
    assert fold(model, inplace=True) is model and type(model) is cls
    types = {type(layer) for _, layer in leaf_layers(model)}
    assert not any(t.__module__.startswith("keras_wc") for t in types)
    assert "keras_wc" not in json.dumps(model.get_config())
    folded = architectures.predict(model, inputs)
    assert architectures.max_relative_difference(trained, folded) < 1e-6
    model.save(tmp_path / "folded.keras")
    loaded = keras.saving.load_model(tmp_path / "folded.keras")
    reloaded = architectures.predict(loaded, inputs)
    for old, new in zip(folded, reloaded, strict=True):
        np.testing.assert_array_equal(old, new)


def test_a_non_model_raises():
    with pytest.raises(TypeError, match=r"`keras_wc.fold` expects"):
        fold(wc_layers.WCDense(2))


def test_an_unbuilt_model_raises():
    class Model(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="`keras_wc.fold` needs a built"):
        fold(Model())


_LOAD_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoKerasWC(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "keras_wc":
                raise ImportError("keras_wc must not be needed")

    sys.meta_path.insert(0, NoKerasWC())
    import keras
    import numpy as np

    for path in json.loads(sys.argv[1]):
        model = keras.saving.load_model(path)
        data = np.load(path + ".npz")
        inputs = [data[f"x{i}"] for i in range(len(model.inputs))]
        structured = (
            inputs[0] if isinstance(model, keras.Sequential)
            else keras.tree.pack_sequence_as(model.input, inputs)
        )
        outputs = keras.tree.flatten(model(structured, training=False))
        for i, y in enumerate(outputs):
            expected = data[f"y{i}"]
            y = keras.ops.convert_to_numpy(y)
            error = np.max(np.abs(y - expected))
            assert error <= 1e-6 * np.max(np.abs(expected)), (path, error)
    assert "keras_wc" not in sys.modules
    print("loaded", len(json.loads(sys.argv[1])))
    """
)


def test_folded_models_load_with_plain_keras(tmp_path):
    paths = []
    for name in architectures.FAST:
        for method in METHODS:
            _, converted, inputs = architectures.converted_and_trained(
                name, method
            )
            folded = fold(converted)
            path = os.fspath(tmp_path / f"{name}_{method}.keras")
            folded.save(path)
            with zipfile.ZipFile(path) as archive:
                config = archive.read("config.json").decode()
            assert "keras_wc" not in config
            arrays = {
                f"x{i}": x for i, x in enumerate(keras.tree.flatten(inputs))
            }
            for i, y in enumerate(architectures.predict(converted, inputs)):
                arrays[f"y{i}"] = y
            np.savez(path + ".npz", **arrays)
            paths.append(path)
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, json.dumps(paths)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loaded {len(paths)}" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", list(architectures.APPLICATIONS))
def test_applications_fold_keeps_outputs_and_graph(name):
    plain = architectures.build(name)
    inputs = architectures.sample_inputs(plain, 2)
    converted = convert(plain, "wc")
    folded = _fold_and_compare(converted, inputs)
    assert architectures.graph_signature(folded) == (
        architectures.graph_signature(plain)
    )
