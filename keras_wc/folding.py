"""`fold`: turn a reparameterized model into plain Keras layers.

The inverse of `keras_wc.convert` for inference, in the spirit of PyTorch's
`remove_parametrizations(leave_parametrized=True)` and TF-MOT's
`strip_pruning`: every keras_wc layer becomes a built-in Keras layer holding
the weights it computes, so the result loads, serves and runs at the cost of
the plain model, without keras_wc.
"""

import json

import keras
import numpy as np
from keras import ops

from keras_wc.conversion import (
    SUPPORTED_LAYERS,
    Cloner,
    check_graph_model,
    is_graph_model,
    leaf_layers,
)
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from keras_wc.layers.reparameterized import KERNEL_NAMES, ReparameterizedLayer

# The batch-norm stand-in for a mean-only batch norm that cannot be folded
# into a bias: with moving variance 1 and this epsilon, rsqrt(1 + ε) is
# exactly 1 in float32, so it computes x − moving_mean + beta.
_EPSILON = 1e-12
# Kernel layers whose bias is one value per channel on a single axis.
_BIAS_PER_CHANNEL = tuple(
    cls for cls in SUPPORTED_LAYERS if cls is not keras.layers.EinsumDense
)


def fold(model):
    """Returns a copy of `model` made of built-in Keras layers only.

    * Each WC, PP or WN layer becomes its Keras parent (`WCConv2D` becomes
      `Conv2D`, ...), built from its config without the keras_wc arguments,
      with `kernel = Ψ(v)` (or `g·v/‖v‖`) evaluated once.
    * Each `MeanOnlyBatchNorm` is folded into the bias of the layer feeding
      it, `bias ← bias − moving_mean + beta`, when that is exact: the
      producer is a Dense or convolution layer without activation, called
      once, whose output goes only to this batch norm, normalized along the
      producer's channel axis (a bias is added if the producer had none).
      The batch norm then disappears from the graph. Otherwise it becomes a
      `keras.layers.BatchNormalization` with `scale=False`, moving variance 1
      and `epsilon=1e-12`, which computes `x − moving_mean + beta` in float32.
    * Every other layer is copied with its weights.

    The result computes the inference function of `model` (outputs equal up to
    float32 round-off) at the cost of the equivalent plain model, and loads
    with `keras.saving.load_model` where keras_wc is not installed. It is
    meant for inference: a batch-norm stand-in normalizes by the batch
    variance in training mode. The input model is not modified.

    Args:
        model: a built `keras.Sequential` or Functional `keras.Model`
            (nested models, shared layers and several inputs or outputs are
            supported).

    Returns:
        The folded, uncompiled model.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: the model is subclassed or unbuilt, or keras_wc layers sit
            inside a custom layer that `fold` cannot rebuild.

    Example:

    >>> model = keras_wc.convert(plain_model, method="wc")  # doctest: +SKIP
    >>> model.fit(x, y)  # doctest: +SKIP
    >>> folded = keras_wc.fold(model)  # doctest: +SKIP
    >>> folded.save("model.keras")  # loads with plain Keras  # doctest: +SKIP
    """
    check_graph_model(model, "fold")
    folds = _foldable_batch_norms(model)
    producers = {id(producer): mobn for mobn, producer in folds.values()}

    def make_layer(layer):
        if isinstance(layer, MeanOnlyBatchNorm):
            return _batch_norm_stand_in(layer)
        plain_class = _plain_class(layer)
        config = plain_class.get_config(layer)
        if id(layer) in producers:
            config["use_bias"] = True
        return plain_class.from_config(config)

    cloner = Cloner(make_layer, drop=folds.keys())
    folded = cloner.clone(model)
    for old, new in cloner.pairs:
        if isinstance(old, MeanOnlyBatchNorm):
            _fill_batch_norm_stand_in(old, new)
        elif isinstance(old, ReparameterizedLayer) or id(old) in producers:
            _fill_kernel_layer(old, new, producers.get(id(old)))
        else:
            new.set_weights(old.get_weights())
    _check_plain(folded)
    return folded


def _plain_class(layer):
    """The built-in class a layer folds to (its own class if not keras_wc)."""
    if not isinstance(layer, ReparameterizedLayer):
        return type(layer)
    for cls in type(layer).__mro__:
        if cls in SUPPORTED_LAYERS:
            return cls
    raise ValueError(
        f"keras_wc.fold: layer '{layer.name}' ({type(layer).__name__}) is "
        "reparameterized but derives from none of the Keras layers fold "
        f"knows: {', '.join(cls.__name__ for cls in SUPPORTED_LAYERS)}."
    )


def _kernel_values(layer):
    if isinstance(layer, ReparameterizedLayer):
        return layer.effective_kernels()
    return {
        name: getattr(layer, name)
        for name in KERNEL_NAMES
        if getattr(layer, name, None) is not None
    }


def _fill_kernel_layer(old, new, mobn):
    values = {
        name: ops.convert_to_numpy(value)
        for name, value in _kernel_values(old).items()
    }
    if getattr(old, "bias", None) is not None:
        values["bias"] = ops.convert_to_numpy(old.bias)
    if mobn is not None:
        bias = values.get("bias", 0.0) - ops.convert_to_numpy(mobn.moving_mean)
        if mobn.beta is not None:
            bias = bias + ops.convert_to_numpy(mobn.beta)
        values["bias"] = bias
    for variable in new.weights:
        variable.assign(np.asarray(values[variable.name], variable.dtype))


def _batch_norm_stand_in(mobn):
    return keras.layers.BatchNormalization(
        axis=mobn.axis,
        momentum=mobn.momentum,
        epsilon=_EPSILON,
        center=mobn.center,
        scale=False,
        name=mobn.name,
        dtype=mobn.dtype_policy,
        trainable=mobn.trainable,
    )


def _fill_batch_norm_stand_in(mobn, bn):
    bn.moving_mean.assign(mobn.moving_mean)
    bn.moving_variance.assign(ops.ones_like(bn.moving_variance))
    if mobn.beta is not None:
        bn.beta.assign(mobn.beta)


def _foldable_batch_norms(model):
    """Dict id(mobn) -> (mobn, producer) for the exact bias folds."""
    scan = _GraphScan()
    scan.visit(model)
    return {
        id(mobn): (mobn, producer)
        for mobn, producer, rank, uses in scan.candidates
        if uses == 1
        and scan.calls[id(mobn)] == 1
        and scan.calls[id(producer)] == 1
        and _bias_absorbs(producer, mobn, rank)
    }


class _GraphScan:
    """Counts layer calls over a model tree and finds MOBN candidates.

    `candidates` lists `(mobn, producer, rank, uses)`: a mean-only batch norm
    called on one tensor, the layer producing that tensor, the tensor's rank
    and how many times the tensor is used in its graph (outputs included).
    """

    def __init__(self):
        self.calls = {}
        self.candidates = []
        self._visited = set()

    def visit(self, model):
        if id(model) in self._visited:
            return
        self._visited.add(id(model))
        if isinstance(model, keras.Sequential):
            self._visit_sequential(model)
        else:
            self._visit_functional(model)

    def _count(self, layer, calls):
        self.calls[id(layer)] = self.calls.get(id(layer), 0) + calls
        if is_graph_model(layer):
            self.visit(layer)

    def _visit_sequential(self, model):
        previous = None
        for layer in model.layers:
            self._count(layer, 1)
            if isinstance(layer, MeanOnlyBatchNorm) and previous is not None:
                self.candidates.append((layer, previous, _rank(layer), 1))
            previous = layer

    def _visit_functional(self, model):
        # The Functional config is the public description of the graph: each
        # layer's calls ("inbound_nodes") name the tensors they consume as
        # [layer name, node index, tensor index].
        config = model.get_config()
        uses = {}
        for layer_config in config["layers"]:
            for node in layer_config["inbound_nodes"]:
                for ref in _tensor_refs(node):
                    uses[ref] = uses.get(ref, 0) + 1
        for ref in _output_refs(config["output_layers"]):
            uses[ref] = uses.get(ref, 0) + 1
        for layer_config in config["layers"]:
            layer = model.get_layer(layer_config["name"])
            nodes = layer_config["inbound_nodes"]
            self._count(layer, len(nodes))
            if isinstance(layer, MeanOnlyBatchNorm) and len(nodes) == 1:
                refs = _tensor_refs(nodes[0])
                if len(refs) == 1:
                    producer = model.get_layer(refs[0][0])
                    self.candidates.append(
                        (layer, producer, _rank(layer), uses[refs[0]])
                    )


def _rank(layer):
    return len(layer.get_build_config()["input_shape"])


def _tensor_refs(node):
    """The [layer, node, tensor] references in one serialized call."""
    refs = []

    def visit(item):
        if isinstance(item, dict):
            if item.get("class_name") == "__keras_tensor__":
                refs.append(tuple(item["config"]["keras_history"]))
            else:
                for value in item.values():
                    visit(value)
        elif isinstance(item, (list, tuple)):
            for value in item:
                visit(value)

    visit(node)
    return refs


def _output_refs(output_layers):
    if (
        isinstance(output_layers, list)
        and len(output_layers) == 3
        and isinstance(output_layers[0], str)
    ):
        return [tuple(output_layers)]
    items = (
        output_layers.values()
        if isinstance(output_layers, dict)
        else output_layers
    )
    return [ref for item in items for ref in _output_refs(item)]


def _bias_absorbs(producer, mobn, rank):
    """Whether `mobn` after `producer` is a per-channel shift of its bias."""
    kernel_layer = type(producer) in SUPPORTED_LAYERS or isinstance(
        producer, ReparameterizedLayer
    )
    if not (kernel_layer and isinstance(producer, _BIAS_PER_CHANNEL)):
        return False
    if producer.get_config().get("activation") != "linear":
        return False
    channels_first = getattr(producer, "data_format", None) == "channels_first"
    return mobn.axis % rank == (1 if channels_first else rank - 1)


def _check_plain(model):
    leftovers = [
        f"'{path}' ({type(layer).__name__})"
        for path, layer in leaf_layers(model)
        if _uses_keras_wc(layer)
    ]
    if leftovers:
        raise ValueError(
            "keras_wc.fold turns keras_wc layers into built-in layers when "
            "they sit in a Sequential or Functional model; these layers "
            f"hold keras_wc objects it cannot reach: {', '.join(leftovers)}. "
            "Build them from keras_wc layers directly in a Functional model."
        )


def _uses_keras_wc(layer):
    sublayers = layer._flatten_layers(include_self=True, recursive=True)
    return any(
        type(sublayer).__module__.split(".")[0] == "keras_wc"
        for sublayer in sublayers
    ) or "keras_wc" in json.dumps(keras.saving.serialize_keras_object(layer))
