"""Argument checks shared by the keras_wc layers and functions."""

import math
import os

import numpy as np


def positive_number(name, value, owner=None):
    """Returns `value` as a float, or raises for a non-number or a value that
    is not finite and > 0.

    Args:
        name: the argument's name, for the message.
        value: the value received.
        owner: what received it (e.g. "WCDense 'dense'"), prefixed to the
            message when given.
    """
    prefix = f"{owner}: " if owner else ""
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            f"{prefix}`{name}` must be a positive number. "
            f"Received: {name}={value!r}"
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{prefix}`{name}` must be a finite number > 0. "
            f"Received: {name}={value}"
        )
    return float(value)


# `learnable` has one vocabulary in the layers, `convert` and the CLI.
LEARNABLE_MODES = ("none", "fine", "coarse")
_LEARNABLE_ALIASES = {False: "none", True: "fine"}


def learnable_mode(value, owner=None):
    """Normalizes a `learnable` argument to `"none"`, `"fine"` or `"coarse"`.

    `False` and `"none"` mean fixed `a, b`; `True` and `"fine"` one trainable
    pair per layer; `"coarse"` one pair shared by the whole network (WC
    paper, §III-B). Strings are matched case-insensitively.

    Raises:
        ValueError: any other value, naming it.
    """
    prefix = f"{owner}: " if owner else ""
    if isinstance(value, bool):
        return _LEARNABLE_ALIASES[value]
    if isinstance(value, str) and value.lower() in LEARNABLE_MODES:
        return value.lower()
    raise ValueError(
        f"{prefix}`learnable` must be False/'none', True/'fine' or 'coarse'. "
        f"Received: learnable={value!r}"
    )


def path_argument(name, value):
    """`value` as a non-empty str path, or raises naming the argument."""
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"`{name}` must be a str or path-like. Received: {name}={value!r}"
        )
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise ValueError(
            f"`{name}` must be a non-empty path. Received: {name}={value!r}"
        )
    return path


def nearest_directory(name, path, value):
    """The nearest existing ancestor of `path` (or `path` itself), where a
    directory `path` would be created; `NotADirectoryError` naming the
    argument `name` (received as `value`) if that is a file."""
    ancestor = os.path.abspath(path)
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise NotADirectoryError(
            f"`{name}` needs a directory at {ancestor!r}, which is a file. "
            f"Received: {name}={value!r}"
        )
    return ancestor
