"""Keras's fine-tuning and shipping tools on reparameterized models: LoRA,
quantization, LiteRT, plain checkpoints.

Each behaves as on the plain model (LoRA adapts the effective kernel with
plain LoRA's trainable parameters; `quantize` gives what quantizing the
folded model gives), or refuses before anything changes.
"""

import os

import keras
import numpy as np
import pytest

import keras_wc
from keras_wc import tree

L = keras.layers


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _raw_and_extra(layer):
    return [v for g in layer._raw_groups.values() for v in g] + (
        layer._extra_variables()
    )


# -- LoRA on keras_wc layers ------------------------------------------------

# (keras_wc layer, its effective kernel from the raw values in numpy,
#  input shape)
def _wc(v, layer):
    return layer.initial_a * np.arctan(v / layer.initial_b)


def _wn(v, layer):
    g = np.asarray(layer.g)
    axes = tuple(range(v.ndim - 1))
    return g * v / np.sqrt(np.sum(v**2, axis=axes, keepdims=True))


def _pp(v, layer):
    return v * np.abs(v)


LORA = {
    "wc-dense": (lambda: keras_wc.WCDense(5, a=2.0, b=0.8), _wc, (4, 6)),
    "wn-dense": (lambda: keras_wc.WNDense(5, data_init=False), _wn, (4, 6)),
    "pp-dense": (
        lambda: keras_wc.WCDense(5, compander="powerprop"),
        _pp,
        (4, 6),
    ),
    "wc-fine-dense": (
        lambda: keras_wc.WCDense(5, a=2.0, b=0.8, learnable=True),
        None,
        (4, 6),
    ),
    "wc-einsum": (
        lambda: keras_wc.WCEinsumDense("ab,bc->ac", 5, a=2.0),
        lambda v, layer: 2.0 * np.arctan(v),
        (4, 6),
    ),
    "wn-einsum": (
        lambda: keras_wc.WNEinsumDense("ab,bc->ac", 5, data_init=False),
        _wn,
        (4, 6),
    ),
    "wc-conv1d": (
        lambda: keras_wc.WCConv1D(4, 3, a=2.0, b=0.8),
        _wc,
        (4, 8, 3),
    ),
    "wn-conv2d": (
        lambda: keras_wc.WNConv2D(3, 2, data_init=False),
        _wn,
        (2, 5, 5, 2),
    ),
}


def _lora_model(case):
    make, _, shape = LORA[case]
    keras.utils.set_random_seed(0)
    layer = make()
    model = keras.Sequential([keras.Input(shape[1:]), layer, L.Flatten()])
    layer.enable_lora(2, lora_alpha=4)
    rng = np.random.default_rng(1)
    layer.lora_kernel_b.assign(
        rng.normal(size=layer.lora_kernel_b.shape).astype("float32")
    )
    return model, layer


@pytest.mark.parametrize("case", sorted(LORA))
def test_lora_adapts_the_effective_kernel_with_plain_loras_parameters(
    case, tmp_path
):
    model, layer = _lora_model(case)
    _, effective, shape = LORA[case]
    v = np.asarray(layer.v)
    # Copies: on PyTorch np.asarray shares the variable's memory.
    a, b = np.array(layer.lora_kernel_a), np.array(layer.lora_kernel_b)
    base = (
        np.asarray(layer._effective_kernel("kernel"))
        if effective is None
        else effective(v, layer)
    )
    np.testing.assert_allclose(
        np.asarray(layer.kernel), base + 2.0 * (a @ b), rtol=1e-5, atol=1e-6
    )
    # The trainable parameters are those of plain LoRA on the parent.
    parent = keras_wc.layers.layer_types.plain_parent(type(layer))
    own = layer.reparameterization_config()
    twin = parent.from_config(
        {
            k: v
            for k, v in layer.get_config().items()
            if k not in own and not k.startswith("lora")
        }
    )
    keras.Sequential([keras.Input(shape[1:]), twin])
    twin.enable_lora(2, lora_alpha=4)
    assert sorted(v.name for v in layer.trainable_variables) == sorted(
        v.name for v in twin.trainable_variables
    )
    assert _count(layer.trainable_variables) == _count(
        twin.trainable_variables
    )
    # Training changes the adapters and the bias only.
    raw = [np.array(v) for v in _raw_and_extra(layer)]
    x = np.random.default_rng(2).normal(size=shape).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, np.zeros(model(x).shape, "float32"), verbose=0)
    for old, variable in zip(raw, _raw_and_extra(layer), strict=True):
        np.testing.assert_array_equal(np.asarray(variable), old)
    assert not np.array_equal(np.asarray(layer.lora_kernel_a), a)
    # `.keras`: the same layer, LoRA and all.
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.layers[0].lora_enabled
    np.testing.assert_array_equal(loaded(x), model(x))
    # fold: the adapters merged into a plain kernel.
    folded = keras_wc.fold(model)
    assert type(folded.layers[0]) is parent
    assert not folded.layers[0].lora_enabled
    np.testing.assert_allclose(
        np.asarray(folded.layers[0].kernel),
        np.asarray(layer.kernel),
        rtol=1e-6,
        atol=1e-7,
    )
    np.testing.assert_allclose(folded(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras_wc.WCDepthwiseConv2D(3),
        lambda: keras_wc.WNSeparableConv1D(4, 3),
        lambda: keras_wc.WCConv2DTranspose(3, 3),
        lambda: keras_wc.WCLSTMCell(4),
    ],
    ids=["depthwise", "separable", "transpose", "lstm-cell"],
)
def test_no_enable_lora_where_the_parent_has_none(make):
    layer = make()
    parent = keras_wc.layers.layer_types.plain_parent(type(layer))
    assert not hasattr(parent, "enable_lora")
    assert not hasattr(layer, "enable_lora")


# -- keras-hub: backbone.enable_lora, both orders ----------------------------


def _bert():
    import keras_hub

    keras.utils.set_random_seed(0)
    return keras_hub.models.BertBackbone(
        vocabulary_size=64,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=8,
        dropout=0.0,  # training steps comparable between two models
    )


def _text(batch=4):
    rng = np.random.default_rng(0)
    return {
        "token_ids": rng.integers(0, 64, (batch, 8)).astype("int32"),
        "segment_ids": np.zeros((batch, 8), "int32"),
        "padding_mask": np.ones((batch, 8), "int32"),
    }


def _pooled(backbone, x):
    return np.asarray(backbone(x)["pooled_output"])


def _fit(backbone, x, steps=3):
    """A few steps on the pooled output (the backbone's trainable part)."""
    inputs = {k: keras.Input((8,), dtype="int32", name=k) for k in x}
    model = keras.Model(inputs, backbone(inputs)["pooled_output"])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    target = np.ones((len(x["token_ids"]), 16), "float32")
    model.fit(x, target, epochs=steps, batch_size=len(target), verbose=0)


def _adapters(backbone):
    return [
        np.asarray(v)
        for v in backbone.weights
        if v.name in ("lora_kernel_a", "lora_kernel_b")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wc", "wn"])
def test_keras_hub_lora_then_convert_trains_as_plain_lora(method, tmp_path):
    x = _text()
    plain = _bert()
    plain.enable_lora(4)
    expected = _count(plain.trainable_variables)
    before = _pooled(plain, x)
    backbone = _bert()
    backbone.enable_lora(4)
    options = {"a": "auto"} if method == "wc" else {}
    _, report = keras_wc.convert(
        backbone, method, inplace=True, return_report=True, **options
    )
    assert len([e for e in report.converted if e.lora_rank]) == 4
    assert "LoRA rank 4 kept" in str(report)
    assert _count(backbone.trainable_variables) == expected
    np.testing.assert_allclose(_pooled(backbone, x), before, atol=1e-5)
    frozen = [np.array(v) for v in backbone.weights if v.name == "v"]
    _fit(plain, x)
    _fit(backbone, x)
    for old, v in zip(
        frozen, [v for v in backbone.weights if v.name == "v"], strict=True
    ):
        np.testing.assert_array_equal(np.asarray(v), old)
    # The same training as plain LoRA: the same adapters and outputs (the
    # frozen kernel is Ψ(Ψ⁻¹(w)) = w up to float32 round-off).
    trained = _pooled(backbone, x)
    assert not np.allclose(trained, before, atol=1e-3)
    np.testing.assert_allclose(trained, _pooled(plain, x), atol=1e-5)
    for a, b in zip(_adapters(backbone), _adapters(plain), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # `save_lora_weights` writes those adapters: a fresh plain LoRA
    # backbone loads them (and a fresh converted one).
    backbone.save_lora_weights(os.fspath(tmp_path / "a.lora.h5"))
    fresh = _bert()
    fresh.load_lora_weights(os.fspath(tmp_path / "a.lora.h5"))
    for a, b in zip(_adapters(fresh), _adapters(backbone), strict=True):
        np.testing.assert_array_equal(a, b)
    # `.keras`: the converted layers come back with their adapters.
    backbone.save(tmp_path / "b.keras")
    loaded = keras.saving.load_model(tmp_path / "b.keras")
    enabled = [
        n.layer for n in tree.walk(loaded)
        if getattr(n.layer, "lora_enabled", False)
    ]
    assert len(enabled) == 4
    np.testing.assert_allclose(_pooled(loaded, x), trained, atol=1e-6)
    # fold: the adapters merged.
    folded = keras_wc.fold(backbone)
    assert not any(
        getattr(n.layer, "lora_enabled", False) for n in tree.walk(folded)
    )
    np.testing.assert_allclose(_pooled(folded, x), trained, atol=1e-5)


@pytest.mark.parametrize("method", ["wc", "wn"])
def test_keras_hub_convert_then_lora_trains_plain_loras_parameters(method):
    reference = _bert()
    reference.enable_lora(4)
    backbone = _bert()
    options = {"a": "auto"} if method == "wc" else {}
    keras_wc.convert(backbone, method, inplace=True, **options)
    backbone.enable_lora(4)
    assert _count(backbone.trainable_variables) == _count(
        reference.trainable_variables
    )


def test_a_converted_copy_of_a_lora_model_trains_what_the_original_trains():
    plain = _bert()
    plain.enable_lora(4)
    copy = keras_wc.convert(plain, "wc", a="auto")
    assert _count(copy.trainable_variables) == _count(plain.trainable_variables)
    assert sum(
        getattr(n.layer, "lora_enabled", False) for n in tree.walk(copy)
    ) == 4
    x = _text()
    np.testing.assert_allclose(_pooled(copy, x), _pooled(plain, x), atol=1e-5)


# -- quantization ----------------------------------------------------------


def _quantizable(method):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 4))
    h = L.Conv1D(8, 3, name="conv")(inputs)  # Keras has no quantized conv
    h = L.EinsumDense("abc,cd->abd", (4, 6), bias_axes="d", name="einsum")(h)
    h = L.Flatten()(h)
    outputs = L.Dense(5, name="dense")(h)
    plain = keras.Model(inputs, outputs)
    options = {"a": 2.0} if method == "wc" else {}
    return keras_wc.convert(plain, method, **options)


@pytest.mark.parametrize("mode", ["int8", "int4", "float8"])
@pytest.mark.parametrize("method", ["wc", "wn"])
def test_quantize_gives_what_quantizing_the_folded_model_gives(mode, method):
    converted = _quantizable(method)
    folded = keras_wc.fold(converted)
    x = np.random.default_rng(0).normal(size=(3, 6, 4)).astype("float32")
    with pytest.warns(UserWarning, match="quantize"):
        folded.quantize(mode)
    with pytest.warns(UserWarning, match="quantize"):
        converted.quantize(mode)
    got = {la.name: (type(la), la.quantization_mode) for la in converted.layers}
    want = {la.name: (type(la), la.quantization_mode) for la in folded.layers}
    # The quantizable layers were folded, then quantized as in the folded
    # model; the convolution stays as it was (Keras quantizes no conv).
    assert got["dense"] == want["dense"] and got["einsum"] == want["einsum"]
    assert want["dense"][1] == mode
    assert got["conv"][0].__name__ == f"{method.upper()}Conv1D"
    np.testing.assert_allclose(
        converted.predict(x, verbose=0),
        folded.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("mode", ["gptq", "awq"])
def test_quantize_modes_needing_a_config_refuse_before_any_change(mode):
    converted = _quantizable("wc")
    classes = [type(la) for la in converted.layers]
    values = [np.array(v) for v in converted.weights]
    with pytest.raises(ValueError, match=f"(?i){mode}.*config"):
        converted.quantize(mode)
    assert [type(la) for la in converted.layers] == classes
    for old, v in zip(values, converted.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(v), old)


@pytest.mark.slow
def test_quantized_keras_hub_models_fold_convert_save_and_load(tmp_path):
    x = _text()
    backbone = _bert()
    keras_wc.convert(backbone, "wc", inplace=True, a="auto")
    backbone.quantize("int8")  # every kernel and the embeddings
    quantized = {
        n.path
        for n in tree.walk(backbone)
        if getattr(n.layer, "quantization_mode", None) == "int8"
    }
    assert len(quantized) >= 14
    expected = _pooled(backbone, x)
    folded = keras_wc.fold(backbone)
    folded.save(tmp_path / "folded.keras")
    loaded = keras.saving.load_model(tmp_path / "folded.keras")
    np.testing.assert_allclose(_pooled(loaded, x), expected, atol=1e-6)
    # A partly quantized model (its embeddings): convert skips nothing
    # else, and it saves and loads.
    partly = _bert()
    partly.get_layer("token_embedding").quantize("int8")
    converted = keras_wc.convert(partly, "wn")
    converted.save(tmp_path / "partly.keras")
    reloaded = keras.saving.load_model(tmp_path / "partly.keras")
    np.testing.assert_allclose(
        _pooled(reloaded, x), _pooled(converted, x), atol=1e-6
    )


# -- plain checkpoints --------------------------------------------------------


def _plain_net(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5, 3))
    h = L.Conv1D(4, 2, name="conv")(inputs)
    h = L.BatchNormalization(name="bn")(h)
    h = L.LSTM(3, name="lstm")(h)
    return keras.Model(inputs, L.Dense(2, name="head")(h))


@pytest.mark.parametrize("method", ["wc", "wc-fine", "pp", "wn"])
def test_plain_checkpoints_load_into_and_out_of_a_converted_model(
    method, tmp_path
):
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype("float32")
    trained = _plain_net(1)
    trained.save_weights(tmp_path / "plain.weights.h5")
    options = {"pp": {}, "wn": {}}.get(method, {"a": 3.0, "b": 1.0})
    if method == "wc-fine":
        options["learnable"] = "fine"
    converted = keras_wc.convert(
        _plain_net(2), "wc" if method.startswith("wc") else method, **options
    )
    keras_wc.load_plain_weights(converted, tmp_path / "plain.weights.h5")
    np.testing.assert_allclose(
        np.asarray(converted(x)), np.asarray(trained(x)), rtol=1e-5, atol=1e-6
    )
    # And back: the effective weights as a plain checkpoint.
    keras_wc.save_plain_weights(converted, tmp_path / "back.weights.h5")
    again = _plain_net(3)
    again.load_weights(tmp_path / "back.weights.h5")
    np.testing.assert_allclose(
        np.asarray(again(x)), np.asarray(trained(x)), rtol=1e-5, atol=1e-6
    )


def test_a_plain_checkpoint_that_does_not_fit_changes_nothing(tmp_path):
    big = _plain_net(1)
    head = big.get_layer("head")
    head.kernel.assign(np.full(head.kernel.shape, 5.0, "float32"))
    big.save_weights(tmp_path / "big.weights.h5")
    converted = keras_wc.convert(_plain_net(2), "wc", a=1.0)
    values = [np.array(v) for v in converted.weights]
    with pytest.raises(ValueError, match="head|a="):
        keras_wc.load_plain_weights(converted, tmp_path / "big.weights.h5")
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        keras_wc.load_plain_weights(converted, tmp_path / "big.keras")
    for old, v in zip(values, converted.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(v), old)


def test_set_weights_with_a_plain_layers_weights_names_the_right_call():
    plain = L.Dense(3)
    plain.build((None, 4))
    layer = keras_wc.WNDense(3, data_init=False)
    layer.build((None, 4))
    values = [np.array(v) for v in layer.weights]
    with pytest.raises(ValueError, match="load_plain_weights"):
        layer.set_weights(plain.get_weights())
    for old, v in zip(values, layer.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(v), old)


# -- LiteRT ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wc", "wn"])
def test_litert_export_runs_in_the_interpreter(method, tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 3), name="signal")
    h = L.Conv1D(4, 3, activation="relu", name="conv")(inputs)
    h = L.GlobalAveragePooling1D()(h)
    plain = keras.Model(inputs, L.Dense(2, name="logits")(h))
    options = {"a": 2.0} if method == "wc" else {}
    model = keras_wc.convert(plain, method, **options)
    path = tmp_path / "model.tflite"
    folded = keras_wc.export(model, path, format="litert")
    assert os.path.isfile(path) and os.path.isfile(tmp_path / "model.keras")
    x = np.random.default_rng(0).normal(size=(1, 8, 3)).astype("float32")
    interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(folded(x)), atol=1e-5)
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-5)


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "format, path",
    [("litert", "model.onnx"), ("onnx", "model.tflite"), ("onnx", "model")],
)
def test_a_file_export_needs_its_formats_suffix(format, path, tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras_wc.WCDense(2)])
    with pytest.raises(ValueError, match=r"\.(onnx|tflite)"):
        keras_wc.export(model, tmp_path / path, format=format)
    assert os.listdir(tmp_path) == []
