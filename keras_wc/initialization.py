"""Data-dependent initialization of weight-normalized layers.

Reference: Salimans & Kingma, "Weight Normalization", NeurIPS 2016, §3;
openai/weightnorm `tensorflow/nn.py` (the formulas) and `lasagne/train.py`
(one init pass on the first 500 training examples before training).
"""

import keras
import numpy as np
import tensorflow as tf

from keras_wc.layers.weight_norm import init_pass


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
    shared layer is initialized on its first call.

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
        ValueError: if `data` is empty, has fewer than 2 samples, or does
            not match the model's input shape; if `num_samples < 1`.
        TypeError: if `data` or `num_samples` has an unsupported type.
        RuntimeError: if called inside a `tf.function` or in a
            `tf.distribute` replica context.

    If the pass fails, every variable it assigned is restored.

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
    if not tf.executing_eagerly():
        raise RuntimeError(
            "`keras_wc.initialize` must run eagerly, not inside a "
            "`tf.function`."
        )
    if (
        tf.distribute.has_strategy()
        and not tf.distribute.in_cross_replica_context()
    ):
        raise RuntimeError(
            "`keras_wc.initialize` must be called in the cross-replica "
            "context (outside `strategy.run`), so that the statistics are "
            "those of the global batch and every replica is assigned."
        )
    x = _init_batch(data, num_samples)
    _check_input_shape(model, x)
    with init_pass() as state:
        model(x, training=False)
    return [layer.name for layer in state.layers]


def _is_batch(data):
    return isinstance(data, (np.ndarray, dict, list)) or tf.is_tensor(data)


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
    count = min(len(leaf) for leaf in leaves)
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


def _check_input_shape(model, x):
    """Compares a single-input batch with a built model's input shape."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return
    if not isinstance(x, np.ndarray) or not inputs or len(inputs) != 1:
        return
    expected = tuple(inputs[0].shape)
    received = x.shape
    if len(received) != len(expected) or any(
        e is not None and e != r
        for e, r in zip(expected[1:], received[1:], strict=True)
    ):
        raise ValueError(
            f"The init batch does not match the input shape {expected} of "
            f"model '{model.name}'. Received: x with shape {received}"
        )
