"""Every way a reparameterized layer comes to be round-trips.

A layer is built as a keras_wc class, made by tensorflow-addons'
`WeightNormalization` signature, or changed in place by `convert` (on a
copy, or in place); it sits in a model directly, inside `TimeDistributed`
or `Bidirectional`, or inside a custom layer's `build`. Whatever the way,
it must behave as a layer built as its class: the "initialize first" guard,
training, the `.keras` round trip, `fold` (copy and in place) and the
folded model's training, prediction and saving, and the original model,
still usable after its copies trained (on JAX a copy sharing its buffers
would delete them). Then the reproducers of the bugs this matrix guards
against, each on its own.
"""

import os

import keras
import numpy as np
import pytest
from backend_utils import BACKEND

import keras_wc
from keras_wc import tree

METHODS = ("wc", "pp", "wn")
WAYS = ("native", "wrapper", "convert_copy", "convert_in_place")

# What a test step compiles: TensorFlow and PyTorch run it eagerly (a
# traced or compiled step of a model used once costs more than the step);
# JAX compiles it (op by op costs more there). Compiled steps are tested
# elsewhere (the layer harness, tests/test_backends.py).
_STEP = {"run_eagerly": BACKEND != "jax"}


def _native(cls, method):
    """The keras_wc class standing for the Keras class `cls`, and its
    method's arguments."""
    if method == "wn":  # data_init=True, but for recurrent layers
        return getattr(keras_wc, "WN" + cls.__name__), {}
    options = {"a": 2.0, "b": 1.0} if method == "wc" else {}
    if method == "pp":
        options = {"compander": "powerprop"}
    return getattr(keras_wc, "WC" + cls.__name__), options


def make(way, method):
    """`fn(cls, *args, **kwargs)` building the kernel layer the way `way`
    does: a keras_wc class, the tfa wrapper, or the plain layer (which
    `convert` changes later)."""

    def build(cls, *args, **kwargs):
        if way == "native":
            native, options = _native(cls, method)
            return native(*args, **kwargs, **options)
        if way == "wrapper":
            return keras_wc.WeightNormalization(cls(*args, **kwargs))
        return cls(*args, **kwargs)

    return build


@keras.saving.register_keras_serializable(package="keras_wc_tests")
class Block(keras.layers.Layer):
    """A custom layer whose `build` makes its kernel layer (the keras-tcn
    and MelGAN pattern): its config does not describe that layer."""

    def __init__(self, way="plain", method="wc", **kwargs):
        super().__init__(**kwargs)
        self.way = way
        self.method = method

    def build(self, input_shape):
        self.conv = make(self.way, self.method)(keras.layers.Conv1D, 4, 3)
        self.conv.build(input_shape)

    def call(self, x):
        return self.conv(x)

    def get_config(self):
        return {**super().get_config(), "way": self.way, "method": self.method}


# context -> (input shape without batch, fn(make, way, method) -> layer)
CONTEXTS = {
    "dense": ((6,), lambda m, w, k: m(keras.layers.Dense, 4)),
    "conv1d": ((8, 3), lambda m, w, k: m(keras.layers.Conv1D, 4, 3)),
    "conv2d": ((6, 6, 2), lambda m, w, k: m(keras.layers.Conv2D, 3, 3)),
    "conv2d_transpose": (
        (4, 4, 2),
        lambda m, w, k: m(keras.layers.Conv2DTranspose, 3, 3),
    ),
    "depthwise_conv2d": (
        (6, 6, 2),
        lambda m, w, k: m(keras.layers.DepthwiseConv2D, 3),
    ),
    "separable_conv1d": (
        (8, 3),
        lambda m, w, k: m(keras.layers.SeparableConv1D, 4, 3),
    ),
    "einsum_dense": (
        (5, 3),
        lambda m, w, k: m(
            keras.layers.EinsumDense, "abc,cd->abd", (5, 4), bias_axes="d"
        ),
    ),
    "time_distributed": (
        (3, 6, 6, 2),
        lambda m, w, k: keras.layers.TimeDistributed(
            m(keras.layers.Conv2D, 3, 3)
        ),
    ),
    "bidirectional": (
        (5, 3),
        lambda m, w, k: keras.layers.Bidirectional(m(keras.layers.LSTM, 4)),
    ),
    "custom_build": (
        (8, 3),
        lambda m, w, k: Block(
            way=w if w in ("native", "wrapper") else "plain", method=k
        ),
    ),
}


def _cases():
    for context in CONTEXTS:
        for method in METHODS:
            for way in WAYS:
                if way == "wrapper" and (
                    method != "wn" or context == "bidirectional"
                ):
                    continue  # tfa's wrapper: WN of non-recurrent layers
                yield pytest.param(
                    context, method, way, id=f"{context}-{method}-{way}"
                )


def _model(context, method, way):
    input_shape, layer = CONTEXTS[context]
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    outputs = layer(make(way, method), way, method)(inputs)
    model = keras.Model(inputs, keras.layers.Flatten()(outputs))
    if way == "convert_copy":
        return keras_wc.convert(model, method), model
    if way == "convert_in_place":
        keras_wc.convert(model, method, inplace=True)
    return model, None


def _data(model):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, *model.input_shape[1:])).astype("float32")
    y = rng.normal(size=(4, *model.output_shape[1:])).astype("float32")
    return x, y


def _values(model):
    """(name, value) of every variable, in order (paths may differ after
    loading: Keras builds a `TimeDistributed` layer's inner layer outside
    its name scope then)."""
    return [(v.name, np.array(v)) for v in model.weights]


def _same_values(got, expected):
    assert [name for name, _ in got] == [name for name, _ in expected]
    for (name, a), (_, b) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b, name)


def _fit(model, x, y):
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", **_STEP)
    loss = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(loss.history["loss"][0])


def _reparameterized(model):
    return [
        node.path
        for node in tree.walk(model)
        if type(node.layer).__module__.startswith("keras_wc.layers")
    ]


def _reloaded(model, path):
    model.save(path)
    return keras.saving.load_model(path, compile=False)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("context, method, way", list(_cases()))
def test_every_way_round_trips(tmp_path, context, method, way):
    model, original = _model(context, method, way)
    x, y = _data(model)
    assert _reparameterized(model), "nothing was reparameterized"
    if original is not None:
        expected = np.asarray(original(x))
    if any(getattr(n.layer, "data_init", False) for n in tree.walk(model)):
        # data_init=True: training before `initialize` fails, changing
        # nothing; inference is allowed.
        before = _values(model)
        with pytest.raises(RuntimeError, match="initialize"):
            _fit(model, x, y)
        if BACKEND == "jax":
            # Keras's JAX `fit` detaches the variables' values before the
            # step is traced and leaves them so when it raises (the message
            # says so): start again from the model as it was.
            model, _ = _model(context, method, way)
        _same_values(_values(model), before)
        assert keras_wc.initialize(model, x)
    _fit(model, x, y)
    outputs = model.predict(x, verbose=0)
    _close(outputs, np.asarray(model(x)))

    # .keras: the same raw variables and outputs.
    loaded = _reloaded(model, os.fspath(tmp_path / "model.keras"))
    _same_values(_values(loaded), _values(model))
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))

    # fold, a copy: plain layers, the same function; it trains, predicts and
    # saves; the model it came from is untouched.
    folded = keras_wc.fold(model)
    assert _reparameterized(folded) == []
    _close(np.asarray(folded(x)), outputs)
    _fit(folded, x, y)
    _close(folded.predict(x, verbose=0), np.asarray(folded(x)))
    refolded = _reloaded(folded, os.fspath(tmp_path / "folded.keras"))
    np.testing.assert_array_equal(refolded(x), folded(x))
    np.testing.assert_array_equal(model.predict(x, verbose=0), outputs)

    # fold in place: the same; it trains, predicts and saves.
    keras_wc.fold(model, inplace=True)
    assert _reparameterized(model) == []
    _close(model.predict(x, verbose=0), outputs)
    _fit(model, x, y)
    _close(model.predict(x, verbose=0), np.asarray(model(x)))
    reloaded = _reloaded(model, os.fspath(tmp_path / "in_place.keras"))
    np.testing.assert_array_equal(reloaded(x), model(x))

    if original is not None:
        # The plain model a copy was converted from: unchanged, trainable.
        np.testing.assert_array_equal(original.predict(x, verbose=0), expected)
        _fit(original, x, y)


# -- the reproducers -------------------------------------------------------


def test_a_wrapped_convolution_refuses_training_before_initialize():
    layer = keras_wc.WeightNormalization(keras.layers.Conv1D(4, 3))
    model = keras.Sequential(
        [
            keras.Input((8, 2)),
            layer,
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).random((8, 8, 2)).astype("float32")
    with pytest.raises(RuntimeError, match="keras_wc.initialize"):
        model.fit(x, np.zeros((8, 1), "float32"), verbose=0)
    assert not layer.is_initialized()


def test_a_model_whose_code_calls_the_wrapper_folds_to_a_loadable_file(
    tmp_path,
):
    inputs = keras.Input((8, 2))
    model = keras.Model(inputs, Block(way="wrapper", method="wn")(inputs))
    x = np.random.default_rng(0).random((2, 8, 2)).astype("float32")
    keras_wc.initialize(model, x)
    folded = keras_wc.fold(model)
    folded.save(tmp_path / "f.keras")
    loaded = keras.saving.load_model(tmp_path / "f.keras")
    np.testing.assert_array_equal(loaded(x), folded(x))
    _close(np.asarray(loaded(x)), np.asarray(model(x)))


@pytest.mark.parametrize("how", ["fold_in_place", "release"])
def test_a_released_convolution_trains_and_predicts(how):
    inputs = keras.Input((8, 2))
    layer = keras_wc.WNConv1D(4, 3, data_init=False)
    model = keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))
    if how == "release":
        layer.release()
    else:
        keras_wc.fold(model, inplace=True)
    assert type(layer) is keras.layers.Conv1D
    x = np.random.default_rng(0).random((8, 8, 2)).astype("float32")
    model.compile("sgd", "mse")
    model.fit(x, np.zeros((8, 24), "float32"), verbose=0)
    _close(model.predict(x, verbose=0), np.asarray(model(x)))


@pytest.mark.parametrize("method", ["wn", "wc"])
def test_the_copy_workflow_on_a_time_distributed_convolution(method):
    inputs = keras.Input((3, 6, 6, 2))
    plain = keras.Model(
        inputs,
        keras.layers.TimeDistributed(keras.layers.Conv2D(3, 3))(inputs),
    )
    x = np.random.default_rng(0).random((4, 3, 6, 6, 2)).astype("float32")
    folded = keras_wc.fold(keras_wc.convert(plain, method))
    _close(np.asarray(folded(x)), np.asarray(plain(x)))


def test_fold_in_place_retraces_the_predict_function():
    model = keras.Sequential([keras.Input((4,)), keras_wc.WCDense(3)])
    x = np.random.default_rng(0).random((2, 4)).astype("float32")
    model.predict(x, verbose=0)  # traced with the WC layer
    keras_wc.fold(model, inplace=True)
    model.layers[0].kernel.assign(np.ones((4, 3), "float32"))
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        x @ np.ones((4, 3)) + np.asarray(model.layers[0].bias),
        rtol=1e-6,
    )


def test_convert_in_place_retraces_the_predict_function():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((2, 4)).astype("float32")
    model.predict(x, verbose=0)  # traced, the model not compiled
    keras_wc.convert(model, "wc", inplace=True)
    model.layers[0].v.assign(np.zeros((4, 3), "float32"))
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        np.broadcast_to(np.asarray(model.layers[0].bias), (2, 3)),
        atol=1e-7,
    )


def test_initialize_through_time_distributed_uses_every_time_step():
    inputs = keras.Input((3, 5))
    wrapper = keras.layers.TimeDistributed(
        keras_wc.WNDense(4, init_scale=0.5)
    )
    model = keras.Model(inputs, wrapper(inputs))
    rng = np.random.default_rng(0)
    # Each time step has its own scale and offset.
    x = (
        rng.normal(size=(64, 3, 5)) * np.array([1.0, 3.0, 0.5])[:, None]
        + np.array([0.0, 2.0, -1.0])[:, None]
    ).astype("float32")
    assert keras_wc.initialize(model, x) == [wrapper.layer.name]
    t = np.asarray(model(x)).reshape(-1, 4)  # linear: t = pre-activation
    np.testing.assert_allclose(t.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(t.std(axis=0), 0.5, rtol=1e-4)
    assert type(wrapper).call is keras.layers.TimeDistributed.call
    assert "call" not in vars(wrapper)


def test_copies_own_their_variables():
    x = np.random.default_rng(0).random((2, 4)).astype("float32")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)]
    )
    expected = np.asarray(model(x))
    converted = keras_wc.convert(model, "wn")
    converted.compile("sgd", "mse")
    converted.fit(x, np.zeros((2, 2), "float32"), verbose=0)
    folded = keras_wc.fold(converted)
    folded.compile("sgd", "mse")
    folded.fit(x, np.ones((2, 2), "float32"), verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    converted.predict(x, verbose=0)
    for copy, original in ((converted, model), (folded, converted)):
        for a, b in zip(copy.weights, original.weights, strict=False):
            assert a.value is not b.value


@pytest.mark.parametrize("method", ["wc", "wn"])
@pytest.mark.parametrize("where", ["shared", "time_distributed"])
def test_weight_decay_counts_once_per_model_call_as_in_keras(method, where):
    regularizer = keras.regularizers.L2(0.1)
    inputs = keras.Input((3, 5))
    dense = keras.layers.Dense(5, kernel_regularizer=regularizer)
    if where == "shared":  # called twice
        outputs = dense(dense(inputs))
    else:  # called at each of 3 time steps
        outputs = keras.layers.TimeDistributed(dense)(inputs)
    plain = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).random((2, 3, 5)).astype("float32")
    plain(x)
    converted = keras_wc.convert(plain, method)
    converted(x)
    assert len(converted.losses) == len(plain.losses) == 1
    np.testing.assert_allclose(
        float(converted.losses[0]), float(plain.losses[0]), rtol=1e-5
    )


@pytest.mark.parametrize("layer", [object(), keras.layers.Flatten()])
def test_the_wrapper_raises_what_tfa_raised(layer):
    for error in (TypeError, ValueError):
        with pytest.raises(error, match="layer"):
            keras_wc.WeightNormalization(layer)
