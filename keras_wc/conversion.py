"""`convert`: reparameterize the kernel layers of an existing Keras model.

Every selected built-in kernel layer anywhere in the model's layer tree
(`keras_wc.tree`: inside nested models, composite layers such as
`MultiHeadAttention`, wrappers, RNN layers, subclassed models, lists and
dicts of layers) becomes its keras_wc counterpart in place
(`ReparameterizedLayer.adopt`), starting from the original kernel through the
right inverse of its reparameterization, so the model computes the same
function. By default the model is copied first (`keras_wc.rebuilding`);
`inplace=True` changes the model itself, keeping its class, its `call` and
everything that holds it.
"""

import dataclasses
import logging
import math
import warnings

import keras
import numpy as np
from keras import ops

from keras_wc import companders as companders_lib
from keras_wc import inplace_saving, internals, rebuilding, tree
from keras_wc.layers import wc_layers, wn_layers
from keras_wc.layers.layer_types import RECURRENT_LAYERS, SUPPORTED_LAYERS
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from keras_wc.layers.recurrent import kernel_holder
from keras_wc.layers.reparameterized import KERNEL_NAMES
from keras_wc.layers.wc_base import SharedCompander
from keras_wc.validation import learnable_mode, positive_number

logger = logging.getLogger("keras_wc")

_NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.GroupNormalization,
    keras.layers.LayerNormalization,
    keras.layers.RMSNormalization,
    keras.layers.Normalization,
    MeanOnlyBatchNorm,
)

# `a="auto"` gives each layer the `a` that puts its largest |w| at this
# fraction of the bound a·sup|f| (see `convert`); `b="auto"` makes Ψ'(0) = 1.
AUTO = "auto"
AUTO_FRACTION = 0.5
# A kernel of zeros still gets a positive `a`.
_TINY = 1e-6

METHODS = {
    "wc": {"a": 1.0, "b": 1.0, "compander": "arctan", "learnable": False},
    "pp": {"alpha": 2.0},
    "wn": {"init_scale": 1.0},
}


def convert(
    model,
    method="wc",
    *,
    inplace=False,
    layers=None,
    return_report=False,
    **options,
):
    """Reparameterizes the kernel layers of a model, keeping its function.

    Every selected built-in kernel layer (`Dense`, `EinsumDense`,
    `Conv1D/2D/3D`, `Conv1D/2D/3DTranspose`, `DepthwiseConv1D/2D`,
    `SeparableConv1D/2D`), recurrent layer (`LSTM`, `GRU`, `SimpleRNN`,
    `ConvLSTM1D/2D/3D`: their `kernel` and `recurrent_kernel`) or recurrent
    cell, matched on the exact type, at any depth of the model's layer
    tree, becomes its keras_wc counterpart (`Dense` → `WCDense`, `LSTM` →
    `WCLSTM`, ...). Its raw variables start at the right inverse of the
    original kernel, `v = Ψ⁻¹(w)` (WC paper, Eq. 4) or `v = w, g = ‖w‖`
    (WN), so the outputs equal the original's up to float32 round-off.
    Biases and normalization layers are never reparameterized.

    The tree covers nested Sequential/Functional models, composite layers
    (the projections of `MultiHeadAttention`, keras-hub's
    `TransformerEncoder`/`TransformerDecoder`), wrappers (`Bidirectional`,
    `TimeDistributed`), subclassed models and layers held in lists or dicts.
    Functional models with Keras operations in their graph (slicing,
    `keras.ops.*`, arithmetic) are supported.

    With `inplace=True` the model object itself is changed, whatever its
    kind (Sequential, Functional, subclassed, keras-hub backbones and
    tasks): it keeps its class, its `call`, its config and everything
    holding it, trains with `fit` and saves/loads as `.keras` (when its
    config does not describe the converted layers, its class is wrapped to
    record them: `keras_wc.inplace_saving`). Compile it after converting (a
    compiled model's train/predict functions are reset; an optimizer that
    already holds state for the old variables is rebuilt from its config).
    By default the model is copied and the copy converted; a model that
    cannot be rebuilt from its config (a subclassed model without
    `get_config`) raises, asking for `inplace=True`. Everything is validated
    before anything changes.

    A layer that is already a keras_wc layer is left as it is and reported
    as skipped, so converting a converted model changes nothing.

    Args:
        model: a built Keras model.
        method: `"wc"` (weight compander), `"pp"` (powerpropagation) or
            `"wn"` (weight normalization).
        inplace: change `model` itself instead of a copy.
        layers: which layers to convert: a name or path (`"encoder/conv1"`,
            `"transformer_layer_0/self_attention_layer/query"`), a layer
            class, a list of names and classes, or a predicate
            `fn(layer) -> bool` called on each supported layer. A name or
            class also selects every supported layer below the layers it
            matches (`layers="transformer_layer_0"`,
            `layers=keras.layers.MultiHeadAttention`). Default: every
            supported layer.
        return_report: also return the `ConversionReport`.
        **options: the options of the method:
            - `"wc"`: `a=1.0`, `b=1.0`, `compander="arctan"` (a name or a
              `keras_wc.companders.Compander`), `learnable=False`
              (`False`/`"none"`: fixed; `True`/`"fine"`: a trainable
              `a, b` per layer; `"coarse"`: one `keras_wc.SharedCompander`
              for the whole model; WC paper, §III-B).
              `a="auto"` gives each layer its own `a` from its own kernels:
              the one that puts the layer's largest `|w|` at half the bound
              `a·sup|f|` (`a = 2·max|w| / sup|f|`, `4·max|w|/π` for arctan),
              so that every weight starts in the near-linear half of Ψ's
              range and can grow to twice the layer's largest before Ψ
              compresses it much. With `learnable="coarse"` the shared `a`
              is the largest a layer needs. It needs a bounded compander
              (arctan, erf). `b="auto"` makes `Ψ'(0) = (a/b)·f'(0) = 1`
              (`b = a` for arctan and arsinh, `b = 2a/√π` for erf): small
              weights then train exactly as in the plain model. The chosen
              values are in the report and in each layer's config.
            - `"pp"`: `alpha=2.0`, i.e.
              `compander=keras_wc.companders.Powerprop(alpha)`.
            - `"wn"`: `init_scale=1.0`. The layers start from the converted
              weights (`data_init=False`); call `keras_wc.initialize` for the
              data-dependent init instead.

    Returns:
        The converted model (`model` itself with `inplace=True`, else an
        uncompiled copy); with `return_report=True`, the tuple
        `(model, report)`. The report is logged at INFO level on the
        `"keras_wc"` logger; whenever nothing was converted (no kernel
        layer in the model, none selected or supported, or all converted
        already), a `UserWarning` says which, and what to do.

    Raises:
        TypeError: `model` is not a Keras model; a bad option type.
        ValueError: the model is not built or cannot be copied; unknown
            method, option or layer name; a kernel outside the compander's
            range for the chosen `a` (the message gives the smallest `a`
            that works for the whole model).

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
    tree.check_model(model, "convert")
    if not isinstance(inplace, bool):
        raise TypeError(
            f"`inplace` must be True or False. Received: inplace={inplace!r}"
        )
    options = _resolve_options(method, options)
    registry = _registry(method)
    select = tree.selector(layers, model)
    target = model if inplace else rebuilding.copy_model(model)

    plan, entries = _plan(target, registry, select)
    if method == "wc":
        plan, entries = _choose_scales(plan, entries, options)
        _check_range(plan, options)
    else:
        plan = [(node, cls, {}) for node, cls in plan]
    layer_kwargs = _layer_kwargs(method, options, plan)
    for node, cls, scales in plan:
        # Every layer's options are checked before the first one changes.
        kernel_class = getattr(cls, "CELL_CLASS", None) or cls
        kernel_class._parse_options(
            kernel_holder(node.layer), **_with_scales(layer_kwargs, scales)
        )
    for node, cls, scales in plan:
        cls.adopt(node.layer, **_with_scales(layer_kwargs, scales))
    inplace_saving.sync(target)
    if inplace and plan:
        tree.drop_traced_functions(target)
        _rebuild_optimizer(target)

    report = ConversionReport(method, options, tuple(entries))
    logger.info("%s", report)
    if not report.converted:
        warnings.warn(_nothing_converted(model, report), stacklevel=2)
    if return_report:
        return target, report
    return target


def _nothing_converted(model, report):
    """The warning of a conversion that converted nothing: what happened,
    what to do, and the report."""
    already = any(
        (e.reason or "").startswith("already reparameterized")
        for e in report.skipped
    )
    if report.kernels:
        why = (
            "none of them could be converted; the table below gives each "
            "layer's reason (`layers=` selects among the supported layers)."
        )
    elif already:
        why = (
            "its kernel layers are keras_wc layers already, and converting a "
            "converted model changes nothing. Convert the plain model "
            "(`keras_wc.fold` gives it back) to use other options."
        )
    else:
        why = (
            "it holds no kernel layer (Dense, EinsumDense, convolutions, "
            "LSTM, GRU, SimpleRNN, ConvLSTM, at any depth), so nothing was "
            "reparameterized. Check that this is the model you meant; its "
            "layers with weights, if any, are listed below."
        )
    return (
        f"keras_wc.convert converted no kernel of model '{model.name}' "
        f"({report.kernels} kernel(s) found): {why}\n{report}"
    )


@dataclasses.dataclass(frozen=True)
class ReportEntry:
    """One layer in a `ConversionReport`.

    Attributes:
        path: the layer's name, prefixed by the names of the layers holding
            it (`"encoder/conv1"`, `"transformer_layer_0/.../query"`).
        layer_type: the class name of the original layer.
        kernels: the names of its kernels (`"kernel"`,
            `"recurrent_kernel"`, ...), possibly empty.
        target: the keras_wc class it became, or `None` if skipped.
        reason: why it was skipped, or `None` if converted.
        scales: the `a` and `b` chosen for this layer by `a="auto"` or
            `b="auto"` (`{}` otherwise).
        lora_rank: the rank of the layer's LoRA adapters, kept as its
            trainable part (the raw variables standing for the frozen
            kernel they adapt), or None.
    """

    path: str
    layer_type: str
    kernels: tuple = ()
    target: type = None
    reason: str = None
    scales: dict = dataclasses.field(default_factory=dict)
    lora_rank: int = None


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What `keras_wc.convert` converted and what it skipped, and why.

    Every layer with weights of its own is listed (composite layers are
    represented by the layers inside them); layers without weights
    (activations, pooling, merges) are not. `str(report)` is a table for
    humans.

    Attributes:
        method: `"wc"`, `"pp"` or `"wn"`.
        options: the method's options, defaults filled in.
        entries: one `ReportEntry` per layer with weights, in tree order.
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

    @property
    def kernels(self):
        """How many kernels the listed layers hold."""
        return sum(len(e.kernels) for e in self.entries)

    @property
    def converted_kernels(self):
        """How many kernels were converted."""
        return sum(len(e.kernels) for e in self.converted)

    def __str__(self):
        args = ", ".join(
            f"{k}={_format_option(v)}" for k, v in self.options.items()
        )
        header = (
            f'keras_wc.convert(method="{self.method}", {args}): '
            f"{self.converted_kernels} of {self.kernels} kernel(s) "
            f"converted, in {len(self.converted)} layer(s); "
            f"{len(self.skipped)} layer(s) skipped"
        )
        rows = [("layer", "type", "kernels", "result")] + [
            (
                e.path,
                e.layer_type,
                str(len(e.kernels)),
                (
                    f"-> {e.target.__name__}{_format_scales(e.scales)}"
                    + (
                        f", LoRA rank {e.lora_rank} kept (adapters train, "
                        "the kernel stays frozen)"
                        if e.lora_rank
                        else ""
                    )
                    if e.target
                    else f"skipped: {e.reason}"
                ),
            )
            for e in self.entries
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [header] + [
            f"  {path:<{widths[0]}}  {kind:<{widths[1]}}  "
            f"{kernels:>{widths[2]}}  {result}"
            for path, kind, kernels, result in rows
        ]
        return "\n".join(lines)


def _format_scales(scales):
    if not scales:
        return ""
    return " (" + ", ".join(f"{k}={v:.4g}" for k, v in scales.items()) + ")"


def _format_option(value):
    if isinstance(value, companders_lib.Compander):
        value = companders_lib.serialize(value)
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


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
            if resolved[name] != AUTO:
                resolved[name] = positive_number(name, resolved[name])
        resolved["compander"] = companders_lib.get(resolved["compander"])
        resolved["learnable"] = learnable_mode(resolved["learnable"])
        if resolved["a"] == AUTO and not math.isfinite(
            _bound(resolved["compander"])
        ):
            raise ValueError(
                'a="auto" places each layer\'s largest weight at '
                f"{AUTO_FRACTION:g} of the bound a·sup|f|, which "
                f"{resolved['compander']!r} does not have (it is unbounded). "
                "Give `a` as a number. Received: a='auto', "
                f"compander={resolved['compander']!r}"
            )
    elif method == "pp":
        companders_lib.Powerprop(resolved["alpha"])
    else:
        resolved["init_scale"] = positive_number(
            "init_scale", resolved["init_scale"]
        )
    return resolved


def _bound(compander, a=1.0):
    """sup |Ψ| for scale `a` (`inf` when unbounded or unknown)."""
    if hasattr(compander, "max_magnitude"):
        return compander.max_magnitude(a)
    return math.inf


def _slope_at_zero(compander):
    """f'(0) of a compander `a·f(v/b)`: Ψ'(0) = (a/b)·f'(0)."""
    return float(
        ops.convert_to_numpy(
            companders_lib.derivative(compander, ops.zeros(()), 1.0, 1.0)
        )
    )


def _choose_scales(plan, entries, options):
    """Per-layer `a` and `b` for `a="auto"` / `b="auto"` (see `convert`).

    Returns the plan with each layer's scales and the report entries with
    them. For coarse WC the shared `a` is the largest a layer needs.
    """
    if AUTO not in (options["a"], options["b"]):
        return [(node, cls, {}) for node, cls in plan], entries
    compander = options["compander"]
    largest = {
        id(node.layer): max(
            [float(np.max(np.abs(k))) for k in _kernels(node.layer).values()]
            + [0.0]
        )
        for node, _ in plan
    }
    bound = _bound(compander)
    needed = {
        key: max(m, _TINY) / (AUTO_FRACTION * bound)
        for key, m in largest.items()
    }
    if options["a"] == AUTO and options["learnable"] == "coarse":
        shared_a = max(needed.values(), default=1.0)
        needed = dict.fromkeys(needed, shared_a)
    chosen = {}
    for node, _ in plan:
        a = needed[id(node.layer)] if options["a"] == AUTO else options["a"]
        b = a * _slope_at_zero(compander) if options["b"] == AUTO else None
        scales = {"a": a} if options["a"] == AUTO else {}
        if b is not None:
            scales["b"] = b
        chosen[id(node.layer)] = scales
    by_path = {node.path: chosen[id(node.layer)] for node, _ in plan}
    entries = [
        dataclasses.replace(e, scales=by_path[e.path])
        if e.target is not None
        else e
        for e in entries
    ]
    return [(node, cls, chosen[id(node.layer)]) for node, cls in plan], entries


def _registry(method):
    """Dict from each supported built-in class to its keras_wc class."""
    module, prefix = (
        (wn_layers, "WN") if method == "wn" else (wc_layers, "WC")
    )
    return {
        cls: getattr(module, prefix + cls.__name__) for cls in SUPPORTED_LAYERS
    }


def _with_scales(layer_kwargs, scales):
    if "shared" in layer_kwargs:  # coarse: the scales are the shared pair's
        return layer_kwargs
    return {**layer_kwargs, **scales}


def _layer_kwargs(method, options, plan):
    """The keyword arguments given to every converted layer (per-layer
    scales from `_choose_scales` come on top)."""
    if method == "pp":
        return {"compander": companders_lib.Powerprop(options["alpha"])}
    if method == "wn":
        return {"data_init": False, "init_scale": options["init_scale"]}
    scales = {
        "a": options["a"],
        "b": options["b"],
        "compander": options["compander"],
    }
    if options["learnable"] == "coarse":
        # One pair for the whole model (with "auto", every layer was given
        # the same: the largest a any layer needs).
        chosen = plan[0][2] if plan else {}
        for name in ("a", "b"):
            if scales[name] == AUTO:
                scales[name] = chosen.get(name, 1.0)
        return {"shared": SharedCompander(**scales)}
    return {
        **{k: v for k, v in scales.items() if v != AUTO},
        "learnable": options["learnable"],
    }


def _kernel_names(layer):
    names = {v.name for v in internals.own_variables(kernel_holder(layer))}
    return tuple(name for name in KERNEL_NAMES if name in names)


def _enter(node):
    """Whether `_plan` looks inside a layer: not inside keras_wc layers,
    nor inside a recurrent layer (which stands for its cell)."""
    return not (
        inplace_saving.is_reparameterized(node.layer)
        or type(node.layer) in RECURRENT_LAYERS
        or isinstance(node.layer, SharedCompander)
    )


def _plan(model, registry, select):
    """([(node, keras_wc class)] to convert, [ReportEntry] for all)."""
    plan, entries = [], []
    for node in tree.walk(model, enter=_enter):
        layer = node.layer
        target, reason = _decide(layer, node, registry, select)
        if target is not None:
            plan.append((node, target))
        if target is not None or reason is not None:
            holder = kernel_holder(layer)
            entries.append(
                ReportEntry(
                    node.path,
                    type(layer).__name__,
                    _kernel_names(layer),
                    target,
                    reason,
                    lora_rank=(
                        holder.lora_rank
                        if getattr(holder, "lora_enabled", False)
                        else None
                    ),
                )
            )
    return plan, entries


def _decide(layer, node, registry, select):
    """(target class, None) to convert, (None, reason) or (None, None)."""
    if isinstance(layer, SharedCompander):
        return None, None
    if inplace_saving.is_reparameterized(layer):
        return None, f"already reparameterized ({type(layer).__name__})"
    if type(layer) in registry:
        holder = kernel_holder(layer)
        if getattr(holder, "quantization_mode", None):
            return None, f"quantized ({holder.quantization_mode})"
        if not select(node):
            return None, "not selected by `layers=`"
        return registry[type(layer)], None
    if not internals.own_variables(layer):
        return None, None
    if isinstance(layer, _NORMALIZATION_LAYERS):
        return None, "normalization layer (never reparameterized)"
    if isinstance(layer, keras.layers.Embedding):
        return None, "embedding (a lookup table, not a kernel)"
    parent = next((c for c in SUPPORTED_LAYERS if isinstance(layer, c)), None)
    if parent is not None:
        return None, (
            f"a subclass of {parent.__name__} (it may hold other state; "
            "only the exact Keras class is converted)"
        )
    return None, "not a supported kernel layer"


def _kernels(layer):
    """The layer's kernel variables as float32 numpy arrays, by kernel name
    (without LoRA adapters, which stay adapters of the converted kernel)."""
    return {
        v.name: np.asarray(ops.convert_to_numpy(v), "float32")
        for v in internals.own_variables(kernel_holder(layer))
        if v.name in KERNEL_NAMES
    }


def _check_range(plan, options):
    compander, a = options["compander"], options["a"]
    if a == AUTO or not hasattr(compander, "max_magnitude"):
        return
    bound_per_a = compander.max_magnitude(1.0)
    if not math.isfinite(bound_per_a):
        return
    largest = {}
    for node, *_ in plan:
        kernels = _kernels(node.layer)
        if kernels:
            largest[node.path] = max(
                float(np.max(np.abs(k))) if k.size else 0.0
                for k in kernels.values()
            )
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


def _rebuild_optimizer(model):
    """Makes a compiled model train the new variables: rebuilds an optimizer
    that holds state for the old ones."""
    if not getattr(model, "compiled", False):
        return
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and optimizer.built:
        model.optimizer = type(optimizer).from_config(optimizer.get_config())
