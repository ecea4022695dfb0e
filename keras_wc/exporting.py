"""`export`: fold a reparameterized model and write it for serving.

The module is `exporting` so that the function can be `keras_wc.export`.
"""

import importlib.util
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_wc.conversion import check_graph_model
from keras_wc.folding import fold

FORMATS = ("tf_saved_model", "onnx")


def export(model, path, format="tf_saved_model"):
    """Folds `model` and writes it for inference without keras_wc.

    Writes two artifacts:

    * `format="tf_saved_model"`: a SavedModel directory at `path` with a
      `serving_default` signature (also reachable as `.serve`) whose inputs
      are named after the model's input layers (the `name` given to
      `keras.Input`), with a free batch dimension, and
      whose outputs are named after the model's output layers. It is what
      `tf.saved_model.load` and TF Serving load; TF Serving expects it in a
      numeric version directory, e.g. `path="serving/my_model/1"`.
    * `format="onnx"`: an ONNX file at `path` (e.g. `"model.onnx"`), through
      Keras's exporter (needs the `tf2onnx` package; run it with
      `onnxruntime`). Inputs are named after the model's inputs.

    and, in both cases, the folded Keras model next to it, at `path` with its
    extension replaced by `.keras` (`serving/my_model/1.keras`,
    `model.keras`), loadable with plain `keras.saving.load_model`.

    Args:
        model: a built Sequential or Functional model, reparameterized or
            not (see `keras_wc.fold`).
        path: the SavedModel directory or the ONNX file to write.
        format: `"tf_saved_model"` (default) or `"onnx"`.

    Returns:
        The folded model (what was written).

    Raises:
        TypeError, ValueError: as `keras_wc.fold`, or for an unknown format.
        ImportError: `format="onnx"` without `tf2onnx` installed.

    Example:

    >>> keras_wc.export(model, "serving/classifier/1")  # doctest: +SKIP
    >>> served = tf.saved_model.load("serving/classifier/1")  # doctest: +SKIP
    >>> served.signatures["serving_default"](image=x)  # doctest: +SKIP
    {'logits': <tf.Tensor: shape=(7, 10), ...>}
    """
    if format not in FORMATS:
        raise ValueError(
            f"`format` must be one of {', '.join(map(repr, FORMATS))}. "
            f"Received: format={format!r}"
        )
    if format == "onnx" and importlib.util.find_spec("tf2onnx") is None:
        raise ImportError(
            '`format="onnx"` needs the `tf2onnx` package: '
            "`pip install tf2onnx onnxruntime`."
        )
    check_graph_model(model, "export")
    path = os.fspath(path)
    folded = fold(model)
    if format == "tf_saved_model":
        _write_saved_model(folded, path)
    else:
        # Keras's ONNX exporter only accepts a model that was called once.
        folded(_zeros_like_inputs(folded))
        with warnings.catch_warnings():
            # Keras's tf2onnx patch probes `np.object`, which NumPy 2 warns
            # about; nothing the user can act on.
            warnings.filterwarnings(
                "ignore", message=".*np.object", category=FutureWarning
            )
            folded.export(path, format="onnx", verbose=False)
    folded.save(keras_path(path))
    return folded


def keras_path(path):
    """Where `export` writes the folded `.keras` model for `path`."""
    root, extension = os.path.splitext(os.fspath(path).rstrip(os.sep))
    return (root if extension == ".onnx" else root + extension) + ".keras"


def _write_saved_model(model, path):
    inputs = model.inputs
    specs = [
        tf.TensorSpec((None, *x.shape[1:]), x.dtype, name=x.name)
        for x in inputs
    ]
    output_names = _output_names(model)

    def serve(*tensors):
        outputs = model(_pack_inputs(model, tensors), training=False)
        if isinstance(outputs, dict):
            return dict(outputs)
        return dict(zip(output_names, keras.tree.flatten(outputs), strict=True))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=specs)
    archive.write_out(path, verbose=False)


def _zeros_like_inputs(model):
    zeros = [np.zeros((1, *x.shape[1:]), x.dtype) for x in model.inputs]
    return _pack_inputs(model, zeros)


def _pack_inputs(model, flat):
    """The flat inputs in the structure the model is called with."""
    if isinstance(model, keras.Sequential):
        return flat[0]
    return keras.tree.pack_sequence_as(model.input, list(flat))


def _output_names(model):
    if isinstance(model, keras.Sequential):
        return [model.layers[-1].name]
    names = list(model.output_names)
    if len(set(names)) != len(names):
        return [f"output_{i}" for i in range(len(names))]
    return names
