"""Copies of models and layers: what `convert` and `fold` build on.

* `Cloner` rebuilds a Sequential/Functional graph (nested graph models at
  any depth, shared layers kept shared, Keras operations such as slicing or
  `keras.ops.relu` kept as they are) with new layers made by a callback; it
  can drop layers from the graph (`fold` drops the mean-only batch norms it
  folds into a bias).
* `copy_layer` and `copy_model` make structural copies: the same classes,
  configs, reparameterized layers and weights, built.
"""

import contextlib
import os
import tempfile

import keras

from keras_wc import inplace_saving, internals, tree
from keras_wc.layers.wc_base import CompanderMixin, SharedCompander


class Cloner:
    """Rebuilds a Sequential/Functional model with new leaf layers.

    Graph models (`keras_wc.tree.is_graph_model`) are rebuilt at any depth;
    every other layer (composite layers and other models included) is a
    leaf, made by `make_layer`. Each layer object is cloned once, so shared
    layers and shared nested models stay shared. The new model is
    uncompiled. After `clone`, `pairs` lists `(old, new)` for every leaf.

    Args:
        make_layer: `fn(old_layer) -> new_layer` for leaf layers.
        drop: ids of leaf layers to remove from the graph; a call of one of
            them is replaced by its first input.
    """

    def __init__(self, make_layer, drop=()):
        self._make_layer = make_layer
        self._drop = frozenset(drop)
        self._cache = {}
        self.pairs = []

    def clone(self, layer):
        key = id(layer)
        if key not in self._cache:
            if tree.is_graph_model(layer):
                new = (
                    self._clone_sequential(layer)
                    if isinstance(layer, keras.Sequential)
                    else self._clone_functional(layer)
                )
                inplace_saving.sync(new)
            elif key in self._drop or not isinstance(layer, keras.Layer):
                # A dropped layer is never called (`_call` forwards its
                # input); an operation such as `keras.ops.cast` is stateless.
                new = layer
            else:
                new = self._make_layer(layer)
                self.pairs.append((layer, new))
            self._cache[key] = new
        return self._cache[key]

    def _call(self, layer, *args, **kwargs):
        if id(layer) in self._drop:
            return args[0]
        return layer(*args, **kwargs)

    def _clone_sequential(self, model):
        new_layers = [
            self.clone(layer)
            for layer in model.layers
            if id(layer) not in self._drop
        ]
        # `model.layers` leaves out the input layer.
        first = internals.sequential_input_layer(model)
        if first is not None:
            new_layers.insert(0, _new_input(first))
        return keras.Sequential(
            new_layers, name=model.name, trainable=model.trainable
        )

    def _clone_functional(self, model):
        # New inputs named after the input layers: `clone_model` would name
        # them after the input tensors ("keras_tensor", ...).
        inputs = keras.tree.map_structure(
            lambda x: _new_input(internals.producing_layer(x)), model.input
        )
        new = keras.models.clone_model(
            model,
            input_tensors=inputs,
            clone_function=self.clone,
            call_function=self._call,
        )
        if new.compiled:
            # `clone_model` recompiles the copy; the result is uncompiled.
            new = keras.Model(new.input, new.output, name=new.name)
        if not model.trainable:
            new.trainable = False
        return new


def _new_input(input_layer):
    """A new `keras.Input` like the one of `input_layer`."""
    config = input_layer.get_config()
    return keras.Input(
        batch_shape=config["batch_shape"],
        dtype=config["dtype"],
        sparse=config["sparse"],
        ragged=config["ragged"],
        name=config["name"],
        optional=config.get("optional", False),
    )


class LayerCopier:
    """Structural copies of leaf layers, for `Cloner`.

    A copy has the class and config of the original, the same
    reparameterized sublayers (replayed from `keras_wc.inplace_saving`), the
    same weights, and is built. WC layers sharing one `SharedCompander` (coarse
    WC) share one copy of it.
    """

    def __init__(self):
        # id of an original SharedCompander -> its copy; records name a
        # SharedCompander by that id too (`shared_object_id`).
        self._shared = {}

    def shared_copy(self, shared):
        """The copy of a `SharedCompander` (one per original)."""
        if id(shared) not in self._shared:
            self._shared[id(shared)] = SharedCompander.from_config(
                shared.get_config()
            )
            self._shared[id(shared)].set_weights(shared.get_weights())
        return self._shared[id(shared)]

    def __call__(self, layer):
        if isinstance(layer, keras.Model):
            return copy_model(layer)
        config = layer.get_config()
        if isinstance(layer, CompanderMixin) and layer.shared is not None:
            config["shared"] = self.shared_copy(layer.shared)
        new = type(layer).from_config(config)
        build_config = layer.get_build_config()
        if layer.built and build_config is not None:
            # Under the name scopes the original was built in, so that its
            # variables have the original's paths (a Sequential model builds
            # its layers in its own scope): a distribution's layout map
            # keyed on them lays the copy out as the original.
            with _name_scopes(_scope_of(layer)):
                new.build_from_config(build_config)
            new.built = True
        inplace_saving.replay(
            new, inplace_saving.record(layer), shared=self._shared
        )
        if layer.built:
            copy_weights(layer, new)
        return new


def _scope_of(layer):
    """The name scopes `layer` was built in (`"outer/inner"`), or ""."""
    path = layer.path or ""
    return path.rpartition("/")[0] if path.endswith(layer.name) else ""


@contextlib.contextmanager
def _name_scopes(scope):
    with contextlib.ExitStack() as stack:
        for name in filter(None, scope.split("/")):
            stack.enter_context(keras.name_scope(name))
        yield


def copy_weights(source, target):
    """Assigns every weight of `source` to the matching one of `target`
    (same structure: same number, order and shapes of weights)."""
    source_weights = source.weights
    target_weights = target.weights
    if len(source_weights) != len(target_weights) or any(
        tuple(s.shape) != tuple(t.shape)
        for s, t in zip(source_weights, target_weights, strict=True)
    ):
        raise ValueError(
            f"keras_wc could not copy '{source.name}': its copy rebuilt from "
            f"its config has {len(target_weights)} weights "
            f"{[tuple(w.shape) for w in target_weights][:8]}..., the original "
            f"{len(source_weights)} "
            f"{[tuple(w.shape) for w in source_weights][:8]}...."
        )
    for s, t in zip(source_weights, target_weights, strict=True):
        assign_copy(t, s)
    for layer in [target] + [node.layer for node in tree.walk(target)]:
        if layer.built and hasattr(layer, "_remember_initialized"):
            layer._remember_initialized()  # a WN layer's copied flag


def assign_copy(target, source):
    """`target.assign(source)` where `target` gets storage of its own.

    On JAX a variable assigned another's value holds the same device buffer,
    and Keras's JAX training steps donate the buffers of the model they
    train: training a copy that shared them would delete the original's.
    """
    target.assign(keras.ops.copy(source))


def copy_model(model):
    """A structural copy of any model (see `LayerCopier`).

    Sequential and Functional models are rebuilt layer by layer (`Cloner`);
    any other model (subclassed, keras-hub backbones and tasks) goes through
    a `.keras` file in a temporary directory, i.e. its own `get_config` /
    `from_config` and Keras's saving, which keeps its class, its
    reparameterized layers (`keras_wc.inplace_saving`) and every variable.

    Raises:
        ValueError: the model cannot be rebuilt from its config (e.g. a
            subclassed model without `get_config`).
    """
    if tree.is_graph_model(model):
        cloner = Cloner(LayerCopier())
        return cloner.clone(model)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        try:
            model.save(path)
            copy = keras.saving.load_model(path, compile=False)
        except (NotImplementedError, TypeError, ValueError) as error:
            raise ValueError(
                f"'{model.name}' ({type(model).__name__}) cannot be copied: "
                f"rebuilding it from its config failed ({error}). Pass "
                "`inplace=True` to change the model itself."
            ) from error
    _carry_over_state(model, copy)
    return copy


def _carry_over_state(source, target):
    """What a model's config does not rebuild in the layers it does not
    describe (keras-hub's `backbone.enable_lora` freezes the backbone and
    adds adapters to some layers): each layer's `trainable`, LoRA and dtype
    policy, then every weight, so that the copy trains what the original
    trains and saves as it saves."""
    target.trainable = source.trainable
    for old, new in zip(tree.walk(source), tree.walk(target), strict=True):
        old, new = old.layer, new.layer
        new.trainable = old.trainable  # parents first: walk's order
        internals.keep_own_dtype_policy(new, old)
        if getattr(old, "lora_enabled", False) and not getattr(
            new, "lora_enabled", False
        ):
            new.enable_lora(old.lora_rank, lora_alpha=old.lora_alpha)
    copy_weights(source, target)
    for old, new in zip(source.weights, target.weights, strict=True):
        new.trainable = old.trainable
