"""What was changed in place in a model whose config does not say so.

`keras_wc.convert(model, inplace=True)` changes the classes of layers that
the model's config does not describe: the projections inside a
`MultiHeadAttention`, the layers of a keras-hub backbone or of a subclassed
model (see `keras_wc.tree.Node.described`). Rebuilding such a model from
its config (what `keras.saving.load_model` does) would give plain layers,
and loading the saved raw variables into them would fail (or, worse, put
`v` where `w` belongs). `keras_wc.fold` has the opposite case: a subclassed
model whose own code builds keras_wc layers, folded to plain ones.

Each layer changed in place carries a mark (`mark_change`: "adopted" or
"released"). A model with a marked layer that its config does not describe
gets its class wrapped in a subclass that keeps its name, methods and `call`,
and whose config is the original class's config plus a *record*: for each
keras_wc layer, where it is in the layer tree, its keras_wc class and its
arguments, and each released layer's place. Loading rebuilds the model
from the original config, replays the record (`adopt` or `release` on each
recorded layer) and only then lets Keras load the variables. The wrapped
class is registered for serialization as `keras_wc>ReparameterizedModel`,
so a keras-hub task holding a converted backbone saves and loads too. A
model whose layers are all described again (after `fold`) gets its class
back.
"""

import keras

from keras_wc import tree
from keras_wc.layers.layer_types import plain_parent
from keras_wc.layers.recurrent import RecurrentMixin, kernel_holder
from keras_wc.layers.reparameterized import CHANGE, ReparameterizedLayer

REGISTERED_NAME = "keras_wc>ReparameterizedModel"


def is_reparameterized(layer):
    """Whether `layer` is a keras_wc kernel layer or recurrent layer."""
    return isinstance(layer, (ReparameterizedLayer, RecurrentMixin))


def _enter(node):
    # A keras_wc recurrent layer stands for its cell.
    return not isinstance(node.layer, RecurrentMixin)


def reparameterized_nodes(root):
    """The tree nodes of every reparameterized layer below `root`."""
    return [
        node
        for node in tree.walk(root, enter=_enter)
        if is_reparameterized(node.layer)
    ]


def _change(layer):
    return layer.__dict__.get(CHANGE)


def record(root):
    """The record of `root`: one JSON-able dict per layer to replay.

    Each entry holds the layer's `index` and `path` (`keras_wc.tree.Node`)
    and either the registered name of its keras_wc class and its keras_wc
    arguments (`reparameterization_config()`), with `"lora": [rank,
    alpha]` where LoRA is enabled, for every keras_wc layer, or
    `"release": true` for a layer `fold` released.
    """
    entries = []
    for node in tree.walk(root, enter=_enter):
        layer = node.layer
        where = {"index": list(node.index), "path": node.path}
        if is_reparameterized(layer):
            kernel_layer = kernel_holder(layer)
            entry = {
                **where,
                "class": keras.saving.get_registered_name(type(layer)),
                "config": kernel_layer.reparameterization_config(),
            }
            if getattr(layer, "lora_enabled", False):
                entry["lora"] = [layer.lora_rank, layer.lora_alpha]
            entries.append(entry)
        elif _change(layer) == "released":
            entries.append({**where, "release": True})
    return entries


def replay(root, entries, shared=None):
    """Makes the layers of `root` what an earlier `record` says they were,
    in place: a recorded keras_wc layer that is plain is adopted (its
    variables are left at zero: they are about to be loaded or copied
    into), a released one that is reparameterized is released.

    Layers are found by path, else by index, and checked against the
    class recorded. A `SharedCompander` recorded several times (coarse WC)
    is rebuilt once.

    Args:
        root: the model or layer.
        entries: the record.
        shared: optional dict from `shared_object_id` to the
            `SharedCompander` to use for it, completed with those rebuilt.

    Raises:
        ValueError: an entry matches no layer of the recorded class.
    """
    shared = {} if shared is None else shared
    for entry in entries:
        if entry.get("release"):
            layer = _find(root, entry, None, None)
            if is_reparameterized(layer):
                layer.release()
            continue
        cls = keras.saving.get_registered_object(entry["class"])
        if cls is None:
            raise ValueError(
                f"Unknown keras_wc class {entry['class']!r} in the record "
                f"of '{root.name}'."
            )
        layer = _find(root, entry, cls, plain_parent(cls))
        if isinstance(layer, cls):
            continue
        options = dict(entry["config"])
        if isinstance(options.get("shared"), dict):
            key = options["shared"].get("shared_object_id")
            if key not in shared:
                shared[key] = keras.saving.deserialize_keras_object(
                    options["shared"]
                )
            options["shared"] = shared[key]
        cls.adopt(layer, keep_function=False, **options)
        if "lora" in entry and not getattr(layer, "lora_enabled", False):
            rank, alpha = entry["lora"]
            layer.enable_lora(rank, lora_alpha=alpha)


def _find(root, entry, cls, parent):
    candidates = tree.at_path(root, entry["path"])
    if len(candidates) != 1:
        candidates = [tree.at_index(root, tuple(entry["index"]))]
    layer = candidates[0]
    expected = (cls, parent) if cls is not None else (keras.layers.Layer,)
    if not isinstance(layer, expected):
        found = "nothing" if layer is None else type(layer).__name__
        wanted = cls.__name__ if cls is not None else "layer"
        raise ValueError(
            f"The record of '{root.name}' lists a {wanted} at "
            f"'{entry['path']}' (index {entry['index']}), but the model "
            f"rebuilt from its config has {found} there. Was it saved "
            "with another version of its classes?"
        )
    return layer


class ReparameterizedModel:
    """The mixin of every wrapped model class (see the module docstring).

    Not used directly: `sync(model)` gives a model the wrapped form of its
    class when it needs a record.
    """

    _keras_wc_plain_class = None

    def get_config(self):
        # The original class's own serialization, as Keras writes it.
        wrapped = type(self)
        self.__class__ = wrapped._keras_wc_plain_class
        try:
            inner = keras.saving.serialize_keras_object(self)
        finally:
            self.__class__ = wrapped
        # Compiling is the outer object's (Keras compiles what this loads).
        inner.pop("compile_config", None)
        return {"model": inner, "reparameterized": record(self)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        model = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        replay(model, config["reparameterized"])
        sync(model)
        return model


keras.saving.register_keras_serializable(
    package="keras_wc", name="ReparameterizedModel"
)(ReparameterizedModel)

_WRAPPED = {}


def _wrapped_class(cls):
    if cls not in _WRAPPED:
        wrapped = type(
            cls.__name__,
            (ReparameterizedModel, cls),
            {
                "__module__": __name__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
                "_keras_wc_plain_class": cls,
            },
        )
        # Makes `serialize_keras_object` write the registered name, which
        # loads with `ReparameterizedModel.from_config`.
        keras.saving.register_keras_serializable(
            package="keras_wc", name="ReparameterizedModel"
        )(wrapped)
        _WRAPPED[cls] = wrapped
    return _WRAPPED[cls]


def needs_record(model):
    """Whether some layer below `model` that `model`'s config does not
    describe was changed in place (adopted or released)."""
    return any(
        not node.described and _change(node.layer) is not None
        for node in tree.walk(model, enter=_enter)
    )


def sync(model):
    """Wraps `model`'s class if it needs a record, unwraps it if not.

    Only models are wrapped (a layer's config is its own business); a model
    whose class is already wrapped keeps it while it needs it.
    """
    if not isinstance(model, keras.Model):
        return model
    wrapped = tree.is_recorded_model(model)
    needed = needs_record(model)
    if needed and not wrapped:
        model.__class__ = _wrapped_class(type(model))
    elif wrapped and not needed:
        model.__class__ = type(model)._keras_wc_plain_class
    return model
