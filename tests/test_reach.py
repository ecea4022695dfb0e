"""`convert` and `fold` reach every kernel of every model: composite layers,
op nodes, recurrent layers, subclassed models, keras-hub, in place; and the
tensorflow-addons drop-in."""

import os
import warnings

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf  # loads the exported SavedModels
from backend_utils import BACKEND, apply_gradients, gradients, total_loss

import keras_wc
from bench import reach
from bench.reach import relative
from keras_wc import inplace_saving, tree
from keras_wc.layers import wc_layers, wn_layers
from keras_wc.layers.reparameterized import ReparameterizedLayer

L = keras.layers
METHODS = {"wc": {"a": 2.0, "b": 0.8}, "pp": {}, "wn": {}}
RTOL = 1e-5


def keras_wc_layers(model):
    return [
        node.path
        for node in tree.walk(model)
        if type(node.layer).__module__.startswith("keras_wc")
    ]


def sgd_step(model, x, learning_rate=0.05):
    """One training step on the sum of squares of every output."""
    variables = model.trainable_variables
    grads = gradients(
        lambda: total_loss(model(x, training=True), model) / 100.0, variables
    )
    apply_gradients(keras.optimizers.SGD(learning_rate), grads, variables)


def round_trip(model, x, tmp_path):
    """Saves and loads `model`; asserts identical raw variables and outputs
    and returns the loaded model."""
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    # (Paths may differ: a subclassed model's layers are renamed on load.)
    assert [v.name for v in loaded.weights] == [v.name for v in model.weights]
    for old, new in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    # On PyTorch a generic `keras.layers.RNN` around a keras_wc cell gives
    # outputs that differ at float32 round-off (measured: 6e-8 absolute)
    # between the model and its reloaded copy, with identical variables.
    tolerance = 1e-6 if BACKEND == "torch" else 0.0
    assert relative(loaded(x), model(x)) <= tolerance
    return loaded


# -- a functional transformer block with op nodes ----------------------------


def transformer_block():
    tokens = keras.Input((6, 8), name="tokens")
    h = L.MultiHeadAttention(2, 4, name="attention")(tokens, tokens)
    h = L.LayerNormalization(name="norm")(h + tokens)
    f = L.Dense(16, activation="gelu", name="ffn_in")(h)
    h = L.Dense(8, name="ffn_out")(f) + h
    h = keras.ops.relu(h) * 2.0
    logits = L.Dense(3, name="head")(h[:, 0])
    return keras.Model(tokens, logits, name="block")


def tokens(batch=4, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 6, 8))


@pytest.mark.parametrize("method", METHODS)
def test_transformer_block_reaches_the_attention_projections(method, tmp_path):
    model = transformer_block()
    x = tokens()
    expected = model(x)
    converted, report = keras_wc.convert(
        model, method, return_report=True, **METHODS[method]
    )
    assert (report.kernels, report.converted_kernels) == (7, 7)
    assert {e.path for e in report.converted} >= {
        "attention/query",
        "attention/key",
        "attention/value",
        "attention/attention_output",
    }
    assert keras_wc_layers(model) == []  # the input model is unchanged
    assert relative(converted(x), expected) <= RTOL
    sgd_step(converted, x)
    trained = np.asarray(converted(x))
    assert relative(trained, expected) > 1e-3
    round_trip(converted, x, tmp_path)
    folded = keras_wc.fold(converted)
    assert keras_wc_layers(folded) == []
    assert relative(folded(x), trained) <= RTOL


def test_layers_selects_inner_layers_by_class_and_path():
    model = transformer_block()
    _, report = keras_wc.convert(
        model, layers=keras.layers.EinsumDense, a=2.0, return_report=True
    )
    assert [e.path for e in report.converted] == [
        "attention/query",
        "attention/key",
        "attention/value",
        "attention/attention_output",
    ]
    _, report = keras_wc.convert(
        model, layers=["attention/query", "head"], a=2.0, return_report=True
    )
    assert [e.path for e in report.converted] == ["attention/query", "head"]
    _, report = keras_wc.convert(
        model, layers="attention", a=2.0, return_report=True
    )
    assert len(report.converted) == 4
    _, report = keras_wc.convert(
        model,
        layers=lambda layer: isinstance(layer, L.Dense),
        a=2.0,
        return_report=True,
    )
    assert [e.path for e in report.converted] == ["ffn_in", "ffn_out", "head"]


@pytest.mark.parametrize("method", METHODS)
def test_op_nodes_convert_fold_and_export(method, tmp_path):
    inputs = keras.Input((10,), name="x")
    h = L.Dense(8, name="d1")(inputs)
    h = keras.ops.relu(h) * 2.0 + 1.0
    left, right = h[:, :4], h[:, 4:]
    h = keras.ops.concatenate([keras.ops.tanh(left), right], axis=-1)
    outputs = L.Dense(2, name="d2")(keras.ops.cast(h, "float32"))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).standard_normal((5, 10)).astype("f4")
    converted = keras_wc.convert(model, method, **METHODS[method])
    sgd_step(converted, x)
    trained = np.asarray(converted(x))
    folded = keras_wc.export(converted, os.path.join(tmp_path, "serve", "1"))
    assert relative(folded(x), trained) <= RTOL
    served = tf.saved_model.load(os.path.join(tmp_path, "serve", "1"))
    out = served.signatures["serving_default"](x=tf.constant(x))
    assert relative(list(out.values())[0], trained) <= RTOL


# -- recurrent layers ----------------------------------------------------------


def recurrent_model():
    sequence = keras.Input((7, 4), name="sequence")
    h = L.Bidirectional(L.LSTM(5, return_sequences=True), name="bi")(sequence)
    h = L.TimeDistributed(L.Dense(6), name="per_step")(h)
    h = L.GRU(4, return_sequences=True, name="gru")(h)
    h = L.RNN(L.SimpleRNNCell(3), name="rnn")(h)
    return keras.Model(sequence, L.Dense(2, name="head")(h))


@pytest.mark.parametrize("method", METHODS)
def test_recurrent_layers_are_reparameterized(method, tmp_path):
    model = recurrent_model()
    x = np.random.default_rng(2).standard_normal((3, 7, 4)).astype("f4")
    expected = model(x)
    converted, report = keras_wc.convert(
        model, method, return_report=True, **METHODS[method]
    )
    # LSTM ×2 (forward, backward), GRU, SimpleRNN cell: 2 kernels each.
    assert (report.kernels, report.converted_kernels) == (10, 10)
    prefix = "WN" if method == "wn" else "WC"
    bi = converted.get_layer("bi")
    assert type(bi.forward_layer).__name__ == prefix + "LSTM"
    assert type(bi.backward_layer).__name__ == prefix + "LSTM"
    assert type(converted.get_layer("gru")).__name__ == prefix + "GRU"
    assert type(converted.get_layer("rnn").cell).__name__ == (
        prefix + "SimpleRNNCell"
    )
    assert relative(converted(x), expected) <= RTOL
    # Every layer is described by the Functional config: no record needed.
    assert not tree.is_recorded_model(converted)
    converted.compile(optimizer="sgd", loss="mse")
    converted.fit(x, np.zeros((3, 2)), epochs=1, verbose=0)
    trained = np.asarray(converted(x))
    round_trip(converted, x, tmp_path)
    folded = keras_wc.fold(converted)
    assert keras_wc_layers(folded) == []
    assert type(folded.get_layer("bi").forward_layer) is L.LSTM
    assert relative(folded(x), trained) <= RTOL


# -- subclassed models ---------------------------------------------------------


@keras.saving.register_keras_serializable(package="test_reach")
class Tagger(keras.Model):
    """A subclassed model with layers in a list, a dict and a composite."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.blocks = [L.Dense(units, activation="relu") for _ in range(2)]
        self.heads = {"tag": L.Dense(3), "score": L.Dense(1)}
        self.attention = L.MultiHeadAttention(2, 4)
        self.recurrent = L.GRU(units, return_sequences=True)

    def call(self, x):
        h = self.recurrent(x)
        h = self.attention(h, h)
        for block in self.blocks:
            h = block(h)
        pooled = keras.ops.mean(h, axis=1)
        return {
            "tag": self.heads["tag"](pooled),
            "score": self.heads["score"](pooled),
        }

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@pytest.mark.parametrize("method", METHODS)
def test_subclassed_model_in_place(method, tmp_path):
    model = Tagger()
    x = np.random.default_rng(3).standard_normal((4, 5, 6)).astype("f4")
    expected = model(x)
    same, report = keras_wc.convert(
        model, method, inplace=True, return_report=True, **METHODS[method]
    )
    assert same is model and isinstance(model, Tagger)
    assert type(model).__name__ == "Tagger"
    assert (report.kernels, report.converted_kernels) == (10, 10)
    assert relative(model(x), expected) <= RTOL
    model.compile(optimizer="sgd", loss={"tag": "mse", "score": "mse"})
    model.fit(x, {"tag": np.zeros((4, 3)), "score": np.ones((4, 1))}, verbose=0)
    trained = model(x)
    loaded = round_trip(model, x, tmp_path)
    assert isinstance(loaded, Tagger)
    assert isinstance(loaded.heads["tag"], ReparameterizedLayer)
    assert keras_wc.fold(model, inplace=True) is model
    assert keras_wc_layers(model) == []
    assert type(model) is Tagger  # the record is gone with the keras_wc layers
    assert relative(model(x), trained) <= RTOL


@keras.saving.register_keras_serializable(package="test_reach")
class WCNet(keras.Model):
    """At module level: export on JAX/PyTorch imports it in a TF process."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras_wc.WCDense(8, a=1.0, b=0.6)
        self.out = keras_wc.WNDense(2, data_init=False)

    def call(self, x):
        return self.out(keras.ops.relu(self.hidden(x)))


def test_a_model_built_from_keras_wc_layers_folds_and_exports(tmp_path):
    model = WCNet()
    x = np.random.default_rng(4).standard_normal((3, 5)).astype("f4")
    model(x)
    sgd_step(model, x)
    trained = np.asarray(model(x))
    folded = keras_wc.export(model, os.path.join(tmp_path, "serve", "1"))
    assert keras_wc_layers(folded) == []
    assert relative(folded(x), trained) <= RTOL
    served = tf.saved_model.load(os.path.join(tmp_path, "serve", "1"))
    assert relative(served.serve(x), trained) <= RTOL
    # WCNet's code builds keras_wc layers: the folded copy records that they
    # were released, and loads as it was saved.
    reloaded = keras.saving.load_model(
        os.path.join(tmp_path, "serve", "1.keras")
    )
    assert type(reloaded.hidden) is L.Dense
    assert relative(reloaded(x), trained) <= RTOL


@pytest.mark.backends("jax", "torch", reason="export runs a TF subprocess")
def test_export_refuses_a_class_a_tf_process_cannot_import(tmp_path):
    class LocalNet(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras_wc.WCDense(2, a=1.0)

        def call(self, x):
            return self.hidden(x)

    model = LocalNet()
    model(np.zeros((1, 3), "float32"))
    target = tmp_path / "serve"
    with pytest.raises(
        ValueError, match=r"inside a function: .*<locals>\.LocalNet"
    ):
        keras_wc.export(model, os.fspath(target))
    assert list(tmp_path.iterdir()) == []


# -- keras-hub -----------------------------------------------------------------


# (builder, inputs, kernels in the model): the models of `bench.reach`.
HUB = reach.MODELS


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", HUB)
def test_keras_hub_backbones(name, method, tmp_path):
    build, make_inputs, kernels = HUB[name]
    model = build()
    cls = type(model)
    x = make_inputs()
    expected = model(x)
    same, report = keras_wc.convert(
        model, method, inplace=True, return_report=True, **METHODS[method]
    )
    assert same is model and isinstance(model, cls)
    assert type(model).__name__ == cls.__name__
    assert (report.kernels, report.converted_kernels) == (kernels, kernels)
    assert relative(model(x), expected) <= RTOL
    sgd_step(model, x)
    trained = model(x)
    loaded = round_trip(model, x, tmp_path)
    assert isinstance(loaded, cls)
    folded = keras_wc.export(model, os.path.join(tmp_path, "serve", "1"))
    assert isinstance(folded, cls) and keras_wc_layers(folded) == []
    assert relative(folded(x), trained) <= RTOL
    assert keras_wc_layers(model) != []  # export folds a copy


@pytest.mark.slow
def test_keras_hub_task_around_a_converted_backbone(tmp_path):
    backbone = reach.bert()
    keras_wc.convert(backbone, "wc", inplace=True, a=2.0, b=0.8)
    task = keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=3, preprocessor=None
    )
    x = reach.text_inputs(batch=4)
    y = np.array([0, 1, 2, 1])
    task.fit(x, y, epochs=1, batch_size=4, verbose=0)
    trained = task.predict(x, verbose=0)
    loaded = round_trip(task, x, tmp_path)
    query = loaded.backbone.get_layer("transformer_layer_0")
    assert isinstance(
        query._self_attention_layer._query_dense, wc_layers.WCEinsumDense
    )
    folded = keras_wc.fold(task)
    assert keras_wc_layers(folded) == []
    assert relative(folded.predict(x, verbose=0), trained) <= RTOL


@pytest.mark.slow
def test_converting_a_trained_compiled_task_in_place_rebuilds_its_optimizer():
    task = keras_hub.models.BertTextClassifier(
        backbone=reach.bert(), num_classes=2, preprocessor=None
    )
    x = reach.text_inputs(batch=4)
    y = np.array([0, 1, 1, 0])
    task.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert task.optimizer.built
    expected = task.predict(x, verbose=0)
    _, report = keras_wc.convert(task, "wn", inplace=True, return_report=True)
    assert report.converted_kernels == report.kernels == 14
    assert relative(task.predict(x, verbose=0), expected) <= RTOL
    history = task.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    raw = {id(v) for v in task.trainable_variables}
    assert all(id(v) in raw for v in task.optimizer._trainable_variables)


def test_keras_hub_layers_selected_by_path():
    model = reach.bert()
    _, report = keras_wc.convert(
        model,
        layers="transformer_layer_0/self_attention_layer/query",
        return_report=True,
    )
    assert [e.path for e in report.converted] == [
        "transformer_layer_0/self_attention_layer/query"
    ]
    _, report = keras_wc.convert(
        model, layers=keras.layers.EinsumDense, return_report=True
    )
    assert len(report.converted) == 8


# -- nothing silent ------------------------------------------------------------


def test_no_kernel_converted_warns_and_the_report_counts_kernels():
    inputs = keras.Input((4,), dtype="int32")
    h = L.Embedding(10, 3, name="embedding")(inputs)
    h = L.LayerNormalization(name="norm")(h)
    outputs = L.Dense(2, name="head")(h)
    model = keras.Model(inputs, outputs)
    with pytest.warns(UserWarning, match=r"no kernel of model .*\(1 kernel"):
        _, report = keras_wc.convert(model, layers=[], return_report=True)
    assert (report.kernels, report.converted_kernels) == (1, 0)
    reasons = {e.path: e.reason for e in report.skipped}
    assert reasons == {
        "embedding": "embedding (a lookup table, not a kernel)",
        "norm": "normalization layer (never reparameterized)",
        "head": "not selected by `layers=`",
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras_wc.convert(model)
    assert not [w for w in caught if "converted no kernel" in str(w.message)]


def test_a_failed_in_place_conversion_changes_nothing():
    model = transformer_block()
    # The head's kernel is far outside arctan's range for a = 0.01.
    before = [np.asarray(w) for w in model.weights]
    with pytest.raises(ValueError, match="smallest `a` that works"):
        keras_wc.convert(model, inplace=True, a=0.01)
    assert keras_wc_layers(model) == []
    assert not inplace_saving.needs_record(model)
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))


# -- coming from tensorflow-addons ---------------------------------------------


def test_tfa_style_weight_normalization(tmp_path):
    signal = keras.Input((32, 1), name="signal")
    h = keras_wc.WeightNormalization(
        L.Conv1D(8, 5, activation="relu", name="conv"), data_init=True
    )(signal)
    h = L.GlobalAveragePooling1D()(h)
    logits = keras_wc.WeightNormalization(L.Dense(2, name="logits"))(h)
    model = keras.Model(signal, logits)
    assert type(model.get_layer("conv")) is wn_layers.WNConv1D
    x = np.random.default_rng(5).standard_normal((64, 32, 1)).astype("f4")
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(RuntimeError, match=r"keras_wc.initialize\(model, x\)"):
        model(x, training=True)
    if BACKEND != "jax":  # on JAX a raising fit detaches the variables
        with pytest.raises(RuntimeError, match=r"keras_wc.initialize\("):
            model.fit(x, np.zeros((64, 2)), verbose=0)
    assert keras_wc.initialize(model, x) == ["conv", "logits"]
    model.fit(x, np.zeros((64, 2)), verbose=0)
    round_trip(model, x, tmp_path)


def test_tfa_style_wrapping_a_built_layer_keeps_its_function():
    dense = L.Dense(3)
    x = np.random.default_rng(6).standard_normal((4, 5)).astype("f4")
    expected = np.asarray(dense(x))
    layer = keras_wc.WeightNormalization(dense, data_init=False, name="wn")
    assert type(dense) is L.Dense and layer.name == "wn"
    assert relative(layer(x), expected) <= RTOL


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((L.Flatten(),), {}, TypeError, "supports the Keras layers Dense"),
        (("dense",), {}, TypeError, "`layer` must be a Keras layer"),
        ((L.Dense(2),), {"data_init": 1}, TypeError, "`data_init` must be"),
        ((L.Dense(2),), {"axis": 0}, TypeError, r"Unknown argument\(s\)"),
        ((L.LSTM(2),), {}, TypeError, "supports the Keras layers"),
    ],
)
def test_tfa_style_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        keras_wc.WeightNormalization(*args, **kwargs)
