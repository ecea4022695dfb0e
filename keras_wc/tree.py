"""The layer tree of a Keras model: every layer at any depth, with its path.

A model is a tree of layers: a Sequential or Functional model holds its
layers, a composite layer (`MultiHeadAttention`, a keras-hub
`TransformerEncoder`) the layers it builds, a wrapper (`Bidirectional`,
`TimeDistributed`) its inner layer(s), an RNN its cell, a subclassed model
whatever it assigns to attributes (lists and dicts included). Keras tracks
all of these as each layer's sublayers; `walk` visits them depth first, each
layer once, with two paths:

* `path`: the layer names from the root (excluded) down, joined by `/`
  (`"transformer_layer_0/self_attention_layer/query"`), for people;
* `index`: the positions among each parent's sublayers, which Keras
  creates in the same order whenever it builds the same model from the same
  config, for `keras_wc.inplace_saving` to find a layer again after loading.

`described` tells whether the root's config describes the layer, i.e.
whether rebuilding the root from its config rebuilds the layer with its
class and config: true along chains of Sequential/Functional models, wrappers
and RNN cells, false inside composite layers and subclassed models, whose
configs hold only their own arguments.

`selector` turns the `layers=` argument of `keras_wc.convert` and
`keras_wc.callbacks.WeightDistribution` (names, paths, classes or a
predicate) into a predicate on nodes, the same for both.
"""

import dataclasses

import keras

from keras_wc import internals


@dataclasses.dataclass(frozen=True)
class Node:
    """One layer of the tree below a root.

    Attributes:
        layer: the layer.
        path: the names of its ancestors below the root and its own,
            joined by `/`.
        index: its position among each ancestor's sublayers (see
            `children`), from the root's down.
        ancestors: the layers from the root (excluded) to its parent.
        described: whether the root's config describes the layer.
    """

    layer: object
    path: str
    index: tuple
    ancestors: tuple
    described: bool


def check_model(model, function):
    """Raises unless `model` is a built Keras model."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`keras_wc.{function}` expects a `keras.Model`. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"`keras_wc.{function}` needs a built model. Give it a "
            "`keras.Input`, or call it on data first. "
            f"Received: unbuilt model '{model.name}'"
        )


def drop_traced_functions(root):
    """Makes the next `fit`/`evaluate`/`predict` of `root` and of every
    model below it trace anew (after their variables or the layers' classes
    changed): a function traced before would compute the old model."""
    models = [root] + [
        node.layer for node in walk(root) if isinstance(node.layer, keras.Model)
    ]
    for model in models:
        for attribute in (
            "train_function",
            "test_function",
            "predict_function",
        ):
            if getattr(model, attribute, None) is not None:
                setattr(model, attribute, None)


def children(layer):
    """The sublayers Keras tracks for `layer`, in creation order, once
    each, without input layers."""
    return [
        child
        for child in internals.sublayers(layer)
        if not isinstance(child, keras.layers.InputLayer)
    ]


def walk(root, enter=None):
    """Yields a `Node` for every layer below `root`, depth first.

    Each layer is visited once, on its first path (a shared layer is not
    visited again).

    Args:
        root: a Keras layer or model.
        enter: optional `fn(node) -> bool`; the sublayers of a node are
            visited only if it returns true.
    """
    seen = {id(root)}

    def visit(parent, parent_node):
        for position, child in enumerate(children(parent)):
            if id(child) in seen:
                continue
            seen.add(id(child))
            ancestors = parent_node.ancestors + (
                (parent,) if parent is not root else ()
            )
            node = Node(
                layer=child,
                path=parent_node.path + child.name,
                index=parent_node.index + (position,),
                ancestors=ancestors,
                described=parent_node.described
                and (
                    describes(parent, child)
                    or (parent is not root and is_recorded_model(parent))
                ),
            )
            yield node
            if enter is None or enter(node):
                yield from visit(
                    child,
                    dataclasses.replace(node, path=node.path + "/"),
                )

    yield from visit(root, Node(root, "", (), (), True))


def at_index(root, index):
    """The layer at `index` below `root` (see `Node.index`), or None."""
    layer = root
    for position in index:
        below = children(layer)
        if not 0 <= position < len(below):
            return None
        layer = below[position]
    return layer


def at_path(root, path):
    """The layers below `root` whose `Node.path` is `path`."""
    return [node.layer for node in walk(root) if node.path == path]


def plain_class(layer):
    """The class of `layer`, or, for a model whose class keras_wc wrapped
    to record its reparameterization (`keras_wc.inplace_saving`), the class it
    wraps."""
    return getattr(type(layer), "_keras_wc_plain_class", type(layer))


def is_recorded_model(layer):
    """Whether `layer` is a model wrapped by `keras_wc.inplace_saving`."""
    return hasattr(type(layer), "_keras_wc_plain_class")


def _is_keras_functional(cls):
    return (
        cls.__name__ == "Functional"
        and cls.__module__.startswith("keras.")
        and issubclass(cls, keras.Model)
    )


def is_graph_model(layer):
    """Whether `layer` is a Sequential or Functional model (exactly those
    classes), whose config is its layer graph and which `Cloner` rebuilds.

    Subclasses (a keras-hub backbone is a Functional subclass) are not:
    their configs hold their constructor arguments.
    """
    cls = plain_class(layer)
    return cls is keras.Sequential or _is_keras_functional(cls)


def describes(parent, child):
    """Whether rebuilding `parent` from its config rebuilds `child` from
    `child`'s config (with its class)."""
    if is_graph_model(parent):
        return any(layer is child for layer in parent.layers)
    if isinstance(parent, keras.layers.Bidirectional):
        return child is parent.forward_layer or child is parent.backward_layer
    if isinstance(parent, keras.layers.Wrapper):
        return child is parent.layer
    if isinstance(parent, keras.layers.RNN) and child is parent.cell:
        # A plain LSTM/GRU/SimpleRNN/ConvLSTM writes its cell's arguments
        # into its own config and rebuilds a plain cell; the generic RNN and the
        # keras_wc recurrent layers (which write their method's arguments
        # too) rebuild the cell they hold.
        return type(parent) is keras.layers.RNN or getattr(
            parent, "CELL_CLASS", None
        ) is type(child)
    return False


# What a `layers=` selection may be, for error messages.
SELECTION = (
    "a layer name or path, a layer class, a list of names and classes, or "
    "a predicate `fn(layer) -> bool`"
)


def _is_predicate(layers):
    return callable(layers) and not isinstance(layers, type)


def selection_items(layers):
    """The names, paths and classes of a `layers=` selection, as a tuple;
    `None` for a predicate or for something that is not a selection."""
    if _is_predicate(layers):
        return None
    items = [layers] if isinstance(layers, (str, type)) else layers
    if not isinstance(items, (list, tuple, set, frozenset)) or not all(
        isinstance(item, (str, type)) for item in items
    ):
        return None
    return tuple(items)


def is_selection(layers):
    """Whether `layers` is a `layers=` selection (see `selector`)."""
    return _is_predicate(layers) or selection_items(layers) is not None


def selects(item, node):
    """Whether the name, path or class `item` selects `node`: it names the
    node or one of its ancestors (by name or by path), or is the class of
    one of them."""
    chain = node.ancestors + (node.layer,)
    if isinstance(item, type):
        return any(isinstance(layer, item) for layer in chain)
    parts = node.path.split("/")
    return any(layer.name == item for layer in chain) or any(
        "/".join(parts[: i + 1]) == item for i in range(len(parts))
    )


def selector(layers, root):
    """The predicate on the `Node`s below `root` that `layers=` stands for.

    Args:
        layers: `None` (every node); a predicate `fn(layer) -> bool`, called
            on the node's layer; or a layer name, a path
            (`"encoder/conv1"`), a layer class, or a list of them, each
            selecting the layers it names or is the class of and every layer
            below them (`selects`).
        root: the model whose layers `layers` names.

    Raises:
        TypeError: `layers` is not one of these.
        ValueError: a name or path matches no layer below `root` (the
            message lists its layers).
    """
    if layers is None:
        return lambda node: True
    if _is_predicate(layers):
        return lambda node: bool(layers(node.layer))
    items = selection_items(layers)
    if items is None:
        raise TypeError(
            f"`layers` must be {SELECTION}. Received: layers={layers!r}"
        )
    paths = [node.path for node in walk(root)]
    known = set(paths) | {path.rsplit("/", 1)[-1] for path in paths}
    missing = sorted(
        item for item in items if isinstance(item, str) and item not in known
    )
    if missing:
        shown = ", ".join(paths[:40]) + (", ..." if len(paths) > 40 else "")
        raise ValueError(
            f"`layers` names {missing} match no layer of model "
            f"'{root.name}'. Its layers: {shown}"
        )
    return lambda node: any(selects(item, node) for item in items)
