"""Keras callbacks: the weight-distribution recorder of the WC paper §IV-D.

`WeightDistribution` records, before training and after every epoch, the
percentiles of the *effective* weights of each kernel layer (`Ψ(v)` for WC
and PP layers, `g·v/‖v‖` for WN layers, the kernel itself for plain Keras
layers) and, for learnable WC, every layer's `a` and `b`. It plots them as
the paper's Fig. 3/4: one line per percentile over the epochs. The layers
are those of the model's whole layer tree (`keras_wc.tree`), as
`keras_wc.convert` sees them.
"""

import collections
import dataclasses
import json
import os
import uuid

import keras
import numpy as np

from keras_wc import internals, tree
from keras_wc.dependencies import require
from keras_wc.layers.recurrent import kernel_holder
from keras_wc.layers.reparameterized import KERNEL_NAMES, ReparameterizedLayer
from keras_wc.validation import nearest_directory, path_argument

# The paper's Fig. 3/4 lines, top to bottom: max, 93%, ..., 7%, min.
PAPER_PERCENTILES = (100, 93, 84, 69, 50, 31, 16, 7, 0)


def _enter(node):
    # A recurrent layer stands for its cell, as in `keras_wc.convert`.
    return kernel_holder(node.layer) is node.layer


def _kernels(layer):
    """`layer`'s own kernels (tensors or variables), by kernel name."""
    if isinstance(layer, ReparameterizedLayer):
        return layer.effective_kernels()
    own = {variable.name for variable in internals.own_variables(layer)}
    kernels = {}
    for name in KERNEL_NAMES:
        value = getattr(layer, name, None)
        # A variable, or the kernel the layer computes from its own variable
        # of that name (a LoRA-enabled layer's, its adapters merged).
        if isinstance(value, keras.Variable) or (
            name in own and keras.ops.is_tensor(value)
        ):
            kernels[name] = value
    return kernels


def _has_kernels(layer):
    """Whether `_kernels(layer)` is not empty, without computing a keras_wc
    layer's effective kernels."""
    if isinstance(layer, ReparameterizedLayer):
        return bool(layer._raw_kernels)
    return bool(_kernels(layer))


def _as_numpy(kernels):
    return {
        name: np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32)
        for name, value in kernels.items()
    }


def effective_kernels(layer):
    """Dict kernel name → float32 numpy array of `layer`'s effective kernels.

    A keras_wc layer gives `layer.effective_kernels()`; a plain layer its
    own `kernel`, `depthwise_kernel`, `pointwise_kernel` and
    `recurrent_kernel` (LoRA adapters merged); a recurrent layer (`LSTM`,
    `WCLSTM`, ...) its cell's; a layer without kernels of its own an empty
    dict (a composite layer's or a model's are those of the layers inside
    it: see `WeightDistribution`).
    """
    return _as_numpy(_kernels(kernel_holder(layer)))


@dataclasses.dataclass(frozen=True)
class _KernelLayer:
    """A layer with kernels below the recorded model.

    Attributes:
        node: its `keras_wc.tree.Node`.
        key: its series key: its name, or its path where several kernel
            layers of the model share the name.
        holder: the layer holding its kernels (a recurrent layer's cell).
    """

    node: tree.Node
    key: str
    holder: object


def _kernel_layers(model):
    """A `_KernelLayer` for every layer with kernels below `model`, in tree
    order."""
    found = []
    for node in tree.walk(model, enter=_enter):
        holder = kernel_holder(node.layer)
        if _has_kernels(holder):
            found.append((node, holder))
    names = collections.Counter(node.layer.name for node, _ in found)
    return [
        _KernelLayer(
            node,
            node.layer.name if names[node.layer.name] == 1 else node.path,
            holder,
        )
        for node, holder in found
    ]


def _learnable_scales(layer):
    if getattr(layer, "is_learnable", False):
        return float(keras.ops.convert_to_numpy(layer.a)), float(
            keras.ops.convert_to_numpy(layer.b)
        )
    return None


class WeightDistribution(keras.callbacks.Callback):
    """Records per-epoch percentiles of the effective weights of each layer.

    At the beginning of training (epoch 0, before any update) and after
    every epoch `e` (recorded as epoch `e + 1`), for each selected layer and
    each of its kernels, the `percentiles` of all its effective weights
    (`numpy.percentile`, linear interpolation); for learnable WC layers
    (fine or coarse) also the current `a` and `b`. When `fit` resumes at
    `initial_epoch = k` (e.g. under `BackupAndRestore`) after `load`, the
    records past `k` are dropped and recording continues from `k`.

    Every layer with kernels at any depth of the model's layer tree is
    recorded (`keras_wc.tree`, as `keras_wc.convert` walks it): inside
    nested models, composite layers (the projections of
    `MultiHeadAttention`, keras-hub's `TransformerEncoder`), wrappers,
    subclassed models; a recurrent layer (`LSTM`, `WCLSTM`, ...) for its
    cell. So a plain model and its `convert`ed form record the same series.
    Each series is keyed by the layer's name, or by its path
    (`"bert_backbone/transformer_layer_0/self_attention_layer/query"`)
    where several kernel layers of the model share that name.

    Args:
        layers: which layers to record, as `keras_wc.convert` selects them:
            `None` (every layer with a kernel), a layer name or path
            (`"encoder/conv1"`), a layer class, a list of names and classes,
            or a predicate `fn(layer) -> bool`. A name or class also selects
            every layer below the layers it matches
            (`layers="transformer_layer_0"`,
            `layers=keras.layers.MultiHeadAttention`); each must select at
            least one layer with a kernel.
        percentiles: the percentiles (0–100) recorded, by default the
            paper's max, 93, 84, 69, 50, 31, 16, 7, min.
        log_dir: if given, also write every value as a TensorBoard scalar
            (`weights/<layer>/<kernel>/p<q>`, `scales/<layer>/a`) there: a
            directory, created if missing (a file there, or above it,
            raises `NotADirectoryError` here rather than during `fit`).
            TensorFlow writes them, on any backend (`pip install
            'keras-wc[tensorflow]'`).

    Attributes:
        epochs: the epochs recorded, e.g. `[0, 1, 2]`.
        percentiles: per series key (the layer's key, `"layer"`, or
            `"layer/depthwise_kernel"` for a layer's other kernels) a list,
            per recorded epoch, of the percentile values.
        scales: per learnable layer (by its key), `{"a": [...], "b": [...]}`
            per epoch.

    Example:

    >>> recorder = keras_wc.callbacks.WeightDistribution()
    >>> model.fit(x, y, epochs=10, callbacks=[recorder])
    >>> recorder.save("weights.json")
    >>> recorder.plot("weights.png", layer="conv1")   # Fig. 3/4
    >>> recorder.plot_scales("scales.png")            # learnable a, b
    """

    def __init__(
        self, layers=None, percentiles=PAPER_PERCENTILES, log_dir=None
    ):
        super().__init__()
        if not (layers is None or tree.is_selection(layers)):
            raise TypeError(
                f"`layers` must be None, {tree.SELECTION}. "
                f"Received: layers={layers!r}"
            )
        if tree.selection_items(layers) == ():
            raise ValueError(
                "`layers` must name at least one layer (None records every "
                f"kernel layer). Received: layers={layers!r}"
            )
        percentiles = _percentile_levels(percentiles)
        if log_dir is not None:
            log_dir = _checked_path("log_dir", log_dir, directory=True)
            require(
                "tensorflow", "tensorflow", "`WeightDistribution(log_dir=...)`"
            )
        self.layers = layers
        self.percentile_levels = percentiles
        self.log_dir = log_dir
        self.epochs = []
        self.percentiles = {}
        self.scales = {}
        self._writer = None

    @property
    def layer_names(self):
        """The series keys recorded (one per layer kernel)."""
        return list(self.percentiles)

    @property
    def scale_names(self):
        """The learnable layers whose `a`, `b` are recorded."""
        return list(self.scales)

    def _selected(self):
        """The `_KernelLayer`s that `layers` selects."""
        if self.model is None:
            raise ValueError(
                "WeightDistribution has no model: pass it to `fit`, or call "
                "`set_model(model)` first."
            )
        found = _kernel_layers(self.model)
        missing = [
            item if isinstance(item, str) else item.__name__
            for item in tree.selection_items(self.layers) or ()
            if not any(tree.selects(item, layer.node) for layer in found)
        ]
        if missing:
            keys = [layer.key for layer in found]
            shown = ", ".join(keys[:40]) + (", ..." if len(keys) > 40 else "")
            raise ValueError(
                f"`layers` {missing} name no kernel layer of model "
                f"'{self.model.name}'. Its kernel layers: {shown}"
            )
        select = tree.selector(self.layers, self.model)
        return [layer for layer in found if select(layer.node)]

    def record(self, epoch):
        """Records the model's current weights as epoch `epoch`."""
        if self.epochs and epoch <= self.epochs[-1]:
            self._truncate(epoch)
        row = len(self.epochs)
        self.epochs.append(int(epoch))
        for layer in self._selected():
            for name, kernel in _as_numpy(_kernels(layer.holder)).items():
                key = layer.key if name == "kernel" else f"{layer.key}/{name}"
                values = np.percentile(
                    kernel.reshape(-1), self.percentile_levels
                ).tolist()
                series = self.percentiles.setdefault(key, [])
                series.extend([None] * (row - len(series)))
                series.append(values)
            scales = _learnable_scales(layer.holder)
            if scales is not None:
                entry = self.scales.setdefault(layer.key, {"a": [], "b": []})
                for key, value in zip(("a", "b"), scales, strict=True):
                    entry[key].extend([None] * (row - len(entry[key])))
                    entry[key].append(value)
        self._write_summaries(row)

    def _truncate(self, epoch):
        """Drops the records of `epoch` and later."""
        keep = sum(1 for e in self.epochs if e < epoch)
        self.epochs = self.epochs[:keep]
        for key in self.percentiles:
            self.percentiles[key] = self.percentiles[key][:keep]
        for entry in self.scales.values():
            entry["a"] = entry["a"][:keep]
            entry["b"] = entry["b"][:keep]

    def _write_summaries(self, row):
        if self.log_dir is None:
            return
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        step = self.epochs[row]
        with self._writer.as_default():
            for key, series in self.percentiles.items():
                if len(series) <= row:
                    continue
                for q, value in zip(
                    self.percentile_levels, series[row], strict=True
                ):
                    tf.summary.scalar(f"weights/{key}/p{q:g}", value, step)
            for name, entry in self.scales.items():
                if len(entry["a"]) > row:
                    tf.summary.scalar(f"scales/{name}/a", entry["a"][row], step)
                    tf.summary.scalar(f"scales/{name}/b", entry["b"][row], step)
        self._writer.flush()

    def on_epoch_begin(self, epoch, logs=None):
        if epoch not in self.epochs or epoch != self.epochs[-1]:
            self.record(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.record(epoch + 1)

    def to_dict(self):
        """The records as a JSON-ready dict (what `save` writes)."""
        return {
            "percentile_levels": list(self.percentile_levels),
            "epochs": list(self.epochs),
            "percentiles": self.percentiles,
            "scales": self.scales,
        }

    def save(self, path):
        """Writes the records to the JSON file `path` (atomically: a
        temporary file beside it, then renamed)."""
        path = _checked_path("path", path)
        text = json.dumps(self.to_dict())
        _write_atomically(path, lambda file: file.write(text.encode()))

    def load(self, path):
        """Reads records written by `save` (to continue a resumed run).

        The file is checked entirely before the recorder changes.
        """
        path = _checked_path("path", path, exists=True)
        try:
            with open(path) as file:
                content = json.load(file)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"`path` must be a JSON file written by "
                f"`WeightDistribution.save` ({error}). Received: path={path!r}"
            ) from error
        _check_records(content, path)
        if tuple(content["percentile_levels"]) != self.percentile_levels:
            raise ValueError(
                f"{path} holds percentiles {content['percentile_levels']}, "
                f"this recorder records {list(self.percentile_levels)}."
            )
        self.epochs = content["epochs"]
        self.percentiles = content["percentiles"]
        self.scales = content["scales"]

    def plot(self, path, layer=None):
        """Plots one layer's percentiles over epochs (paper Fig. 3/4).

        Args:
            path: the image file to write (atomically), in the format its
                extension names (`.png` when it has none; `.svg`, `.pdf`,
                ... as matplotlib supports: `pip install 'keras-wc[plot]'`).
            layer: a series key from `layer_names`; default the first (the
                first convolution, as in the paper's figures).
        """
        path, image_format = _image_path(path)
        if not self.layer_names:
            raise ValueError("Nothing recorded yet: train with the callback.")
        layer = self.layer_names[0] if layer is None else layer
        if layer not in self.percentiles:
            raise ValueError(
                f"`layer` must be one of {self.layer_names}. "
                f"Received: layer={layer!r}"
            )
        values = np.array(
            [
                [np.nan] * len(self.percentile_levels) if row is None else row
                for row in self.percentiles[layer]
            ],
            dtype=np.float64,
        )
        figure, axes = _figure(6, 4)
        colors = _colors(len(self.percentile_levels))
        for i, q in enumerate(self.percentile_levels):
            label = {100: "max", 0: "min"}.get(q, f"{q:g}%")
            axes.plot(self.epochs, values[:, i], color=colors[i], label=label)
        axes.set_xlabel("epoch")
        axes.set_ylabel("weight")
        axes.set_title(f"Weight distribution of {layer}")
        axes.legend(
            fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5)
        )
        _save_figure(figure, path, image_format)

    def plot_scales(self, path):
        """Plots every learnable layer's `a` and `b` over epochs (§IV-E)."""
        path, image_format = _image_path(path)
        if not self.scales:
            raise ValueError(
                "No learnable a, b recorded: the model has no learnable WC "
                "layer."
            )
        figure, (axis_a, axis_b) = _figure(10, 4, columns=2)
        for name, entry in self.scales.items():
            epochs = self.epochs[-len(entry["a"]) :]
            axis_a.plot(epochs, entry["a"], label=name)
            axis_b.plot(epochs, entry["b"], label=name)
        for axis, key in ((axis_a, "a"), (axis_b, "b")):
            axis.set_xlabel("epoch")
            axis.set_ylabel(key)
            axis.set_title(f"learnable {key} per layer")
        if len(self.scales) <= 12:
            axis_b.legend(
                fontsize="x-small", loc="center left", bbox_to_anchor=(1, 0.5)
            )
        _save_figure(figure, path, image_format)


def _percentile_levels(percentiles):
    """`percentiles` as a tuple of numbers in [0, 100], or raises."""
    wanted = "a non-empty sequence of numbers in [0, 100]"
    if isinstance(percentiles, (str, bytes)) or not hasattr(
        percentiles, "__iter__"
    ):
        raise TypeError(
            f"`percentiles` must be {wanted}. "
            f"Received: percentiles={percentiles!r}"
        )
    levels = tuple(percentiles)
    if not levels or any(
        isinstance(q, (bool, np.bool_))
        or not isinstance(q, (int, float, np.integer, np.floating))
        or not 0 <= q <= 100
        for q in levels
    ):
        raise ValueError(
            f"`percentiles` must be {wanted}. "
            f"Received: percentiles={percentiles!r}"
        )
    return tuple(q.item() if isinstance(q, np.generic) else q for q in levels)


def _checked_path(name, path, directory=False, exists=False):
    """`path` (argument `name`) as a str, or raises naming it.

    A file to write (`directory=False`) must not be a directory, and its
    directory must exist; a directory to create (`directory=True`) must not
    be a file, nor lie below one. `exists=True`: a file to read.
    """
    path = path_argument(name, path)
    if exists:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"`{name}` must be an existing file. Received: {name}={path!r}"
            )
        return path
    if directory:
        nearest_directory(name, path, path)
        return path
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"`{name}` must be a file, not a directory. "
            f"Received: {name}={path!r}"
        )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"`{name}` must be in an existing directory: {parent!r} is "
            f"missing or not a directory. Received: {name}={path!r}"
        )
    return path


def _check_records(content, path):
    """Raises unless `content` has the layout `to_dict` writes."""
    layout = {
        "percentile_levels": list,
        "epochs": list,
        "percentiles": dict,
        "scales": dict,
    }
    bad = [
        key
        for key, kind in layout.items()
        if not isinstance(content, dict)
        or not isinstance(content.get(key), kind)
    ]
    if bad:
        raise ValueError(
            f"`path` must be a JSON file written by `WeightDistribution."
            f"save`; {path!r} lacks or has malformed {bad}. "
            f"Received: path={path!r}"
        )


def _write_atomically(path, write):
    """Calls `write(file)` on a temporary file beside `path`, then renames
    it to `path`; on failure nothing is left behind."""
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        # "x": a new file with the usual permissions (mkstemp's are 0600).
        with open(temporary, "xb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _image_path(path):
    """(the checked `path`, its image format from the extension)."""
    require("matplotlib", "plot", "Plotting a `WeightDistribution`")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = _checked_path("path", path)
    extension = os.path.splitext(path)[1][1:].lower() or "png"
    supported = FigureCanvasAgg.get_supported_filetypes()
    if extension not in supported:
        raise ValueError(
            f"`path` must end in one of {sorted(supported)} (the image "
            f"format). Received: path={path!r}"
        )
    return path, extension


def _save_figure(figure, path, image_format):
    figure.tight_layout()
    _write_atomically(
        path, lambda file: figure.savefig(file, format=image_format, dpi=120)
    )


def _figure(width, height, columns=1):
    """A matplotlib figure drawn with Agg, without touching pyplot's state
    (so the user's own backend and figures are left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns)
    for axis in axes if columns > 1 else [axes]:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure, axes


def _colors(count):
    import matplotlib

    return matplotlib.colormaps["viridis"](np.linspace(0, 0.9, count))


__all__ = ["PAPER_PERCENTILES", "WeightDistribution", "effective_kernels"]
