"""`export`: fold a reparameterized model and write it for serving.

The module is `exporting` so that the function can be `keras_wc.export`.
"""

import functools
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import keras
import numpy as np

from keras_wc import backend, internals, tree
from keras_wc.dependencies import require
from keras_wc.folding import fold
from keras_wc.validation import nearest_directory, path_argument

FORMATS = ("tf_saved_model", "onnx", "litert")
# The file formats and the suffix their path must have.
FILE_SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}


def export(model, path, format="tf_saved_model", *, overwrite=False):
    """Folds `model` and writes it for inference without keras_wc.

    Writes two artifacts:

    * `format="tf_saved_model"`: a SavedModel directory at `path` with a
      `serving_default` signature (also reachable as `.serve`) whose inputs
      are named after the model's input layers (the `name` given to
      `keras.Input`), with a free batch dimension, and
      whose outputs are named after the model's output layers. It is what
      `tf.saved_model.load` and TF Serving load; TF Serving expects it in a
      numeric version directory, e.g. `path="serving/my_model/1"`.
    * `format="onnx"`: an ONNX file at `path`, which must end with
      `.onnx`, through Keras's exporter (needs the `tf2onnx` package; run it
      with `onnxruntime`). Inputs are named after the model's inputs.
    * `format="litert"`: a LiteRT (TensorFlow Lite) flat buffer at `path`,
      which must end with `.tflite`, through Keras's exporter (run it with
      LiteRT's or TensorFlow's interpreter).

    and, in every case, the folded Keras model next to it, at `path` with
    its extension replaced by `.keras` (`serving/my_model/1.keras`,
    `model.keras`), loadable with plain `keras.saving.load_model`.

    Every format is written by TensorFlow, which must be installed whatever
    the backend (from JAX and PyTorch, `export` runs it in a
    TensorFlow-backend subprocess).

    The export is all or nothing: both artifacts are written into a
    temporary directory beside `path` and then renamed into place, so a
    failure at any point leaves no partial export and leaves what was at
    `path` before untouched. Missing parent directories are created (and
    removed again if the export fails).

    Args:
        model: a built Sequential or Functional model, reparameterized or
            not (see `keras_wc.fold`).
        path: the SavedModel directory, or the ONNX or LiteRT file, to write
            (a str or path-like naming a new entry, not `""` or `"."`).
        format: `"tf_saved_model"` (default), `"onnx"` or `"litert"`.
        overwrite: whether to replace an existing export. With `False`
            (default) an existing target, i.e. a non-empty directory at
            `path` (SavedModel), a file at `path` (ONNX), or a file at the
            `.keras` path, raises `FileExistsError`; an empty directory at
            a SavedModel `path` is replaced. With `True` the old
            artifacts are replaced only once the new ones are complete.

    Returns:
        The folded model (what was written).

    Raises:
        TypeError, ValueError: as `keras_wc.fold`; for a subclassed or
            unbuilt model, an unknown `format`, an empty `path`, a file
            `path` without the format's suffix or a non-bool `overwrite`.
        FileExistsError: the target exists and `overwrite=False`.
        IsADirectoryError, NotADirectoryError: a directory where a file
            goes (the ONNX file or the `.keras` file) or a file where a
            directory goes (a SavedModel `path`, or a parent of `path`),
            whatever `overwrite`.
        PermissionError: the parent directory of `path` is not writable.
        ImportError: TensorFlow is not installed (`pip install
            'keras-wc[tensorflow]'`), or for `format="onnx"` TensorFlow or
            `tf2onnx` (`pip install 'keras-wc[onnx]'`).

    Every argument and the target are checked before anything is written.

    Example:

    >>> keras_wc.export(model, "serving/classifier/1")  # doctest: +SKIP
    >>> served = tf.saved_model.load("serving/classifier/1")  # doctest: +SKIP
    >>> served.signatures["serving_default"](image=x)  # doctest: +SKIP
    {'logits': <tf.Tensor: shape=(7, 10), ...>}
    """
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(
            f"`format` must be one of {', '.join(map(repr, FORMATS))}. "
            f"Received: format={format!r}"
        )
    if not isinstance(overwrite, bool):
        raise TypeError(
            "`overwrite` must be True or False. "
            f"Received: overwrite={overwrite!r}"
        )
    path = _check_path(path, format)
    _check_model(model)
    modules = _class_modules(model)
    targets = _Targets(path, format)
    targets.check(overwrite)
    # Both formats are written by TensorFlow, from any backend.
    feature = f'`keras_wc.export(format="{format}")`'
    require("tensorflow", "onnx" if format == "onnx" else "tensorflow", feature)
    if format == "onnx":
        require("tf2onnx", "onnx", feature)
    folded = fold(model)
    targets.write(functools.partial(_write, folded, format, modules))
    return folded


# Modules whose classes a fresh process finds by importing keras and
# keras_wc (and keras-hub's, registered on import).
_KNOWN_PACKAGES = ("keras", "keras_wc", "keras_hub", "builtins")


def _class_modules(model):
    """The modules defining the model's own classes, which the TensorFlow
    process that writes the artifact on another backend must import to
    load the model; a class defined in `__main__` cannot be imported there
    nor one defined inside a function: both are refused before anything is
    written."""
    if backend.name() == "tensorflow":
        return ()
    classes = {type(model)} | {type(node.layer) for node in tree.walk(model)}
    modules = {cls.__module__ for cls in classes}
    hidden = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in classes
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__
    )
    if hidden:
        raise ValueError(
            f"`keras_wc.export` on the {backend.name()} backend writes the "
            "artifact in a TensorFlow-backend process, which must import "
            "the model's classes, and cannot import those defined in "
            f"`__main__` or inside a function: {', '.join(hidden)}. Define "
            "them at the top level of a module (or export with "
            "KERAS_BACKEND=tensorflow)."
        )
    return tuple(
        sorted(
            module
            for module in modules
            if module.split(".")[0] not in _KNOWN_PACKAGES
        )
    )


def _write(folded, format, modules, artifact, keras_file):
    folded.save(keras_file)
    if backend.name() == "tensorflow":
        write_artifact(folded, format, artifact)
        return
    # SavedModel and ONNX are TensorFlow's formats: the folded model (plain
    # Keras, whatever backend trained it) is written by a TensorFlow-backend
    # process from the `.keras` file just saved, after importing the
    # modules of the model's own classes from this process's `sys.path`.
    path = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_wc.exporting",
            os.fspath(keras_file),
            os.fspath(artifact),
            format,
            *modules,
        ],
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": path},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"keras_wc.export: writing the {format} artifact with the "
            "TensorFlow backend failed (TensorFlow must be installed to "
            f"export from the {backend.name()} backend):\n"
            f"{result.stderr[-3000:]}"
        )


def write_artifact(folded, format, artifact):
    """Writes the SavedModel or ONNX file of a folded model (TensorFlow
    backend)."""
    symbolic = _has_symbolic_inputs(folded)
    if format == "tf_saved_model" and symbolic:
        _write_saved_model(folded, artifact)
    elif format in ("tf_saved_model", "litert"):
        # Keras's exporter, which reads the signature of a subclassed model
        # from its first call.
        if not symbolic:
            _call_once(folded)
        folded.export(artifact, format=format, verbose=False)
    else:
        # Keras's ONNX exporter only accepts a model that was called once.
        if symbolic:
            folded(_zeros_like_inputs(folded))
        else:
            _call_once(folded)
        with warnings.catch_warnings():
            # Keras's tf2onnx patch probes `np.object`, which NumPy 2 warns
            # about; nothing the user can act on.
            warnings.filterwarnings(
                "ignore", message=".*np.object", category=FutureWarning
            )
            folded.export(
                artifact,
                format="onnx",
                verbose=False,
            )


def _check_model(model):
    """`model` must be a built model; one without symbolic inputs (a
    subclassed model) must have been called, so that Keras knows the
    serving signature from its first call."""
    tree.check_model(model, "export")
    if not _has_symbolic_inputs(model) and not internals.has_been_called(model):
        raise ValueError(
            "`keras_wc.export` needs the serving signature of a subclassed "
            "model from its first call: call it on a batch of inputs first. "
            f"Received: model '{model.name}' ({type(model).__name__}), "
            "never called"
        )


def _has_symbolic_inputs(model):
    """Whether the model has `keras.Input`s (Sequential, Functional and
    their subclasses, such as keras-hub backbones)."""
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _check_path(path, format):
    """`path` as a str, refusing what names no new directory entry and a
    file without its format's suffix."""
    path = path_argument("path", path)
    suffix = FILE_SUFFIXES.get(format)
    if suffix and not path.rstrip(os.sep).endswith(suffix):
        raise ValueError(
            f'`format="{format}"` writes a file whose name ends with '
            f"{suffix!r}, e.g. 'model{suffix}'. Received: path={path!r}"
        )
    if os.path.basename(os.path.normpath(path)) in ("", ".", "..") or (
        "\0" in path
    ):
        raise ValueError(
            "`path` must name the directory or file to create, e.g. "
            f"'serving/model/1' or 'model.onnx'. Received: path={path!r}"
        )
    return path


class _Targets:
    """The two artifacts of an export and their all-or-nothing write."""

    def __init__(self, path, format):
        self.path = path
        self.format = format
        self.artifact = os.path.abspath(path)
        self.keras_file = os.path.abspath(keras_path(path))
        # Both live in one directory: `keras_path` only changes the
        # extension of the last component.
        self.parent = os.path.dirname(self.artifact)

    def _entries(self):
        """(path, the kind that goes there, argument name) per artifact."""
        kind = "directory" if self.format == "tf_saved_model" else "file"
        return [
            (self.artifact, kind, "path"),
            (self.keras_file, "file", "path"),
        ]

    def check(self, overwrite):
        self._check_parent()
        for target, kind, _ in self._entries():
            if not os.path.lexists(target):
                continue
            is_dir = os.path.isdir(target)
            if kind == "file" and is_dir:
                raise IsADirectoryError(
                    f"`export` writes the file {target!r}, which is a "
                    f"directory. Received: path={self.path!r}"
                )
            if kind == "directory" and not is_dir:
                raise NotADirectoryError(
                    f"`export` writes the SavedModel directory {target!r}, "
                    f"which is a file. Received: path={self.path!r}"
                )
            if is_dir and not os.listdir(target):
                continue
            if not overwrite:
                raise FileExistsError(
                    f"`export` would replace the existing {kind} "
                    f"{target!r}. Pass `overwrite=True` to replace it, or "
                    f"choose another path. Received: path={self.path!r}"
                )

    def _check_parent(self):
        """The nearest existing ancestor must be a writable directory."""
        ancestor = nearest_directory("path", self.parent, self.path)
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise PermissionError(
                f"`export` cannot write in the directory {ancestor!r} "
                f"(permission denied). Received: path={self.path!r}"
            )

    def write(self, write):
        """Calls `write(artifact, keras_file)` on temporary paths, then
        renames both into place; on any failure, undoes everything."""
        created = _make_parents(self.parent)
        try:
            staging = tempfile.mkdtemp(
                prefix=f".{os.path.basename(self.artifact)}.export-",
                dir=self.parent,
            )
        except BaseException:
            _remove_empty(created)
            raise
        try:
            name = "model" + FILE_SUFFIXES.get(self.format, "")
            new = {
                self.artifact: os.path.join(staging, name),
                self.keras_file: os.path.join(staging, "model.keras"),
            }
            write(new[self.artifact], new[self.keras_file])
            _move_into_place(new, staging)
        except _Stranded:
            raise  # the staging directory holds the previous export
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            _remove_empty(created)
            raise
        shutil.rmtree(staging, ignore_errors=True)


class _Stranded(OSError):
    """A failed export whose previous artifacts could not be put back."""


def _move_into_place(new, staging):
    """Renames each `new[target]` to `target`, moving what is there into
    `staging` first; all or nothing."""
    moved = []  # (from, to), undone in reverse order on failure
    try:
        for i, (target, source) in enumerate(new.items()):
            if os.path.lexists(target):
                old = os.path.join(staging, f"old-{i}")
                os.rename(target, old)
                moved.append((target, old))
            os.rename(source, target)
            moved.append((source, target))
    except BaseException as error:
        stranded = []
        for source, target in reversed(moved):
            try:
                os.rename(target, source)
            except OSError:
                stranded.append(source)
        if stranded:
            raise _Stranded(
                f"`export` failed ({error}) and could not move back "
                f"{stranded}: the previous artifacts are in {staging!r}."
            ) from error
        raise


def _make_parents(directory):
    """Creates `directory` and its missing parents; returns those created,
    deepest first."""
    missing = []
    while not os.path.lexists(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    created = []
    try:
        for path in reversed(missing):
            os.mkdir(path)
            created.insert(0, path)
    except BaseException:
        _remove_empty(created)
        raise
    return created


def _remove_empty(directories):
    for directory in directories:
        try:
            os.rmdir(directory)
        except OSError:
            return


def keras_path(path):
    """Where `export` writes the folded `.keras` model for `path`."""
    root, extension = os.path.splitext(os.fspath(path).rstrip(os.sep))
    files = FILE_SUFFIXES.values()
    return (root if extension in files else root + extension) + ".keras"


def _write_saved_model(model, path):
    import tensorflow as tf

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


def _call_once(model):
    """Calls a built subclassed model (the folded copy may never have been
    called) on zeros of its build shape, batch size 1."""
    if internals.has_been_called(model):
        return
    shapes = model.get_build_config()["input_shape"]
    model(
        keras.tree.map_shape_structure(
            lambda shape: np.zeros(
                [1 if d is None else d for d in shape], "float32"
            ),
            shapes,
        )
    )


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


def _main(argv):
    """`python -m keras_wc.exporting KERAS_FILE ARTIFACT FORMAT [MODULE...]`:
    imports the modules that define the model's classes, then writes the
    artifact of a saved folded model (how other backends export)."""
    keras_file, artifact, format, *modules = argv
    for module in modules:
        importlib.import_module(module)
    write_artifact(keras.saving.load_model(keras_file), format, artifact)


if __name__ == "__main__":
    _main(sys.argv[1:])
