"""A drop-in for tensorflow-addons' `WeightNormalization` wrapper."""

import keras

from keras_wc.layers import wn_layers
from keras_wc.layers.layer_types import SUPPORTED_LAYERS, layer_type_of


class WeightNormalizationError(TypeError, ValueError):
    """What `keras_wc.WeightNormalization` raises for a `layer` it cannot
    normalize: a `TypeError` (the type is wrong) that is also the
    `ValueError` tensorflow-addons raised there, so code catching either
    keeps working."""


def WeightNormalization(layer, data_init=True, **kwargs):  # noqa: N802
    """tfa's `WeightNormalization(layer, data_init=True)`, done by keras_wc.

    tensorflow-addons is end-of-life and does not import under Keras 3.
    Where its wrapper was used, `keras_wc.WeightNormalization` takes the same
    arguments and returns the weight-normalized form of `layer` (a
    `keras_wc.WNConv1D` for a `Conv1D`, ...) with the same config (and the
    same weights if `layer` is built), usable wherever the wrapper was:
    in Sequential and Functional models, subclassed models and layers.

    What differs from tfa, on purpose:

    * the data-dependent init runs once, eagerly, from
      `keras_wc.initialize(model, x)` before training (tfa ran it inside the
      first training call, which broke under `tf.function`, distribution
      and mixed precision, and used the statistics of the unnormalized `v`).
      With `data_init=True`, training the layer before `initialize` raises
      a `RuntimeError` that says so; with `data_init=False` it trains from
      its function-preserving default init (`g = ‖w₀‖`).
    * the layer is the WN layer itself, not a wrapper around the plain one:
      `layer.v`, `layer.g` and `layer.kernel` (the effective `g·v/‖v‖`) are
      its attributes, and `keras_wc.fold` turns it back into the plain
      layer for serving.

    Args:
        layer: a Keras `Dense`, `Conv1D/2D/3D`, `Conv1D/2D/3DTranspose`,
            `DepthwiseConv1D/2D`, `SeparableConv1D/2D` or `EinsumDense`
            (exactly these classes; for recurrent layers use
            `keras_wc.WNLSTM`, ... or `keras_wc.convert(model, "wn")`).
        data_init: whether the layer is meant to be initialized from data
            (`keras_wc.initialize`).
        **kwargs: base layer arguments overriding `layer`'s (`name`,
            `dtype`, `trainable`).

    Returns:
        The new WN layer (`layer` itself is not changed).

    Raises:
        WeightNormalizationError: `layer` is not a Keras layer, or not one
            of the classes above (a subclass of both `TypeError` and
            `ValueError`, which tfa raised there).
        TypeError: a bad `data_init` or an unknown argument.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((16, 1)),
    ...     keras_wc.WeightNormalization(
    ...         keras.layers.Conv1D(8, 3, activation="relu", name="conv"),
    ...         data_init=True,
    ...     ),
    ...     keras.layers.GlobalAveragePooling1D(),
    ...     keras_wc.WeightNormalization(keras.layers.Dense(2, name="logits")),
    ... ])
    >>> keras_wc.initialize(model, np.random.rand(32, 16, 1))  # once
    ['conv', 'logits']
    """
    if not isinstance(layer, keras.layers.Layer):
        raise WeightNormalizationError(
            "`layer` must be a Keras layer. Received: "
            f"layer={layer!r} of type {type(layer).__name__}"
        )
    supported = [c for c in SUPPORTED_LAYERS if not layer_type_of(c).recurrent]
    if type(layer) not in supported:
        raise WeightNormalizationError(
            "keras_wc.WeightNormalization supports the Keras layers "
            f"{', '.join(c.__name__ for c in supported)} (exactly these "
            "classes). Received: "
            f"layer '{layer.name}' of type {type(layer).__name__}"
        )
    if not isinstance(data_init, bool):
        raise TypeError(
            "`data_init` must be True or False. "
            f"Received: data_init={data_init!r}"
        )
    allowed = {"name", "dtype", "trainable"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"Unknown argument(s) {unknown} for keras_wc.WeightNormalization; "
            f"it takes `layer`, `data_init` and {sorted(allowed)}."
        )
    # Built as the WN class itself, so that it is what a model's own code
    # calling the wrapper rebuilds when it is loaded (a `.keras` file of the
    # model, folded or not, then loads).
    target = getattr(wn_layers, "WN" + type(layer).__name__)
    new = target.from_config(
        {**layer.get_config(), **kwargs, "data_init": data_init}
    )
    build_config = layer.get_build_config()
    if layer.built and build_config is not None:
        new.build_from_config(build_config)
        for variable in layer.weights:
            value = keras.ops.convert_to_numpy(variable)
            if variable.name in new.layer_type.kernels:
                new.assign_effective_kernel(variable.name, value)
            else:
                getattr(new, variable.name).assign(value)
    return new
