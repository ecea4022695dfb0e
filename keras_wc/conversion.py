"""`convert`: reparameterize the kernel layers of an existing Keras model.

The model is rebuilt layer by layer (nested models at any depth, shared
layers kept shared); every selected built-in kernel layer becomes its
keras_wc counterpart and starts from the original kernel through the right
inverse of its reparameterization, so the converted model computes the same
function. Every other layer is copied with its weights.
"""

import dataclasses
import logging
import math

import keras
import numpy as np
from keras import ops

from keras_wc import companders as companders_lib
from keras_wc.layers import wc, wn
from keras_wc.layers.compander import CompanderMixin, SharedCompander
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from keras_wc.layers.reparameterized import KERNEL_NAMES, ReparameterizedLayer
from keras_wc.validation import positive_number

logger = logging.getLogger("keras_wc")

# The built-in kernel layers `convert` replaces, matched on the exact type:
# a subclass of one of them may hold other state, so it is left alone.
SUPPORTED_LAYERS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)

_NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.GroupNormalization,
    keras.layers.LayerNormalization,
    keras.layers.RMSNormalization,
    keras.layers.Normalization,
    MeanOnlyBatchNorm,
)

METHODS = {
    "wc": {"a": 1.0, "b": 1.0, "compander": "arctan", "learnable": False},
    "pp": {"alpha": 2.0},
    "wn": {"init_scale": 1.0},
}
# Config keys of the parents' initializers. `convert` builds the new layer
# with zeros there (restored right after): the kernel is overwritten, and a
# random draw would cost time and could fall outside the compander's range.
_INITIALIZER_KEYS = (
    "kernel_initializer",
    "depthwise_initializer",
    "pointwise_initializer",
)


def convert(
    model,
    method="wc",
    *,
    layers=None,
    return_report=False,
    **options,
):
    """Returns a copy of `model` with its kernel layers reparameterized.

    Every selected built-in kernel layer (`Dense`, `EinsumDense`,
    `Conv1D/2D/3D`, `Conv1D/2D/3DTranspose`, `DepthwiseConv1D/2D`,
    `SeparableConv1D/2D`, matched on the exact type) is replaced by its
    keras_wc counterpart, built from the original's config. Its raw
    variables start at the right inverse of the original kernel, `v = Ψ⁻¹(w)`
    (WC paper, Eq. 4) or `v = w, g = ‖w‖` (WN), so the converted model's
    outputs equal the original's up to float32 round-off. Biases and
    normalization layers are never reparameterized; every other layer is
    copied with its weights. The input model is not modified.

    Sequential and Functional models are supported, nested at any depth,
    with shared layers (they stay shared: one layer, one set of variables)
    and any number of inputs and outputs. Subclassed models are refused: their
    layer graph is Python code that cannot be rebuilt.

    A layer that is already a keras_wc layer is copied as it is and reported
    as skipped, so converting a converted model returns an equal copy.

    Args:
        model: a built `keras.Sequential` or Functional `keras.Model`.
        method: `"wc"` (weight compander), `"pp"` (powerpropagation) or
            `"wn"` (weight normalization).
        layers: which layers to convert: a layer name (or a path such as
            `"encoder/conv1"` inside nested models), a layer class (matched
            with `isinstance`), a list of names and classes, or a predicate
            `fn(layer) -> bool` called on each supported layer. Default: every
            supported layer.
        return_report: also return the `ConversionReport`.
        **options: the options of the method:
            - `"wc"`: `a=1.0`, `b=1.0`, `compander="arctan"` (a name or a
              `keras_wc.companders.Compander`), `learnable=False`; `"fine"`
              gives every layer its own trainable `a, b`, `"coarse"` one
              `keras_wc.SharedCompander` for the whole model (WC paper,
              §III-B).
            - `"pp"`: `alpha=2.0`, i.e.
              `compander=keras_wc.companders.Powerprop(alpha)`.
            - `"wn"`: `init_scale=1.0`. The layers start from the converted
              weights (`data_init=False`); call `keras_wc.initialize` for the
              data-dependent init instead.

    Returns:
        The converted, uncompiled model; with `return_report=True`, the tuple
        `(model, report)`. The report is also logged at INFO level on the
        `"keras_wc"` logger.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: the model is subclassed or not built; unknown method,
            option or layer name; a kernel outside the compander's range for
            the chosen `a` (the message gives the smallest `a` that works for
            the whole model).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(16, activation="relu"),
    ...     keras.layers.Dense(10),
    ... ])
    >>> wc_model, report = keras_wc.convert(model, a=1.0, return_report=True)
    >>> [type(layer).__name__ for layer in wc_model.layers]
    ['WCDense', 'WCDense']
    >>> print(report)  # doctest: +SKIP
    keras_wc.convert(method="wc", a=1.0, b=1.0, compander="arctan", ...
    """
    check_graph_model(model, "convert")
    options = _resolve_options(method, options)
    registry = _registry(method)
    select = _selector(layers, model)
    layer_kwargs = _layer_kwargs(method, options)

    plan = {}  # id(layer) -> (target class, path, kernels) of converted ones
    entries = []
    for path, layer in leaf_layers(model):
        target, reason = _decide(layer, path, registry, select)
        if target is not None:
            plan[id(layer)] = (target, path, _kernels(layer))
        if target is not None or reason is not None:
            entries.append(
                ReportEntry(path, type(layer).__name__, target, reason)
            )
    if method == "wc":
        _check_range(
            [(path, kernels) for _, path, kernels in plan.values()], options
        )

    shared_copies = {}

    def make_layer(layer):
        if id(layer) in plan:
            target = plan[id(layer)][0]
            return _new_reparameterized(layer, target, layer_kwargs)
        return _copy_layer(layer, shared_copies)

    cloner = Cloner(make_layer)
    converted = cloner.clone(model)
    for old, new in cloner.pairs:
        if id(old) in plan:
            for name, value in plan[id(old)][2].items():
                new.assign_effective_kernel(name, value)
            if getattr(old, "bias", None) is not None:
                new.bias.assign(old.bias)
        else:
            new.set_weights(old.get_weights())

    report = ConversionReport(method, options, tuple(entries))
    logger.info("%s", report)
    if return_report:
        return converted, report
    return converted


@dataclasses.dataclass(frozen=True)
class ReportEntry:
    """One layer in a `ConversionReport`.

    Attributes:
        path: the layer's name, prefixed by the names of the nested models
            holding it (`"encoder/conv1"`).
        layer_type: the class name of the original layer.
        target: the keras_wc class it became, or `None` if skipped.
        reason: why it was skipped, or `None` if converted.
    """

    path: str
    layer_type: str
    target: type = None
    reason: str = None


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What `keras_wc.convert` converted and what it skipped, and why.

    Layers without weights (activations, pooling, merges) are not listed.
    `str(report)` is a table for humans.

    Attributes:
        method: `"wc"`, `"pp"` or `"wn"`.
        options: the method's options, defaults filled in.
        entries: one `ReportEntry` per layer with weights, in model order.
    """

    method: str
    options: dict
    entries: tuple

    @property
    def converted(self):
        """The entries of the converted layers."""
        return tuple(e for e in self.entries if e.target is not None)

    @property
    def skipped(self):
        """The entries of the layers left as they were."""
        return tuple(e for e in self.entries if e.target is None)

    def __str__(self):
        args = ", ".join(
            f"{k}={_format_option(v)}" for k, v in self.options.items()
        )
        header = (
            f'keras_wc.convert(method="{self.method}", {args}): '
            f"{len(self.converted)} layer(s) converted, "
            f"{len(self.skipped)} skipped"
        )
        rows = [("layer", "type", "result")] + [
            (
                e.path,
                e.layer_type,
                (
                    f"-> {e.target.__name__}"
                    if e.target
                    else f"skipped: {e.reason}"
                ),
            )
            for e in self.entries
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        lines = [header] + [
            f"  {path:<{widths[0]}}  {kind:<{widths[1]}}  {result}"
            for path, kind, result in rows
        ]
        return "\n".join(lines)


def _format_option(value):
    if isinstance(value, companders_lib.Compander):
        value = companders_lib.serialize(value)
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def check_graph_model(model, function):
    """Raises unless `model` is a built Sequential or Functional model."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`keras_wc.{function}` expects a `keras.Model`. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if not is_graph_model(model):
        raise ValueError(
            f"`keras_wc.{function}` supports Sequential and Functional "
            "models (nested at any depth), whose layer graph it can rebuild. "
            f"Received: a subclassed model of type {type(model).__name__}. "
            "Build it as a Functional model, or use the keras_wc layer "
            "classes (e.g. `keras_wc.WCDense` in place of "
            "`keras.layers.Dense`) directly in its code."
        )
    if not model.built:
        raise ValueError(
            f"`keras_wc.{function}` needs a built model. Give it a "
            "`keras.Input`, or call it on data first. "
            f"Received: unbuilt model '{model.name}'"
        )


def is_graph_model(layer):
    """Whether `layer` is a Sequential or Functional model."""
    return isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and isinstance(layer, keras.Function)
    )


def leaf_layers(model):
    """Yields `(path, layer)` for each layer of a model, once per layer.

    Nested Sequential and Functional models are entered (their layers get
    the path `"outer/inner/name"`); input layers are left out.
    """
    seen = set()

    def walk(container, prefix):
        for layer in container.layers:
            if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
                continue
            seen.add(id(layer))
            path = prefix + layer.name
            if is_graph_model(layer):
                yield from walk(layer, path + "/")
            else:
                yield path, layer

    yield from walk(model, "")


class Cloner:
    """Rebuilds a Sequential/Functional model with new leaf layers.

    Nested models are rebuilt at any depth; each layer object is cloned once,
    so shared layers and shared nested models stay shared. The new model is
    uncompiled. Weights are not copied: after `clone`, `pairs` lists
    `(old, new)` for every leaf layer, all built, for the caller to fill.

    Args:
        make_layer: `fn(old_layer) -> new_layer` (unbuilt) for leaf layers.
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
            if isinstance(layer, keras.Sequential):
                new = self._clone_sequential(layer)
            elif is_graph_model(layer):
                new = self._clone_functional(layer)
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
        # `model.layers` leaves out the input layer, which `_layers` holds.
        first = model._layers[0]
        if isinstance(first, keras.layers.InputLayer):
            new_layers.insert(0, _new_input(first))
        return keras.Sequential(
            new_layers, name=model.name, trainable=model.trainable
        )

    def _clone_functional(self, model):
        # New inputs named after the input layers: `clone_model` would name
        # them after the input tensors ("keras_tensor", ...).
        inputs = keras.tree.map_structure(
            lambda x: _new_input(x._keras_history.operation), model.input
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


def _resolve_options(method, options):
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"Unknown method {method!r}. Valid methods: "
            f"{', '.join(map(repr, METHODS))}. Received: method={method!r}"
        )
    defaults = METHODS[method]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for method {method!r}. Valid "
            f"options: {', '.join(defaults)}."
        )
    resolved = {**defaults, **options}
    if method == "wc":
        for name in ("a", "b"):
            positive_number(name, resolved[name])
        resolved["compander"] = companders_lib.get(resolved["compander"])
        learnable = resolved["learnable"]
        if not (learnable is False or learnable in ("fine", "coarse")):
            raise ValueError(
                "`learnable` must be False, 'fine' or 'coarse'. "
                f"Received: learnable={resolved['learnable']!r}"
            )
    elif method == "pp":
        companders_lib.Powerprop(resolved["alpha"])
    else:
        positive_number("init_scale", resolved["init_scale"])
    return resolved


def _registry(method):
    """Dict from each supported built-in class to its keras_wc class."""
    module, prefix = (wn, "WN") if method == "wn" else (wc, "WC")
    return {
        cls: getattr(module, prefix + cls.__name__) for cls in SUPPORTED_LAYERS
    }


def _layer_kwargs(method, options):
    """The keyword arguments given to every new layer."""
    if method == "pp":
        return {"compander": companders_lib.Powerprop(options["alpha"])}
    if method == "wn":
        return {"data_init": False, "init_scale": options["init_scale"]}
    scales = {
        "a": float(options["a"]),
        "b": float(options["b"]),
        "compander": options["compander"],
    }
    if options["learnable"] == "coarse":
        return {"shared": SharedCompander(**scales)}
    return {**scales, "learnable": options["learnable"] == "fine"}


def _selector(layers, model):
    """Turns `layers=` into a predicate on supported layers."""
    if layers is None:
        return lambda layer, path: True
    if callable(layers) and not isinstance(layers, type):
        return lambda layer, path: bool(layers(layer))
    items = [layers] if isinstance(layers, (str, type)) else layers
    if not isinstance(items, (list, tuple, set, frozenset)) or not all(
        isinstance(item, (str, type)) for item in items
    ):
        raise TypeError(
            "`layers` must be a layer name, a layer class, a list of names "
            "and classes, or a predicate `fn(layer) -> bool`. "
            f"Received: layers={layers!r}"
        )
    names = {item for item in items if isinstance(item, str)}
    classes = tuple(item for item in items if isinstance(item, type))
    known = {}
    for path, layer in leaf_layers(model):
        known[path] = layer.name
    missing = sorted(
        n for n in names if n not in known and n not in known.values()
    )
    if missing:
        raise ValueError(
            f"`layers` names {missing} match no layer of model "
            f"'{model.name}'. Its layers: {', '.join(known)}"
        )
    return lambda layer, path: (
        path in names or layer.name in names or isinstance(layer, classes)
    )


def _decide(layer, path, registry, select):
    """(target class, None) to convert, (None, reason) or (None, None)."""
    if isinstance(layer, ReparameterizedLayer):
        return None, f"already reparameterized ({type(layer).__name__})"
    if type(layer) in registry:
        if getattr(layer, "quantization_mode", None):
            return None, f"quantized ({layer.quantization_mode})"
        if not select(layer, path):
            return None, "not selected by `layers=`"
        return registry[type(layer)], None
    if not layer.weights:
        return None, None
    if isinstance(layer, _NORMALIZATION_LAYERS):
        return None, "normalization layer (never reparameterized)"
    return None, "not a supported kernel layer"


def _kernels(layer):
    """The layer's kernels as float32 numpy arrays, by kernel name."""
    return {
        name: ops.convert_to_numpy(getattr(layer, name)).astype("float32")
        for name in KERNEL_NAMES
        if getattr(layer, name, None) is not None
    }


def _check_range(layer_kernels, options):
    compander, a = options["compander"], options["a"]
    if not hasattr(compander, "max_magnitude"):
        return
    bound_per_a = compander.max_magnitude(1.0)
    if not math.isfinite(bound_per_a):
        return
    largest = {
        path: max(float(np.max(np.abs(k))) for k in kernels.values())
        for path, kernels in layer_kernels
    }
    outside = {p: m for p, m in largest.items() if m >= a * bound_per_a}
    if not outside:
        return
    smallest_a = max(largest.values()) / bound_per_a
    details = ", ".join(
        f"'{path}' (max |w| = {m:.4g})" for path, m in outside.items()
    )
    raise ValueError(
        f"keras_wc.convert: with a={a:g}, {compander!r} reaches only |w| < "
        f"{a * bound_per_a:.4g}, but {len(outside)} layer(s) have larger "
        f"weights: {details}. The smallest `a` that works for the whole model "
        f"is a > {smallest_a:.4g} (e.g. a={math.ceil(smallest_a * 101) / 100:g}"
        "); or restrict the conversion with `layers=`."
    )


def _new_reparameterized(layer, target, layer_kwargs):
    config = layer.get_config()
    # A LoRA adapter is merged: the kernel copied is `layer.kernel`.
    config.pop("lora_rank", None)
    config.pop("lora_alpha", None)
    initializers = {k: config[k] for k in _INITIALIZER_KEYS if k in config}
    new = target.from_config(
        {**config, **{k: "zeros" for k in initializers}, **layer_kwargs}
    )
    new.build_from_config(layer.get_build_config())
    for key, value in initializers.items():
        setattr(new, key, keras.initializers.get(value))
    return new


def _copy_layer(layer, shared_copies):
    """A new layer of the same class and config (weights not copied)."""
    config = layer.get_config()
    if isinstance(layer, CompanderMixin) and layer.shared is not None:
        # One copy per SharedCompander, so coarse sharing survives.
        key = id(layer.shared)
        if key not in shared_copies:
            shared_copies[key] = SharedCompander.from_config(
                layer.shared.get_config()
            )
        config["shared"] = shared_copies[key]
    return type(layer).from_config(config)
