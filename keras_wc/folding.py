"""`fold`: turn a reparameterized model into plain Keras layers.

The inverse of `keras_wc.convert` for inference, in the spirit of PyTorch's
`remove_parametrizations(leave_parametrized=True)` and TF-MOT's
`strip_pruning`: every keras_wc layer becomes a built-in Keras layer holding
the weights it computes, so the result loads, serves and runs at the cost of
the plain model, without keras_wc.
"""

import keras
import numpy as np
from keras import ops

from keras_wc import inplace_saving, internals, rebuilding, tree
from keras_wc.layers.layer_types import (
    KERNEL_LAYERS,
    SUPPORTED_LAYERS,
    layer_type_of,
    plain_parent,
)
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from keras_wc.layers.recurrent import kernel_holder
from keras_wc.layers.reparameterized import (
    KERNEL_NAMES,
    ReparameterizedLayer,
)
from keras_wc.layers.wc_base import SharedCompander

# The batch-norm stand-in for a mean-only batch norm that cannot be folded
# into a bias: with moving variance 1 and this epsilon, rsqrt(1 + ε) is
# exactly 1 in float32, so it computes x − moving_mean + beta.
_EPSILON = 1e-12
# Kernel layers whose bias is one value per channel on a single axis.
_BIAS_PER_CHANNEL = tuple(
    cls
    for cls in KERNEL_LAYERS
    if cls is not keras.layers.EinsumDense and not layer_type_of(cls).recurrent
)


def fold(model, *, inplace=False):
    """Turns a reparameterized model into built-in Keras layers only.

    * Each WC, PP or WN layer, at any depth of the model's layer tree
      (`keras_wc.tree`), becomes its Keras parent (`WCConv2D` becomes
      `Conv2D`, `WCLSTM` becomes `LSTM`, ...) with `kernel = Ψ(v)` (or
      `g·v/‖v‖`) evaluated once.
    * Each `MeanOnlyBatchNorm` of a Sequential/Functional graph is folded
      into the bias of the layer feeding it, `bias ← bias − moving_mean +
      beta`, when that is exact: the producer is a Dense or convolution
      layer without activation, called once, whose output goes only to this
      batch norm, normalized along the producer's channel axis (a bias is
      added if the producer had none). The batch norm then disappears from
      the graph. Otherwise (and always with `inplace=True`) it becomes a
      `keras.layers.BatchNormalization` with `scale=False`, moving variance
      1 and `epsilon=1e-12`, which computes `x − moving_mean + beta` in
      float32.
    * Every other layer is kept (copied, by default) with its weights;
      Keras operations in a Functional graph are kept as they are.

    The result computes the inference function of `model` (outputs equal up
    to float32 round-off) at the cost of the equivalent plain model, and
    loads with `keras.saving.load_model` where keras_wc is not installed. It
    is meant for inference: a batch-norm stand-in normalizes by the batch
    variance in training mode.

    Args:
        model: a built Keras model of any kind (Sequential, Functional,
            subclassed, keras-hub backbones and tasks).
        inplace: change `model` itself (its class, `call` and everything
            holding it are kept) instead of a copy. A model that cannot be
            rebuilt from its config can only be folded in place.

    Returns:
        The folded model: `model` itself with `inplace=True`, else an
        uncompiled copy.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: the model is unbuilt, cannot be copied (without
            `inplace=True`), or holds subclasses of keras_wc layers, which
            `fold` cannot turn into built-in layers (checked before anything
            changes).

    Example:

    >>> model = keras_wc.convert(plain_model, method="wc")  # doctest: +SKIP
    >>> model.fit(x, y)  # doctest: +SKIP
    >>> folded = keras_wc.fold(model)  # doctest: +SKIP
    >>> folded.save("model.keras")  # loads with plain Keras  # doctest: +SKIP
    """
    tree.check_model(model, "fold")
    if not isinstance(inplace, bool):
        raise TypeError(
            f"`inplace` must be True or False. Received: inplace={inplace!r}"
        )
    _check_foldable(model)
    if inplace:
        return fold_in_place(model)
    if not tree.is_graph_model(model):
        return fold_in_place(rebuilding.copy_model(model))
    folds = _foldable_batch_norms(model)
    producers = {id(producer): mobn for mobn, producer in folds.values()}
    copy_layer = rebuilding.LayerCopier()

    def make_layer(layer):
        if isinstance(layer, MeanOnlyBatchNorm):
            return _batch_norm_stand_in(layer)
        if inplace_saving.is_reparameterized(layer) or id(layer) in producers:
            plain_class = _plain_class(layer)
            config = plain_class.get_config(layer)
            if id(layer) in producers:
                config["use_bias"] = True
            # LoRA adapters are merged into the folded kernel.
            config.pop("lora_rank", None)
            config.pop("lora_alpha", None)
            return plain_class.from_config(config)
        return fold_in_place(copy_layer(layer))

    cloner = rebuilding.Cloner(make_layer, drop=folds.keys())
    folded = cloner.clone(model)
    for old, new in cloner.pairs:
        if isinstance(old, MeanOnlyBatchNorm):
            _fill_batch_norm_stand_in(old, new)
        elif inplace_saving.is_reparameterized(old) or id(old) in producers:
            _fill_kernel_layer(old, new, producers.get(id(old)))
    return folded


def fold_in_place(layer):
    """Folds every keras_wc layer below `layer` (and `layer` itself), in
    place; see `fold`. Returns `layer`."""
    if inplace_saving.is_reparameterized(layer):
        layer.release()
    for node in inplace_saving.reparameterized_nodes(layer):
        node.layer.release()
    for node in list(tree.walk(layer)):
        if isinstance(node.layer, MeanOnlyBatchNorm):
            _to_batch_norm_in_place(node.layer)
    if isinstance(layer, MeanOnlyBatchNorm):
        _to_batch_norm_in_place(layer)
    # Nested models first: a model's record covers its nested ones.
    for node in reversed(list(tree.walk(layer))):
        inplace_saving.sync(node.layer)
    inplace_saving.sync(layer)
    tree.drop_traced_functions(layer)
    return layer


def _check_foldable(model):
    """Raises, before anything changes, for keras_wc objects `fold` cannot
    turn into built-in layers (subclasses of keras_wc layers)."""
    known = (MeanOnlyBatchNorm, SharedCompander)
    leftovers = [
        f"'{node.path}' ({type(node.layer).__name__})"
        for node in tree.walk(model)
        if _is_keras_wc(type(node.layer))
        and not (
            type(node.layer) in known
            or tree.is_recorded_model(node.layer)
            or (
                inplace_saving.is_reparameterized(node.layer)
                and type(node.layer).__module__.startswith("keras_wc.")
            )
        )
    ]
    if leftovers:
        raise ValueError(
            "keras_wc.fold turns keras_wc's own layers into built-in Keras "
            "layers; these layers derive from keras_wc classes it cannot "
            f"fold: {', '.join(leftovers)}."
        )


def _is_keras_wc(cls):
    return any(
        base.__module__.split(".")[0] == "keras_wc" for base in cls.__mro__
    )


def _plain_class(layer):
    """The built-in class a layer folds to (its own class if not keras_wc)."""
    if inplace_saving.is_reparameterized(layer):
        return plain_parent(type(layer))
    return type(layer)


def _kernel_values(layer):
    if isinstance(layer, ReparameterizedLayer):
        return layer.effective_kernels()
    return {
        name: getattr(layer, name)
        for name in KERNEL_NAMES
        if getattr(layer, name, None) is not None
    }


def _fill_kernel_layer(old, new, mobn):
    """Fills the plain layer `new` with the effective weights of `old`
    (a recurrent layer's are its cell's), shifting the bias by `mobn`."""
    holder = kernel_holder(old)
    values = {
        name: ops.convert_to_numpy(value)
        for name, value in _kernel_values(holder).items()
    }
    if getattr(holder, "bias", None) is not None:
        values["bias"] = ops.convert_to_numpy(holder.bias)
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
    rebuilding.assign_copy(bn.moving_mean, mobn.moving_mean)
    bn.moving_variance.assign(ops.ones(bn.moving_variance.shape))
    if mobn.beta is not None:
        rebuilding.assign_copy(bn.beta, mobn.beta)


def _to_batch_norm_in_place(mobn):
    """Turns a built `MeanOnlyBatchNorm` into its batch-norm stand-in, in
    place (same object, so every model and layer holding it sees it).

    Its `beta` and `moving_mean` variables stay (at the positions a
    `BatchNormalization` has them), a moving variance of ones is added
    after them, the stand-in's attributes are taken from a newly built
    stand-in and the mean-only batch norm's own attributes are removed.
    """
    stand_in = _batch_norm_stand_in(mobn)
    stand_in.build(tuple(mobn.get_build_config()["input_shape"]))
    own = internals.own_attribute_names(mobn)
    wanted = internals.own_attribute_names(stand_in)
    variables = ("gamma", "beta", "moving_mean", "moving_variance")
    internals.change_class(mobn, keras.layers.BatchNormalization)
    with internals.unlocked_tracking(mobn):
        moving_variance = mobn.add_weight(
            name="moving_variance",
            shape=tuple(stand_in.moving_variance.shape),
            initializer="ones",
            trainable=False,
            autocast=False,
        )
        for name in own - wanted:
            internals.delete_attribute(mobn, name)
        for name in wanted - set(variables):
            setattr(mobn, name, getattr(stand_in, name))
        mobn.gamma = None
        mobn.moving_variance = moving_variance


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
        if tree.is_graph_model(layer):
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
        config = tree.plain_class(model).get_config(model)
        uses = {}
        for layer_config in config["layers"]:
            for node in layer_config["inbound_nodes"]:
                for ref in _tensor_refs(node):
                    uses[ref] = uses.get(ref, 0) + 1
        for ref in _output_refs(config["output_layers"]):
            uses[ref] = uses.get(ref, 0) + 1
        # Operations (slicing, `keras.ops.*`) are in the graph too, and are
        # not layers `get_layer` would find.
        by_name = {operation.name: operation for operation in model.operations}
        for layer_config in config["layers"]:
            layer = by_name[layer_config["name"]]
            nodes = layer_config["inbound_nodes"]
            self._count(layer, len(nodes))
            if isinstance(layer, MeanOnlyBatchNorm) and len(nodes) == 1:
                refs = _tensor_refs(nodes[0])
                if len(refs) == 1:
                    producer = by_name[refs[0][0]]
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
