"""The optional packages of keras_wc, each installed by a pip extra.

keras_wc itself needs Keras and NumPy, and the backend the user runs Keras
on. A feature that needs more calls `require` first, before it changes or
writes anything, so that a missing package raises at once with the extra
that installs it (`pip install 'keras-wc[tensorflow]'`, ...; the extras
are in setup.cfg).
"""

import importlib.util


def require(module, extra, feature):
    """Raises `ImportError` unless the top-level `module` can be imported.

    Only looks the module up (it is not imported here: exporting from JAX
    checks for TensorFlow without starting it in this process). Any build
    of the package counts (`tensorflow-cpu` provides `tensorflow`).

    Args:
        module: the import name, e.g. `"tf2onnx"`.
        extra: the keras-wc extra that installs it, e.g. `"onnx"`.
        feature: what needs it, for the message, e.g.
            '`keras_wc.export(format="onnx")`'.
    """
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"{feature} needs the `{module}` package, which is not "
            f"installed: `pip install 'keras-wc[{extra}]'` installs it."
        )
