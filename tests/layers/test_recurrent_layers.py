"""WC/PP/WN recurrent layers and cells: harness, numerics against numpy,
the kernels computed once per call, weight decay, in place conversion."""

import keras
import numpy as np
import pytest
from backend_utils import BACKEND
from layer_harness import randomize_variables, run_layer_test

import keras_wc
from keras_wc.layers import wc_layers, wn_layers

L = keras.layers
# (keras_wc class, plain class, number of gates)
RNNS = [
    (wc_layers.WCLSTM, L.LSTM, 4),
    (wc_layers.WCGRU, L.GRU, 3),
    (wc_layers.WCSimpleRNN, L.SimpleRNN, 1),
    (wn_layers.WNLSTM, L.LSTM, 4),
    (wn_layers.WNGRU, L.GRU, 3),
    (wn_layers.WNSimpleRNN, L.SimpleRNN, 1),
]
IDS = [case[0].__name__ for case in RNNS]
WC_OPTIONS = {"a": 1.0, "b": 0.6}


def _options(cls):
    return WC_OPTIONS if cls.__name__.startswith("WC") else {}


def _x(shape=(3, 5, 4), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("f4")


@pytest.mark.parametrize("cls, plain, gates", RNNS, ids=IDS)
def test_layer_harness(cls, plain, gates):
    wn_layer = cls.__name__.startswith("WN")
    run_layer_test(
        cls,
        {"units": 3, **_options(cls)},
        (2, 4, 2),
        (2, 3),
        # v, recurrent_v, bias (+ g, recurrent_g for WN)
        expected_num_trainable_weights=5 if wn_layer else 3,
    )


@pytest.mark.parametrize(
    "cls", [wc_layers.WCLSTM, wc_layers.WCGRU], ids=["LSTM", "GRU"]
)
def test_layer_harness_learnable(cls):
    run_layer_test(
        cls,
        {"units": 3, "a": 0.9, "b": 1.0, "learnable": "fine"},
        (2, 4, 2),
        (2, 3),
        expected_num_trainable_weights=5,
        run_distributed=False,
    )


def _numpy_effective(layer, name):
    cell = layer.cell
    v = np.asarray(cell.raw_kernels[name], "float64")
    if cell.__class__.__name__.startswith("WC"):
        return cell.initial_a * np.arctan(v / cell.initial_b)
    # One norm per column: per output unit of each gate.
    return np.asarray(cell.gain(name)) * v / np.linalg.norm(v, axis=0)


@pytest.mark.parametrize("cls, plain, gates", RNNS, ids=IDS)
def test_kernels_and_outputs_match_numpy_and_the_plain_layer(cls, plain, gates):
    x = _x()
    layer = cls(3, return_sequences=True, **_options(cls))
    layer(x)
    randomize_variables(layer, seed=1)
    twin = plain(3, return_sequences=True)
    twin(x)
    for name in ("kernel", "recurrent_kernel"):
        expected = _numpy_effective(layer, name)
        assert expected.shape[-1] == gates * 3
        np.testing.assert_allclose(
            np.asarray(getattr(layer.cell, name)),
            expected,
            rtol=2e-6,
            atol=1e-7,
        )
    twin.set_weights(
        [
            np.asarray(getattr(layer.cell, n))
            for n in ("kernel", "recurrent_kernel")
        ]
        + [np.asarray(layer.cell.bias)]
    )
    np.testing.assert_allclose(layer(x), twin(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", [1, 2])
def test_kernels_are_computed_once_per_call(implementation, monkeypatch):
    layer = wc_layers.WCLSTM(3, implementation=implementation, a=1.0)
    x = _x((2, 7, 4))
    layer(x)
    calls = []
    original = type(layer.cell)._effective_kernel

    def counting(self, name):
        calls.append(name)
        return original(self, name)

    monkeypatch.setattr(type(layer.cell), "_effective_kernel", counting)
    layer(x)
    # 7 time steps, up to 4 reads per step: still one evaluation each.
    assert sorted(calls) == ["kernel", "recurrent_kernel"]


def test_weight_decay_of_a_cell_acts_on_the_effective_kernels():
    reg = keras.regularizers.L2(0.01)
    layer = wc_layers.WCLSTM(
        3, a=1.0, b=0.6, kernel_regularizer=reg, recurrent_regularizer=reg
    )
    layer(_x())
    randomize_variables(layer, seed=2)
    expected = sum(
        0.01 * np.sum(np.square(_numpy_effective(layer, name)))
        for name in ("kernel", "recurrent_kernel")
    )
    # Once per step, however many time steps.
    np.testing.assert_allclose(float(sum(layer.losses)), expected, rtol=1e-5)


def test_a_generic_rnn_with_a_keras_wc_cell():
    x = _x()
    cell = wc_layers.WCGRUCell(3, a=1.0, b=0.6)
    model = keras.Sequential([keras.Input((5, 4)), L.RNN(cell)])
    y = model(x)
    twin = L.RNN(L.GRUCell(3))
    twin(x)
    twin.set_weights(
        [
            np.asarray(cell.kernel),
            np.asarray(cell.recurrent_kernel),
            np.asarray(cell.bias),
        ]
    )
    np.testing.assert_allclose(y, twin(x), rtol=1e-5, atol=1e-6)


def test_wn_recurrent_layers_have_no_data_init():
    assert wn_layers.WNLSTM(3).get_config()["data_init"] is False
    with pytest.raises(ValueError, match="recurrent layers have no data-"):
        wn_layers.WNGRU(3, data_init=True)
    model = keras.Sequential([keras.Input((5, 4)), wn_layers.WNLSTM(3)])
    assert keras_wc.initialize(model, _x()) == []
    model.compile("sgd", "mse")
    model.fit(_x(), np.zeros((3, 3)), verbose=0)


@pytest.mark.parametrize("cls, plain, gates", RNNS, ids=IDS)
def test_adopt_and_release_in_place(cls, plain, gates):
    x = _x()
    layer = plain(3)
    expected = np.asarray(layer(x))
    cls.adopt(layer, **_options(cls))
    assert type(layer) is cls and type(layer.cell) is cls.CELL_CLASS
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)
    fresh = cls.from_config(layer.get_config())
    fresh(x)
    assert [v.name for v in layer.weights] == [v.name for v in fresh.weights]
    layer.release()
    assert type(layer) is plain and type(layer.cell) is type(plain(1).cell)
    assert [v.name for v in layer.weights] == [
        "kernel",
        "recurrent_kernel",
        "bias",
    ]
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)


# ConvLSTM1D/2D/3D: the cell's kernels (*kernel_size, channels, 4·filters)
# and recurrent kernels (*kernel_size, filters, 4·filters), one output unit
# of one gate per last-axis entry; WN's norm is over every other axis.
CONV_LSTMS = [
    (L.ConvLSTM1D, (2, 3, 6, 2)),
    (L.ConvLSTM2D, (2, 3, 5, 5, 2)),
    (L.ConvLSTM3D, (2, 2, 4, 4, 4, 2)),
]
CONV_LSTM_CASES = [
    (module.CLASSES[prefix + plain.__name__], plain, shape)
    for module, prefix in ((wc_layers, "WC"), (wn_layers, "WN"))
    for plain, shape in CONV_LSTMS
]


def _numpy_conv_effective(cell, name):
    v = np.asarray(cell.raw_kernels[name], "float64")
    if type(cell).__name__.startswith("WC"):
        return cell.initial_a * np.arctan(v / cell.initial_b)
    axes = tuple(range(v.ndim - 1))
    norm = np.sqrt(np.sum(np.square(v), axis=axes, keepdims=True))
    return np.asarray(cell.gain(name)) * v / norm


@pytest.mark.parametrize(
    "cls, plain, shape",
    CONV_LSTM_CASES,
    ids=[case[0].__name__ for case in CONV_LSTM_CASES],
)
def test_conv_lstm_kernels_and_outputs_match_numpy_and_the_plain_layer(
    cls, plain, shape
):
    x = _x(shape)
    layer = cls(3, 2, return_sequences=True, **_options(cls))
    layer(x)
    randomize_variables(layer, seed=3)
    assert [v.name for v in layer.trainable_weights][:2] == (
        ["v", "recurrent_v"] if cls.__name__.startswith("WC") else ["v", "g"]
    )
    for name in ("kernel", "recurrent_kernel"):
        expected = _numpy_conv_effective(layer.cell, name)
        assert expected.shape[-1] == 4 * 3
        np.testing.assert_allclose(
            np.asarray(getattr(layer.cell, name)),
            expected,
            rtol=2e-6,
            atol=1e-7,
        )
    twin = plain(3, 2, return_sequences=True)
    twin(x)
    twin.set_weights(
        [
            np.asarray(getattr(layer.cell, n))
            for n in ("kernel", "recurrent_kernel")
        ]
        + [np.asarray(layer.cell.bias)]
    )
    np.testing.assert_allclose(layer(x), twin(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "cls", [wc_layers.WCConvLSTM2D, wn_layers.WNConvLSTM2D]
)
def test_conv_lstm_layer_harness(cls):
    run_layer_test(
        cls,
        {"filters": 2, "kernel_size": 2, **_options(cls)},
        (2, 3, 4, 4, 2),
        (2, 3, 3, 2),
        # v, recurrent_v, bias (+ g, recurrent_g for WN)
        expected_num_trainable_weights=(
            5 if cls is wn_layers.WNConvLSTM2D else 3
        ),
    )


@pytest.mark.parametrize("method", ["wc", "wn"])
def test_convert_reaches_both_kernels_of_a_conv_lstm_and_fold_restores_it(
    method,
):
    x = _x((2, 3, 6, 2))
    model = keras.Sequential(
        [keras.Input((3, 6, 2)), L.ConvLSTM1D(3, 2), L.Dense(2)]
    )
    expected = np.asarray(model(x))
    options = {"a": 1.0, "b": 0.6} if method == "wc" else {}
    model, report = keras_wc.convert(
        model, method=method, return_report=True, **options
    )
    layer = model.layers[0]
    assert type(layer).__name__ == method.upper() + "ConvLSTM1D"
    assert sorted(layer.cell.raw_kernels) == ["kernel", "recurrent_kernel"]
    assert report.converted_kernels == 3
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)
    folded = keras_wc.fold(model)
    assert type(folded.layers[0]) is L.ConvLSTM1D
    np.testing.assert_allclose(folded(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(
    BACKEND == "tensorflow",
    reason="TensorFlow has no channels_first convolution on every CPU",
)
@pytest.mark.parametrize(
    "module, prefix", [(wc_layers, "WC"), (wn_layers, "WN")]
)
def test_conv_lstm_channels_first_matches_the_plain_layer(module, prefix):
    x = _x((2, 3, 2, 5, 5))  # (batch, time, channels, rows, columns)
    cls = module.CLASSES[prefix + "ConvLSTM2D"]
    options = _options(cls)
    layer = cls(3, 2, data_format="channels_first", **options)
    layer(x)
    randomize_variables(layer, seed=4)
    twin = L.ConvLSTM2D(3, 2, data_format="channels_first")
    twin(x)
    twin.set_weights(
        [
            np.asarray(getattr(layer.cell, n))
            for n in ("kernel", "recurrent_kernel")
        ]
        + [np.asarray(layer.cell.bias)]
    )
    assert tuple(layer(x).shape) == (2, 3, 4, 4)
    np.testing.assert_allclose(layer(x), twin(x), rtol=1e-5, atol=1e-5)
