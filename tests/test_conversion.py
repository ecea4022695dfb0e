"""Tests for `keras_wc.conversion.convert`."""

import logging
import math

import architectures
import keras
import numpy as np
import pytest
from architectures import leaf_layers

from keras_wc import companders
from keras_wc.conversion import convert
from keras_wc.initialization import initialize
from keras_wc.layers import wc_layers, wn_layers
from keras_wc.layers.layer_types import SUPPORTED_LAYERS
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from keras_wc.layers.recurrent import RecurrentMixin
from keras_wc.layers.reparameterized import ReparameterizedLayer
from keras_wc.layers.wc_base import SharedCompander

METHODS = ("wc", "pp", "wn")
PREFIX = {"wc": "WC", "pp": "WC", "wn": "WN"}


@pytest.fixture(scope="module")
def plain():
    """One plain model per fast architecture, with inputs and outputs."""
    models = {}
    for name in architectures.FAST:
        model = architectures.build(name)
        inputs = architectures.sample_inputs(model, 3)
        models[name] = (model, inputs, architectures.predict(model, inputs))
    return models


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _dense_model(kernels, biases=None):
    """A Sequential of Dense layers with the given kernels."""
    layers = [keras.Input((kernels[0].shape[0],))]
    for i, kernel in enumerate(kernels):
        layers.append(keras.layers.Dense(kernel.shape[1], name=f"dense{i}"))
    model = keras.Sequential(layers)
    for i, (layer, kernel) in enumerate(
        zip(model.layers, kernels, strict=True)
    ):
        bias = np.zeros(kernel.shape[1]) if biases is None else biases[i]
        layer.set_weights([kernel, bias])
    return model


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(architectures.FAST))
def test_convert_keeps_outputs(plain, name, method):
    model, inputs, expected = plain[name]
    converted = convert(model, method)
    actual = architectures.predict(converted, inputs)
    assert architectures.max_relative_difference(expected, actual) < 1e-5


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(architectures.FAST))
def test_convert_replaces_exactly_the_kernel_layers(plain, name, method):
    model, _, _ = plain[name]
    converted = convert(model, method)
    old = list(leaf_layers(model))
    new = list(leaf_layers(converted))
    assert [path for path, _ in old] == [path for path, _ in new]
    for (path, before), (_, after) in zip(old, new, strict=True):
        if type(before) in SUPPORTED_LAYERS:
            expected = PREFIX[method] + type(before).__name__
            assert type(after).__name__ == expected, path
            assert isinstance(after, type(before)), path
            for key in ("kernel_initializer", "depthwise_initializer"):
                if key in before.get_config():
                    assert (
                        after.get_config()[key] == (before.get_config()[key])
                    ), path
        else:
            assert type(after) is type(before), path
            assert after is not before, path


def test_every_supported_layer_has_a_wc_and_a_wn_class():
    for cls in SUPPORTED_LAYERS:
        for module, prefix in ((wc_layers, "WC"), (wn_layers, "WN")):
            target = getattr(module, prefix + cls.__name__)
            assert issubclass(target, cls)
            assert issubclass(target, (ReparameterizedLayer, RecurrentMixin))


@pytest.mark.parametrize("method", METHODS)
def test_convert_does_not_mutate_the_input(method):
    model = architectures.build("nested")
    before = _weights(model)
    types = [type(layer) for _, layer in leaf_layers(model)]
    converted = convert(model, method)
    architectures.train_step(
        converted, architectures.sample_inputs(converted, 2)
    )
    for old, new in zip(before, _weights(model), strict=True):
        np.testing.assert_array_equal(old, new)
    assert [type(layer) for _, layer in leaf_layers(model)] == types
    assert not set(map(id, model.weights)) & set(map(id, converted.weights))


def test_wc_raw_variable_is_the_inverse_of_the_kernel():
    rng = np.random.default_rng(1)
    kernel = rng.uniform(-1.2, 1.2, (4, 3)).astype("float32")
    model = _dense_model([kernel])
    layer = convert(model, a=0.9, b=0.7).layers[0]
    assert isinstance(layer, wc_layers.WCDense)
    np.testing.assert_allclose(
        np.array(layer.v), 0.7 * np.tan(kernel / 0.9), rtol=1e-5
    )
    np.testing.assert_allclose(np.array(layer.kernel), kernel, atol=1e-6)


def test_pp_uses_powerprop_with_alpha():
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(4, 3)).astype("float32")
    layer = convert(_dense_model([kernel]), "pp", alpha=3.0).layers[0]
    assert layer.compander == companders.Powerprop(3.0)
    np.testing.assert_allclose(
        np.array(layer.v),
        np.sign(kernel) * np.abs(kernel) ** (1 / 3),
        rtol=1e-5,
    )


def test_wn_starts_from_the_weights_without_data_init():
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(4, 3)).astype("float32")
    layer = convert(_dense_model([kernel]), "wn", init_scale=0.5).layers[0]
    assert type(layer).__name__ == "WNDense"
    config = layer.get_config()
    assert config["data_init"] is False
    assert config["init_scale"] == 0.5
    np.testing.assert_allclose(np.array(layer.kernel), kernel, atol=1e-6)


def test_biases_and_statistics_are_copied():
    model = architectures.build("sequential")
    converted = convert(model)
    np.testing.assert_array_equal(
        converted.get_layer("logits").bias, model.get_layer("logits").bias
    )
    for old, new in zip(
        model.get_layer("bn").weights,
        converted.get_layer("bn").weights,
        strict=True,
    ):
        np.testing.assert_array_equal(old, new)


def test_nested_models_are_converted_at_every_depth():
    model = architectures.build("nested")
    converted, report = convert(model, return_report=True)
    inner = converted.get_layer("block").get_layer("inner")
    assert isinstance(inner.get_layer("conv"), wc_layers.WCConv2D)
    assert [e.path for e in report.converted] == [
        "stem",
        "block/inner/conv",
        "block/conv",
        "logits",
    ]


def test_shared_layers_stay_shared():
    model = architectures.build("shared")
    converted = convert(model)
    projection = converted.get_layer("projection")
    assert isinstance(projection, wc_layers.WCDense)
    calls = {
        entry["name"]: len(entry["inbound_nodes"])
        for entry in converted.get_config()["layers"]
    }
    assert calls["projection"] == calls["encoder"] == 2
    assert len(converted.trainable_variables) == len(model.trainable_variables)


def test_multiple_inputs_and_outputs_keep_their_names():
    model = architectures.build("multi_io")
    converted = convert(model)
    assert [x.name for x in converted.inputs] == [x.name for x in model.inputs]
    assert sorted(converted.output) == ["logits", "score"]


def test_learnable_fine_gives_every_layer_its_own_scales():
    converted = convert(architectures.build("functional"), learnable="fine")
    layers = [
        layer
        for _, layer in leaf_layers(converted)
        if isinstance(layer, ReparameterizedLayer)
    ]
    assert all(
        layer.learnable == "fine" and layer.shared is None for layer in layers
    )
    names = [v.path.split("/")[-1] for v in converted.trainable_variables]
    assert names.count("a") == names.count("b") == len(layers)


def test_learnable_coarse_shares_one_compander():
    converted = convert(
        architectures.build("nested"), learnable="coarse", a=1.5, b=0.5
    )
    layers = [
        layer
        for _, layer in leaf_layers(converted)
        if isinstance(layer, ReparameterizedLayer)
    ]
    shared = {id(layer.shared) for layer in layers}
    assert len(shared) == 1
    assert isinstance(layers[0].shared, SharedCompander)
    assert float(layers[0].a) == 1.5 and float(layers[0].b) == 0.5
    names = [v.path.split("/")[-1] for v in converted.trainable_variables]
    assert names.count("a") == names.count("b") == 1


@pytest.mark.parametrize("learnable", [False, "fine", "coarse"])
def test_convert_twice_is_a_copy(learnable):
    model = architectures.build("nested")
    inputs = architectures.sample_inputs(model, 2)
    once = convert(model, learnable=learnable)
    architectures.train_step(once, inputs)
    with pytest.warns(UserWarning, match="are keras_wc layers already"):
        twice, report = convert(once, "wn", return_report=True)
    assert not report.converted
    assert {e.reason for e in report.skipped} >= {
        "already reparameterized (WCConv2D)",
        "already reparameterized (WCDense)",
    }
    for old, new in zip(_weights(once), _weights(twice), strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(
        architectures.predict(once, inputs),
        architectures.predict(twice, inputs),
    )
    if learnable == "coarse":
        shared = {
            id(layer.shared)
            for _, layer in leaf_layers(twice)
            if isinstance(layer, ReparameterizedLayer)
        }
        assert len(shared) == 1


@pytest.mark.parametrize(
    "layers, expected",
    [
        ("logits", ["logits"]),
        (["stem", "block/conv"], ["stem", "block/conv"]),
        ("conv", ["block/inner/conv", "block/conv"]),
        (keras.layers.Dense, ["logits"]),
        ([keras.layers.Dense, "stem"], ["stem", "logits"]),
        (
            lambda layer: getattr(layer, "filters", 0) == 4,
            ["stem", "block/inner/conv"],
        ),
        ([], []),
    ],
)
def test_layers_selects_what_is_converted(layers, expected):
    model = architectures.build("nested")
    _, report = convert(model, layers=layers, return_report=True)
    assert [e.path for e in report.converted] == expected
    not_selected = [
        e.path
        for e in report.skipped
        if e.reason == "not selected by `layers=`"
    ]
    assert sorted(not_selected + expected) == sorted(
        ["stem", "block/inner/conv", "block/conv", "logits"]
    )


def test_layers_unknown_name_raises():
    with pytest.raises(ValueError, match=r"\['nope'\] match no layer.*stem"):
        convert(architectures.build("nested"), layers=["stem", "nope"])


@pytest.mark.parametrize("layers", [3, ["stem", 3], {"stem": 1}])
def test_layers_of_the_wrong_type_raises(layers):
    with pytest.raises(TypeError, match="`layers` must be a layer name"):
        convert(architectures.build("nested"), layers=layers)


def test_normalization_and_weightless_layers_are_never_converted():
    model = architectures.build("mean_only")
    converted, report = convert(
        model, layers=lambda layer: True, return_report=True
    )
    reasons = {e.path: e.reason for e in report.skipped}
    assert reasons == {
        "conv_mobn": "normalization layer (never reparameterized)",
        "relu_mobn": "normalization layer (never reparameterized)",
        "fc_mobn": "normalization layer (never reparameterized)",
    }
    assert isinstance(converted.get_layer("conv_mobn"), MeanOnlyBatchNorm)


def test_unsupported_and_subclassed_kernel_layers_are_skipped():
    class MyDense(keras.layers.Dense):
        pass

    inputs = keras.Input((4,))
    x = keras.layers.Embedding(10, 4, name="embedding")(
        keras.ops.cast(inputs, "int32")
    )
    x = keras.layers.Flatten()(x)
    outputs = MyDense(2, name="mine")(keras.layers.Dense(3, name="fc")(x))
    _, report = convert(keras.Model(inputs, outputs), return_report=True)
    assert [e.path for e in report.converted] == ["fc"]
    reasons = {e.path: e.reason for e in report.skipped}
    assert reasons["embedding"] == "embedding (a lookup table, not a kernel)"
    assert reasons["mine"] == (
        "a subclass of Dense (it may hold other state; only the exact Keras "
        "class is converted)"
    )


def test_a_model_without_kernels_warns_that_nothing_was_converted():
    """It used to say nothing: the warning came only where kernels were
    found and none converted."""
    inputs = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(10, 3, name="embedding")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(x))
    with pytest.warns(UserWarning) as caught:
        _, report = convert(model, return_report=True)
    assert (report.kernels, report.converted) == (0, ())
    [warning] = [w for w in caught if "converted no kernel" in str(w.message)]
    message = str(warning.message)
    assert message.startswith(
        f"keras_wc.convert converted no kernel of model '{model.name}' "
        "(0 kernel(s) found): it holds no kernel layer"
    )
    assert "Check that this is the model you meant" in message
    assert "skipped: embedding" in message  # the report follows
    assert warning.filename == __file__  # points at the caller


def test_report_is_a_table_and_is_logged(caplog):
    model = architectures.build("sequential")
    with caplog.at_level(logging.INFO, logger="keras_wc"):
        _, report = convert(model, layers="logits", a=2.0, return_report=True)
    text = str(report)
    assert text.splitlines()[0] == (
        'keras_wc.convert(method="wc", a=2.0, b=1.0, compander="arctan", '
        'learnable="none"): 1 of 2 kernel(s) converted, in 1 layer(s); '
        "2 layer(s) skipped"
    )
    assert "logits  Dense                     1  -> WCDense" in text
    assert (
        "conv    Conv2D                    1  skipped: not selected by "
        "`layers=`"
    ) in text
    assert (
        "bn      BatchNormalization        0  skipped: normalization layer"
    ) in text
    assert (report.kernels, report.converted_kernels) == (2, 1)
    assert text in caplog.text
    assert report.options["a"] == 2.0
    assert report.converted[0].target is wc_layers.WCDense


def test_out_of_range_kernel_reports_the_smallest_a():
    big = np.full((3, 2), 2.0, "float32")
    small = np.full((2, 2), 0.5, "float32")
    model = _dense_model([big, small])
    smallest = 2.0 / (math.pi / 2)
    with pytest.raises(
        ValueError,
        match=r"'dense0' \(max \|w\| = 2\)\. The smallest `a` that works "
        r"for the whole model is a > 1\.273",
    ):
        convert(model, a=1.0)
    converted = convert(model, a=smallest * 1.001)
    x = np.ones((1, 3), "float32")
    np.testing.assert_allclose(
        architectures.predict(converted, x)[0],
        architectures.predict(model, x)[0],
        rtol=1e-4,
    )


def test_out_of_range_kernel_can_be_left_out_with_layers():
    model = _dense_model(
        [np.full((3, 2), 2.0, "float32"), np.full((2, 2), 0.5, "float32")]
    )
    _, report = convert(model, layers="dense1", return_report=True)
    assert [e.path for e in report.converted] == ["dense1"]


def test_unbounded_companders_accept_any_kernel():
    model = _dense_model([np.full((3, 2), 50.0, "float32")])
    convert(model, compander="arsinh")
    convert(model, "pp", alpha=1.5)


def test_frozen_layers_and_models_stay_frozen():
    model = architectures.build("nested")
    model.get_layer("stem").trainable = False
    model.get_layer("block").trainable = False
    converted = convert(model)
    assert not converted.get_layer("stem").trainable
    assert not converted.get_layer("block").trainable
    assert converted.get_layer("logits").trainable


def test_the_result_is_uncompiled():
    model = architectures.build("functional")
    model.compile(optimizer="adam", loss="mse")
    assert not convert(model).compiled


@pytest.mark.parametrize(
    "method, options, error, match",
    [
        ("xx", {}, ValueError, r"Unknown method 'xx'\. Valid methods: 'wc', "),
        ("wc", {"alpha": 2.0}, ValueError, r"\['alpha'\] for method 'wc'.*a, "),
        ("pp", {"a": 1.0}, ValueError, r"Valid options: alpha"),
        ("wn", {"data_init": True}, ValueError, r"Valid options: init_scale"),
        ("wc", {"a": 0.0}, ValueError, r"`a` must be a finite number > 0"),
        ("wc", {"b": "1"}, TypeError, r"`b` must be a positive number"),
        ("wc", {"learnable": "yes"}, ValueError, r"`learnable` must be False"),
        ("wc", {"compander": "tanh"}, ValueError, r"Unknown compander 'tanh'"),
        ("pp", {"alpha": 0.5}, ValueError, r"`alpha` must be a finite number"),
        ("wn", {"init_scale": -1}, ValueError, r"`init_scale` must be a"),
    ],
)
def test_bad_method_or_option_raises(method, options, error, match):
    model = _dense_model([np.ones((2, 2), "float32")])
    with pytest.raises(error, match=match):
        convert(model, method, **options)


@pytest.mark.parametrize("model", [keras.layers.Dense(2), "model.keras", None])
def test_a_non_model_raises(model):
    with pytest.raises(TypeError, match="expects a `keras.Model`"):
        convert(model)


def test_a_model_that_cannot_be_copied_asks_for_inplace():
    class Classifier(keras.Model):  # not registered: cannot be rebuilt
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Classifier()
    x = np.ones((1, 3), "float32")
    expected = np.asarray(model(x))
    with pytest.raises(
        ValueError,
        match=r"'classifier' \(Classifier\) cannot be copied: .*Pass "
        r"`inplace=True` to change the model itself\.",
    ):
        convert(model)
    assert type(model.dense) is keras.layers.Dense
    assert convert(model, inplace=True) is model
    assert type(model.dense) is wc_layers.WCDense
    np.testing.assert_allclose(model(x), expected, rtol=1e-6, atol=1e-7)


def test_an_unbuilt_model_raises():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="needs a built model"):
        convert(model)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(architectures.APPLICATIONS))
@pytest.mark.parametrize("method", METHODS)
def test_applications_convert_keeps_outputs(name, method):
    model = architectures.build(name)
    inputs = architectures.sample_inputs(model, 2)
    expected = architectures.predict(model, inputs)
    converted, report = convert(model, method, return_report=True)
    actual = architectures.predict(converted, inputs)
    assert architectures.max_relative_difference(expected, actual) < 1e-5
    supported = [
        layer
        for _, layer in leaf_layers(model)
        if type(layer) in SUPPORTED_LAYERS
    ]
    assert len(report.converted) == len(supported)


def test_wn_layers_are_initialized_from_data_only_on_request():
    model = architectures.build("mean_only")
    inputs = architectures.sample_inputs(model, 16)
    converted = convert(model, "wn")
    before = architectures.predict(converted, inputs)
    assert (
        architectures.max_relative_difference(
            architectures.predict(model, inputs), before
        )
        < 1e-5
    )
    assert initialize(converted, inputs) == [
        "conv",
        "conv_relu",
        "fc",
        "logits",
    ]
    after = architectures.predict(converted, inputs)
    assert architectures.max_relative_difference(before, after) > 1e-2


def test_mixed_precision_policies_are_kept():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = architectures.build("functional")
    finally:
        keras.config.set_dtype_policy("float32")
    inputs = architectures.sample_inputs(model, 2)
    converted = convert(model)
    layer = converted.get_layer("stem")
    assert layer.dtype_policy.name == "mixed_float16"
    assert layer.v.dtype == "float32"
    np.testing.assert_allclose(
        architectures.predict(converted, inputs)[0],
        architectures.predict(model, inputs)[0],
        atol=1e-3,
    )


def test_quantized_layers_are_skipped_and_copied():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(6, name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    model.get_layer("head").quantize("int8")
    converted, report = convert(model, return_report=True)
    assert [e.path for e in report.converted] == ["fc"]
    assert report.skipped[0].reason == "quantized (int8)"
    x = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    np.testing.assert_allclose(
        architectures.predict(converted, x)[0],
        architectures.predict(model, x)[0],
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "options",
    [
        {"a": "auto"},
        {"a": "auto", "b": "auto"},
        {"a": "auto", "b": "auto", "compander": "erf"},
        {"a": "auto", "learnable": "fine"},
        {"a": "auto", "b": "auto", "learnable": "coarse"},
        {"a": 1.5, "b": "auto"},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_auto_scales_follow_the_rule_and_keep_the_function(options):
    model = architectures.build("functional")
    inputs = architectures.sample_inputs(model, 3)
    expected = architectures.predict(model, inputs)
    converted, report = convert(model, return_report=True, **options)
    actual = architectures.predict(converted, inputs)
    assert architectures.max_relative_difference(expected, actual) < 1e-5
    compander = companders.get(options.get("compander", "arctan"))
    slope = 2 / math.sqrt(math.pi) if compander.name == "erf" else 1.0
    layers = {
        path: layer
        for path, layer in leaf_layers(converted)
        if isinstance(layer, ReparameterizedLayer)
    }
    largest = {
        path: max(
            float(np.max(np.abs(np.asarray(k))))
            for k in layer.effective_kernels().values()
        )
        for path, layer in layers.items()
    }
    for entry in report.converted:
        layer = layers[entry.path]
        a, b = float(layer.a), float(layer.b)
        if options["a"] == "auto":
            assert entry.scales["a"] == pytest.approx(a)
            bound = compander.max_magnitude(a)
            if options.get("learnable") == "coarse":
                # One a for the model: the largest any layer needs.
                assert largest[entry.path] / bound <= 0.5 + 1e-6
            else:
                assert largest[entry.path] / bound == pytest.approx(0.5)
        if options.get("b") == "auto":
            assert b == pytest.approx(a * slope)  # Ψ'(0) = (a/b)·f'(0) = 1
            assert entry.scales["b"] == pytest.approx(b)
        if options.get("learnable") != "coarse":
            config = layer.get_config()
            assert (config["a"], config["b"]) == pytest.approx((a, b))
    if options.get("learnable") == "coarse":
        assert len({id(layer.shared) for layer in layers.values()}) == 1
    assert "(a=" in str(report) or "(b=" in str(report)


def test_auto_needs_a_bounded_compander():
    model = architectures.build("sequential")
    with pytest.raises(ValueError, match=r"unbounded\). Give `a` as a number"):
        convert(model, a="auto", compander="arsinh")
