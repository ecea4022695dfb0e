"""File-system checks of the path flags, made before anything is written.

Each check raises `ConfigError` with a one-line message naming the flag and
the path, and reads the file system only: a bad path is reported before a
run (or a report) has created or changed any file or directory.
"""

import os

from train.config import ConfigError


def check_output_dir(flag, path):
    """`path` is a directory that exists or can be created, and writable.

    Raises:
        ConfigError: `path` is empty, is a file, lies under a file, or its
            nearest existing directory is not writable.
    """
    _check_not_empty(flag, path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag} {path} exists and is not a directory")
    _check_writable(flag, path, _nearest_existing(path))


def check_output_file(flag, path):
    """`path` is a file that can be written: not a directory, in an existing,
    writable directory.

    Raises:
        ConfigError: otherwise.
    """
    _check_not_empty(flag, path)
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"{flag} {path}: directory {parent} does not exist")
    _check_writable(flag, path, path if os.path.exists(path) else parent)


def check_input_dir(flag, path):
    """`path` is an existing directory.

    Raises:
        ConfigError: `path` is empty, missing or not a directory.
    """
    _check_not_empty(flag, path)
    if not os.path.exists(path):
        raise ConfigError(f"{flag} {path} does not exist")
    if not os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is not a directory")


def _check_not_empty(flag, path):
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ConfigError(f"{flag} must be a non-empty path, got {path!r}")


def _nearest_existing(path):
    """The nearest existing ancestor of `path` (or `path` itself)."""
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        current = os.path.dirname(current)
    return current


def _check_writable(flag, path, existing):
    """`existing` is `path` itself or its nearest existing ancestor."""
    itself = os.path.abspath(existing) == os.path.abspath(path)
    if not itself and not os.path.isdir(existing):
        raise ConfigError(f"{flag} {path}: {existing} is not a directory")
    mode = os.W_OK | os.X_OK if os.path.isdir(existing) else os.W_OK
    if not os.access(existing, mode):
        where = "" if itself else f" ({existing})"
        raise ConfigError(f"{flag} {path} is not writable{where}")


def check_input_file(flag, path):
    """`path` is an existing, readable file.

    Raises:
        ConfigError: `path` is empty, missing, a directory or unreadable.
    """
    _check_not_empty(flag, path)
    if not os.path.exists(path):
        raise ConfigError(f"{flag} {path} does not exist")
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a directory")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{flag} {path} is not readable")


def check_config(config):
    """The paths of a resolved `Config`: `--out` (or its default) can be
    written, `--data-dir` (when given) is a directory, `--init-from` (when
    given) names a readable file for every seed.

    Raises:
        ConfigError: the first bad path.
    """
    # Imported here: train.config imports nothing of this module.
    from train.config import init_path

    check_output_dir("--out", config.output_dir())
    if config.data_dir is not None:
        check_input_dir("--data-dir", config.data_dir)
    if config.init_from is not None:
        for seed in range(config.seeds):
            check_input_file("--init-from", init_path(config, seed))
