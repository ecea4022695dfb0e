"""Data-dependent initialization of weight-normalized layers.

Reference: Salimans & Kingma, "Weight Normalization", NeurIPS 2016, §3;
openai/weightnorm `tensorflow/nn.py` (the formulas) and `lasagne/train.py`
(one init pass on the first 500 training examples before training).
"""

import contextlib
import inspect

import keras
import numpy as np
from keras import ops

from keras_wc import backend, tree
from keras_wc.layers.wn_base import WeightNormMixin, init_pass


def initialize(model, data, *, num_samples=None):
    """Initializes every not-yet-initialized WN layer of `model` from data.

    One eager forward pass `model(x, training=False)` on the init batch `x`.
    Each WN layer whose persisted `initialized` flag is not set initializes
    itself on its first call, from its actual inputs: per output unit,
    `t = x·v/‖v‖` (pre-activation, normalized direction, without bias),
    `g = init_scale/√(var(t) + ε)`, `b = −mean(t)·g`, then it sets its
    flag and returns its output with the new parameters. Every layer thus
    sees the already-initialized outputs of the layers before it, and after
    the pass each initialized layer's pre-activations on the init batch have
    mean 0 and standard deviation `init_scale` per unit. This works for
    Sequential, Functional, nested, shared and subclassed models alike; a
    shared layer is initialized on its first call. A WN layer inside
    `TimeDistributed` is initialized on all time steps of the init batch
    (the pass folds the time axis into the batch axis there; a
    `MeanOnlyBatchNorm` inside the same `TimeDistributed` then uses the
    mean over all time steps too). The init batch needs at least 2 samples
    (a variance over one sample is 0).

    Initialization happens once: layers whose flag is set (initialized
    before, or loaded from a saved initialized model) are left alone, so a
    second call is a no-op, and the flag is saved with the model. It runs
    for every WN layer whatever its `data_init` (which only decides whether
    training an uninitialized layer is an error). `MeanOnlyBatchNorm`
    layers use the batch mean during the pass and keep their moving mean.
    Dropout and noise layers are inactive (`training=False`).

    Under a `tf.distribute` strategy, call it eagerly outside
    `strategy.run` (the cross-replica context, e.g. inside
    `strategy.scope()`): the statistics are those of the whole (global)
    batch and the new values are assigned to every replica.

    Args:
        model: a Keras model (or layer) containing WN layers.
        data: the init data: an array or tensor (or a dict/list of them for
            a multi-input model) holding a batch of inputs; a tuple
            `(x, y[, sample_weight])` of which `x` is used; or a
            `tf.data.Dataset`, generator or other iterable of such batches.
        num_samples: how many samples to use, at most (default: the whole
            array, or the first batch of a dataset/iterable). Batches are
            concatenated until `num_samples` samples are reached.

    Returns:
        The names of the layers initialized by this call, in call order.

    Raises:
        ValueError: if `data` is empty, has fewer than 2 samples, holds NaN
            or infinite values, or does not match the model's inputs (their
            number, names or shapes); if `num_samples < 1`; if the pass
            gives a non-finite statistic, gain or bias (e.g. values so large
            that the variance overflows float32), or non-finite outputs.
        TypeError: if `data` or `num_samples` has an unsupported type, or
            `data` is not numeric (strings, objects, complex numbers).
        RuntimeError: if called inside a `tf.function` or in a
            `tf.distribute` replica context.

    The init batch is checked before the pass, and the pass is atomic: if
    it fails or gives a non-finite value, every variable it assigned
    (gains, biases, `initialized` flags) is restored, so a bad batch never
    marks a layer initialized and a later call with good data still
    initializes it.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras_wc.WNDense(32, activation="relu", name="hidden"),
    ...     keras_wc.WNDense(10, name="logits"),
    ... ])
    >>> x = np.random.rand(256, 8).astype("float32")
    >>> keras_wc.initialize(model, x, num_samples=128)
    ['hidden', 'logits']
    >>> keras_wc.initialize(model, x)  # already initialized: a no-op
    []
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"`model` must be a Keras model or layer. Received: model={model!r}"
        )
    if num_samples is not None:
        if isinstance(num_samples, bool) or not isinstance(
            num_samples, (int, np.integer)
        ):
            raise TypeError(
                "`num_samples` must be a positive int or None. "
                f"Received: num_samples={num_samples!r}"
            )
        if num_samples < 1:
            raise ValueError(
                "`num_samples` must be >= 1. "
                f"Received: num_samples={num_samples}"
            )
    backend.check_cross_replica_context("initialize")
    detached = backend.detached_variables(model)
    if detached:
        raise RuntimeError(
            f"`keras_wc.initialize`: {len(detached)} variable(s) of model "
            f"'{model.name}' hold no value (e.g. '{detached[0]}')."
            + backend.JAX_FIT_NOTE
        )
    x = _init_batch(data, num_samples)
    _check_values(x)
    _check_inputs(model, x)
    with init_pass() as state, _time_steps_as_samples(model):
        outputs = model(x, training=False)
        # Raising here makes `init_pass` restore every assigned variable.
        _check_pass(model, state.layers, outputs, x)
    if state.layers:
        # A function traced before the init (whose trace may have stopped
        # at the "not initialized" error) must not be reused.
        tree.drop_traced_functions(model)
    return [layer.name for layer in state.layers]


@contextlib.contextmanager
def _time_steps_as_samples(model):
    """During the init pass, each `TimeDistributed` layer holding an
    uninitialized WN layer calls its layer once on all time steps, the time
    axis folded into the batch: `TimeDistributed` calls its layer on one
    time step after the other, which would initialize it on the first
    step's statistics alone. Its output is the same (the layer computes
    each sample on its own), and the statistics are those of every time
    step of every sample of the init batch."""
    wrappers = [
        node.layer
        for node in tree.walk(model)
        if isinstance(node.layer, keras.layers.TimeDistributed)
        and _holds_uninitialized(node.layer.layer)
    ]
    for wrapper in wrappers:
        object.__setattr__(wrapper, "call", _folded_call(wrapper))
    try:
        yield
    finally:
        for wrapper in wrappers:
            object.__delattr__(wrapper, "call")


def _holds_uninitialized(layer):
    layers = [layer] + [node.layer for node in tree.walk(layer)]
    return any(
        isinstance(x, WeightNormMixin) and not x.is_initialized()
        for x in layers
    )


def _folded_call(wrapper):
    """`wrapper.call` (a `TimeDistributed`) with the time axis folded into
    the batch axis."""
    layer = wrapper.layer
    takes = inspect.signature(layer.call).parameters

    def call(inputs, training=None, mask=None):
        def fold(t):
            return ops.reshape(t, (-1, *t.shape[2:]))

        kwargs = {}
        if "training" in takes:
            kwargs["training"] = training
        if "mask" in takes and mask is not None:
            kwargs["mask"] = fold(mask)
        outputs = layer.call(fold(inputs), **kwargs)
        return ops.reshape(outputs, (*inputs.shape[:2], *outputs.shape[1:]))

    return call


def _is_batch(data):
    return isinstance(data, (np.ndarray, dict, list)) or ops.is_tensor(data)


def _init_batch(data, num_samples):
    """The init batch `x` (numpy leaves), truncated to `num_samples`."""
    if isinstance(data, tuple):
        if not data:
            raise ValueError("`data` is empty. Received: data=()")
        data = data[0]
    if _is_batch(data):
        x = keras.tree.map_structure(np.asarray, data)
    elif isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(
            "`data` must be an array or tensor, a tuple (x, y), a "
            "tf.data.Dataset or an iterable of batches. "
            f"Received: data of type {type(data).__name__}"
        )
    else:
        x = _collect(data, num_samples)
    leaves = keras.tree.flatten(x)
    if not leaves or not all(np.ndim(leaf) >= 1 for leaf in leaves):
        raise ValueError(
            "`data` must hold a batch of samples (arrays with a batch "
            f"axis). Received: data={data!r:.200}"
        )
    lengths = sorted({len(leaf) for leaf in leaves})
    if len(lengths) > 1:
        raise ValueError(
            "The arrays of `data` must hold the same number of samples. "
            f"Received: data with batch sizes {lengths}"
        )
    count = lengths[0]
    if num_samples is not None:
        count = min(count, num_samples)
    if count < 2:
        raise ValueError(
            "The init batch must hold at least 2 samples to estimate "
            f"per-unit statistics. Received: {count} sample(s)."
        )
    return keras.tree.map_structure(lambda leaf: leaf[:count], x)


def _collect(batches, num_samples):
    collected = []
    count = 0
    for element in batches:
        x = element[0] if isinstance(element, tuple) else element
        x = keras.tree.map_structure(np.asarray, x)
        collected.append(x)
        count += min(len(leaf) for leaf in keras.tree.flatten(x))
        if num_samples is None or count >= num_samples:
            break
    if not collected:
        raise ValueError(
            "`data` is empty: the dataset or iterable yielded no batch."
        )
    return keras.tree.map_structure(
        lambda *leaves: np.concatenate(leaves), *collected
    )


def _describe(path, leaf):
    where = f" at {path}" if path else ""
    return f"data{where} (shape {leaf.shape}, dtype {leaf.dtype})"


def _leaves_with_paths(x):
    if isinstance(x, np.ndarray):
        return [("", x)]
    return [
        ("".join(f"[{key!r}]" for key in path), leaf)
        for path, leaf in keras.tree.flatten_with_path(x)
    ]


def _check_values(x):
    """Every array of the init batch is real-valued and finite."""
    for path, leaf in _leaves_with_paths(x):
        if leaf.dtype.kind not in "biuf":
            raise TypeError(
                "`data` must hold real numbers (bool, int or float arrays). "
                f"Received: {_describe(path, leaf)}"
            )
        if leaf.dtype.kind == "f" and not np.all(np.isfinite(leaf)):
            nan = int(np.count_nonzero(np.isnan(leaf)))
            inf = int(np.count_nonzero(np.isinf(leaf)))
            raise ValueError(
                "`data` must be finite: the init batch holds "
                f"{nan} NaN and {inf} infinite value(s). Received: "
                f"{_describe(path, leaf)}"
            )


def _model_inputs(model):
    """(the structure of a built model's inputs, their flat list), or
    (None, None) for an unbuilt or subclassed model."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None, None
    if not inputs:
        return None, None
    try:
        structure = model.input
    except (AttributeError, ValueError):  # a Sequential model not yet called
        structure = None
    return structure, list(inputs)


def _check_inputs(model, x):
    """Compares the init batch with a built model's inputs: their number,
    their names (a dict) and their shapes."""
    structure, inputs = _model_inputs(model)
    if inputs is None:
        return
    if isinstance(x, dict):
        if isinstance(structure, dict):
            by_name = dict(structure)
        else:
            by_name = {tensor.name: tensor for tensor in inputs}
        if sorted(x) != sorted(by_name):
            raise ValueError(
                f"`data` must have the input names {sorted(by_name)} of "
                f"model '{model.name}'. Received: data with keys {sorted(x)}"
            )
        pairs = [(f"[{key!r}]", x[key], by_name[key]) for key in sorted(x)]
    else:
        received = _leaves_with_paths(x)
        if len(received) != len(inputs):
            raise ValueError(
                f"`data` must hold {len(inputs)} input array(s) for model "
                f"'{model.name}'. Received: {len(received)} array(s)"
            )
        pairs = [
            (path, leaf, tensor)
            for (path, leaf), tensor in zip(received, inputs, strict=True)
        ]
    for path, leaf, tensor in pairs:
        expected = tuple(tensor.shape)
        if leaf.ndim != len(expected) or any(
            e is not None and e != r
            for e, r in zip(expected[1:], leaf.shape[1:], strict=True)
        ):
            raise ValueError(
                f"The init batch does not match the input shape {expected} "
                f"of model '{model.name}'. Received: "
                f"{_describe(path, leaf)}"
            )


def _non_finite(value):
    value = np.asarray(keras.ops.convert_to_numpy(value))
    return value.dtype.kind == "f" and not np.all(np.isfinite(value))


def _check_pass(model, layers, outputs, x):
    """Raises if the pass gave a layer a non-finite statistic, gain or bias,
    or the model non-finite outputs."""
    largest = max(
        float(np.max(np.abs(leaf), initial=0)) for leaf in keras.tree.flatten(x)
    )
    received = f"Received: data with max |value| {largest:.3g}"
    for layer in layers:
        gains = layer.raw_gains
        name = "pointwise_kernel" if "pointwise_kernel" in gains else "kernel"
        # g = init_scale/√(var(t) + ε) is 0 (log g = -inf) exactly when
        # var(t) overflowed float32.
        gain = np.asarray(keras.ops.convert_to_numpy(layer.gain(name)))
        bias = layer.bias
        if (
            _non_finite(gain)
            or np.any(gain == 0)
            or (bias is not None and _non_finite(bias))
        ):
            raise ValueError(
                "`data` gives a non-finite pre-activation mean or variance "
                f"in layer '{layer.name}' (values too large for float32?), "
                "so nothing was initialized: scale the inputs, or check the "
                f"layers before '{layer.name}'. {received}"
            )
    for output in keras.tree.flatten(outputs):
        if _non_finite(output):
            raise ValueError(
                "`data` gives non-finite outputs of model "
                f"'{model.name}', so nothing was initialized: check the "
                f"data and the layers. {received}"
            )
