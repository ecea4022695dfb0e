"""The mechanism's call path: the penalty is an explicit step of the call
(`_compute_kernels`), and the kernel properties only read."""

import keras
import numpy as np
import pytest

import keras_wc


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


class _ReadingWCDense(keras_wc.WCDense):
    """Reads its kernel inside its call and records what the reads saw."""

    def call(self, inputs, training=None):
        self.seen = _read_in_call(self)
        return super().call(inputs)


class _ReadingWNDense(keras_wc.WNDense):
    def call(self, inputs, training=None):
        self.seen = _read_in_call(self)
        return super().call(inputs)


def _read_in_call(layer):
    """(the kernels and penalties of the call before the reads, after
    them, whether every read returned the kernel the call computed)."""
    scope = layer._scope
    before = (dict(scope.kernels), dict(scope.penalties))
    reads = [layer.kernel for _ in range(3)]
    after = (dict(scope.kernels), dict(scope.penalties))
    same = all(read is scope.kernels["kernel"] for read in reads)
    return before, after, same


LAYERS = {
    "wc": lambda r: _ReadingWCDense(4, a=1.2, b=0.7, kernel_regularizer=r),
    "wc-lora": lambda r: _ReadingWCDense(4, kernel_regularizer=r, lora_rank=2),
    "wn": lambda r: _ReadingWNDense(4, data_init=False, kernel_regularizer=r),
}


def _state(layer):
    """Everything a read could write: the layer's attributes (by
    identity), its losses and its variables' values."""
    return (
        {k: id(v) for k, v in layer.__dict__.items()},
        len(layer.losses),
        [np.array(keras.ops.convert_to_numpy(v)) for v in layer.variables],
    )


def _assert_same_state(before, after):
    assert before[0] == after[0]
    assert before[1] == after[1]
    for old, new in zip(before[2], after[2], strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_reading_the_kernel_outside_a_call_adds_no_loss_and_writes_nothing(
    case,
):
    layer = LAYERS[case](keras.regularizers.L2(0.1))
    x = _x((3, 5))
    layer(x)
    assert layer._scope is None
    before = _state(layer)
    kernels = [layer.kernel for _ in range(2)]
    layer.effective_kernels()
    _assert_same_state(before, _state(layer))
    # Each read computes the effective kernel anew: nothing is kept.
    assert kernels[0] is not kernels[1]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(kernels[0]),
        keras.ops.convert_to_numpy(kernels[1]),
    )


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_reads_inside_a_call_return_the_kernel_the_call_computed(case):
    layer = LAYERS[case](keras.regularizers.L2(0.1))
    layer(_x((3, 5)))
    before, after, same = layer.seen
    # The call computed the kernel and its penalty before any read; the
    # reads changed neither.
    assert set(before[0]) == {"kernel"} and set(before[1]) == {"kernel"}
    assert before[0].keys() == after[0].keys()
    assert all(before[0][k] is after[0][k] for k in before[0])
    assert all(before[1][k] is after[1][k] for k in before[1])
    assert same


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_the_penalty_is_added_once_per_model_call(case):
    layer = LAYERS[case](keras.regularizers.L2(0.1))
    inputs = keras.Input((5,))
    # Shared: called twice in one model call.
    outputs = keras.layers.Add()([layer(inputs), layer(inputs)])
    model = keras.Model(inputs, outputs)
    x = _x((3, 5))
    # With LoRA, Keras also regularizes the two adapters (as on the parent).
    count = 3 if case == "wc-lora" else 1
    for _ in range(2):
        model(x)
        assert len(model.losses) == count
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), "float64")
    if case == "wc-lora":
        kernel = kernel - np.asarray(
            keras.ops.convert_to_numpy(layer._lora_delta()), "float64"
        )
    losses = [float(keras.ops.convert_to_numpy(x)) for x in model.losses]
    assert np.isclose(losses, 0.1 * np.sum(kernel**2), rtol=1e-5).sum() == 1
