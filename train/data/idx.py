"""Reader for the IDX format of (Fashion-)MNIST.

An IDX file is a 4-byte magic number `0x00 0x00 <type> <ndim>`, then `ndim`
big-endian uint32 dimension sizes, then the array in C order with big-endian
elements (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
"""

import gzip
import os

import numpy as np

_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path):
    """Reads an IDX file, gzip-compressed when its name ends in `.gz`.

    Args:
        path: path of the file.

    Returns:
        A numpy array with the file's shape and element type (native byte
        order).

    Raises:
        ValueError: if the file is not a well-formed IDX file.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path} is not an IDX file: it must start with two zero bytes. "
            f"Received: first bytes {data[:4]!r}"
        )
    if data[2] not in _DTYPES:
        raise ValueError(
            f"{path} has an unknown IDX element type 0x{data[2]:02x}; "
            f"expected one of {[hex(code) for code in _DTYPES]}"
        )
    dtype = _DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated inside its IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path} holds {len(data)} bytes but its IDX header (shape "
            f"{shape}, {dtype}) implies {expected}"
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))
