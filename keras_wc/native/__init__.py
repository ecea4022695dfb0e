"""Fused C kernels for the lean training step on the PyTorch backend.

PyTorch without `torch.compile` runs one kernel per op, each a pass over a
kernel's weights, and its CPU `atan` and `pow` are slow. For the `arctan`
compander and powerpropagation with an integer α in [1, 7] these kernels
do each step of training in one pass (`kernels.c`): Ψ(v) with Eq. 5's
penalty Σ Ψ(v)², the backward pass (∂L/∂Ψ(v) + 2λ·g_p·Ψ(v))·Ψ'(v), the
sums of learnable a, b's gradients, ∂L/∂Ψ(v) for the modified optimizers,
and the modified Adam's step on ∂L/∂Ψ(v) scaled by Ψ'(v).

The library is a plain C library loaded with ctypes. keras-wc's Linux
x86-64 wheels (manylinux) carry it built; the pure-Python wheel, which pip
takes on other platforms, does not; an install from source builds it
(`setup.py`, as an optional extension: without a C compiler the install
still succeeds, without it). Where it is missing, or for any other
compander, dtype, device or backend, the layers take their `keras.ops`
path, the one the tests compare these kernels with (`keras_wc.lean`).
`available()` says whether it loads and `why_unavailable()` why not; on
PyTorch, the first step that would have run the kernels warns once. They
are also off inside `disabled()` and with the environment variable
`KERAS_WC_NATIVE=0` (which also builds a wheel without them).

Example:

>>> keras_wc.native.available()  # the library is built and loads
True
"""

import contextlib
import contextvars
import ctypes
import os
import warnings

import keras

from keras_wc import internals

_ABI_VERSION = 2
_DISABLED = contextvars.ContextVar("keras_wc_native_disabled", default=False)

_P = ctypes.c_void_p
_N = ctypes.c_int64
_F = ctypes.c_float
_I = ctypes.c_int
# Every kernel takes the compander first: (kind, alpha, a, b).
_COMPANDER = [_I, _I, _F, _F]
_SIGNATURES = {
    "kwc_forward": (_COMPANDER + [_P, _P, _N, _I, _I], ctypes.c_double),
    "kwc_backward": (_COMPANDER + [_P, _P, _P, _N, _F, _I], None),
    "kwc_learnable_backward": (
        _COMPANDER
        + [_P, _P, _P, _N, _I, ctypes.POINTER(ctypes.c_double), _I],
        None,
    ),
    "kwc_effective_gradient": (_COMPANDER + [_P, _P, _P, _N, _I], None),
    "kwc_adam": (
        _COMPANDER + [_P, _P, _P, _P, _N, _F, _F, _F, _F, _F, _I],
        None,
    ),
}
_ARCTAN, _POWERPROP = 0, 1


def _library_path():
    # The one name setup.py gives it, for every Python (a library under
    # another name is a stale build).
    path = os.path.join(os.path.dirname(__file__), "_kernels.so")
    return path if os.path.exists(path) else None


_REBUILD = (
    "To build them, install keras-wc from its source distribution on a "
    "machine with a C compiler (`pip install --force-reinstall --no-deps "
    "--no-binary keras-wc keras-wc`; in a checkout: `python setup.py "
    "build_ext --inplace`)."
)


def _load():
    """(the library or None, why it is None)."""
    path = _library_path()
    if path is None:
        return None, (
            "this installation has no compiled kernels: it is the pure-Python "
            "wheel (the one pip takes where no wheel with the kernels fits "
            "the platform) or was built from source without a C compiler. "
            + _REBUILD
        )
    try:
        library = ctypes.CDLL(path)
        found = library.kwc_abi_version()
        if found != _ABI_VERSION:
            return None, (
                f"{path} was built from another version of keras-wc (its "
                f"interface is version {found}, this keras-wc needs "
                f"{_ABI_VERSION}). " + _REBUILD
            )
        for name, (argtypes, restype) in _SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes = argtypes
            function.restype = restype
    except (OSError, AttributeError) as error:
        return None, f"{path} does not load ({error}). " + _REBUILD
    return library, None


_LIBRARY, _UNAVAILABLE = _load()
_warned = False


def available():
    """Whether the kernels' library was built and loads (whatever the
    backend; they run on PyTorch only). `why_unavailable()` says why not."""
    return _LIBRARY is not None


def why_unavailable():
    """Why the kernels' library is missing or does not load, and how to
    build it; None where it loads.

    On the PyTorch backend, the first step that would have run them warns
    once with this reason (`KERAS_WC_NATIVE=0` takes the `keras.ops` path
    without the warning).
    """
    return _UNAVAILABLE


def _warn_unavailable():
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        "keras_wc's fused C kernels for the PyTorch backend are not "
        f"available: {_UNAVAILABLE} Training takes the `keras.ops` path "
        "instead (the same results, slower: see `keras_wc.native`); "
        "KERAS_WC_NATIVE=0 chooses that path without this warning.",
        stacklevel=2,
    )


@contextlib.contextmanager
def disabled():
    """Context in which the layers and optimizers take their `keras.ops`
    path instead of these kernels (steps traced before keep theirs)."""
    token = _DISABLED.set(True)
    try:
        yield
    finally:
        _DISABLED.reset(token)


def usable(*tensors):
    """Whether the kernels run on `tensors` here: the library loads, the
    backend is PyTorch, each tensor is a float32 CPU tensor holding values
    (not a shape-only tensor of Keras's tracing, nor traced by
    `torch.compile`, which fuses by itself), outside `disabled()` and
    `KERAS_WC_NATIVE=0`. Where only the library is missing, warns once
    (`why_unavailable()`)."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    # First, so that torch.compile traces no Python state (it would break
    # its graph on the context variable and the environment).
    if torch.compiler.is_compiling():
        return False
    if _DISABLED.get() or os.environ.get("KERAS_WC_NATIVE", "1") == "0":
        return False
    if not all(
        isinstance(t, torch.Tensor)
        and not internals.is_fake_tensor(t)
        and t.device.type == "cpu"
        and t.dtype == torch.float32
        for t in tensors
    ):
        return False
    if _LIBRARY is None:
        _warn_unavailable()
        return False
    return True


def kind(compander):
    """The kernels' name for `compander`, or None where they do not
    compute it: `arctan`, and `powerprop` with an integer α in [1, 7]."""
    from keras_wc import companders

    if type(compander) is companders.Arctan:
        return (_ARCTAN, 1)
    if (
        type(compander) is companders.Powerprop
        and compander.alpha == int(compander.alpha)
        and 1 <= compander.alpha <= 7
    ):
        return (_POWERPROP, int(compander.alpha))
    return None


def _threads():
    import torch

    return torch.get_num_threads()


def _contiguous(tensor):
    import torch

    return tensor.detach().to(torch.float32).contiguous()


def forward(kind, a, b, v, penalty):
    """(Ψ(v) = a·f(v/b), Σ Ψ(v)² as a 0-d tensor or None) for the `kind`
    of compander (`kind(compander)`)."""
    import torch

    v = _contiguous(v)
    w = torch.empty_like(v)
    total = _LIBRARY.kwc_forward(
        *kind, a, b, v.data_ptr(), w.data_ptr(), v.numel(), int(penalty),
        _threads(),
    )
    return w, (torch.tensor(total, dtype=torch.float32) if penalty else None)


def backward(kind, a, b, upstream, v, penalty=0.0):
    """(upstream + penalty·Ψ(v))·Ψ'(v) (Eq. 3; penalty = 2λ·g_p for Eq. 5's
    penalty)."""
    import torch

    upstream, v = _contiguous(upstream), _contiguous(v)
    out = torch.empty_like(v)
    _LIBRARY.kwc_backward(
        *kind, a, b, upstream.data_ptr(), v.data_ptr(), out.data_ptr(),
        v.numel(), penalty, _threads(),
    )
    return out


def learnable_backward(kind, a, b, upstream, v, want_a):
    """(upstream·Ψ'(v), Σ upstream·f(v/b) if `want_a` else 0,
    Σ upstream·Ψ'(v)·v), the sums as Python floats."""
    import torch

    upstream, v = _contiguous(upstream), _contiguous(v)
    out = torch.empty_like(v)
    sums = (ctypes.c_double * 2)()
    _LIBRARY.kwc_learnable_backward(
        *kind, a, b, upstream.data_ptr(), v.data_ptr(), out.data_ptr(),
        v.numel(), int(want_a), sums, _threads(),
    )
    return out, sums[0], sums[1]


def effective_gradient(kind, a, b, gradient, v):
    """∂L/∂Ψ(v) = ∂L/∂v / Ψ'(v), 0 where Ψ'(v) = 0."""
    import torch

    gradient, v = _contiguous(gradient), _contiguous(v)
    out = torch.empty_like(v)
    _LIBRARY.kwc_effective_gradient(
        *kind, a, b, gradient.data_ptr(), v.data_ptr(), out.data_ptr(),
        v.numel(), _threads(),
    )
    return out


def adam(kind, a, b, gradient, v, m, s, beta_1, beta_2, step_size, epsilon,
         decay):
    """Keras's Adam step on `gradient` = ∂L/∂Ψ(v), multiplied by Ψ'(v),
    in place on the contiguous float32 tensors `v`, `m`, `s` (see
    `kwc_adam` in kernels.c)."""
    gradient = _contiguous(gradient)
    for tensor in (v, m, s):
        if not tensor.is_contiguous():
            raise ValueError("`adam` updates contiguous tensors only.")
    _LIBRARY.kwc_adam(
        *kind, a, b, gradient.data_ptr(), v.data_ptr(), m.data_ptr(),
        s.data_ptr(), v.numel(), beta_1, beta_2, step_size, epsilon, decay,
        _threads(),
    )
