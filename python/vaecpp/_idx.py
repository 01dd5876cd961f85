"""Reading IDX files (the MNIST file format), plain or gzip-compressed.

The format (http://yann.lecun.com/exdb/mnist/): a 4-byte big-endian magic
number ``0x0000TTDD`` (``TT`` the element type, ``DD`` the number of
dimensions), ``DD`` big-endian uint32 dimension sizes, then the elements in
C order.  MNIST and Fashion-MNIST use unsigned bytes (``TT = 0x08``), which
makes the magic 2051 for image files (3 dimensions) and 2049 for label
files (1 dimension).
"""

import gzip
import math
import os
import zlib

import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

_KIND = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}


MAX_IDX_BYTES = 1 << 30
"""The most data an IDX file may declare (1 GiB; MNIST's training images are 47 MB).  Larger
files need ``read_idx(..., max_bytes=...)``."""

_CHUNK = 1 << 20
_SLACK = 4096  # trailing bytes counted exactly in the error message (beyond: "more than")


class _Corrupt(Exception):
    """gzip data that is truncated or corrupt (turned into ValueError naming the file)."""


def _read(stream, n, buf=None):
    """Up to ``n`` bytes of ``stream``, appended to ``buf`` in chunks (memory grows with the data
    actually read, never with what a header claims)."""
    buf = bytearray() if buf is None else buf
    end = len(buf) + n
    try:
        while len(buf) < end:
            chunk = stream.read(min(_CHUNK, end - len(buf)))
            if not chunk:
                break
            buf += chunk
    except (OSError, EOFError, zlib.error) as e:
        raise _Corrupt(e) from None
    return buf


def read_idx(path, magic, max_bytes=MAX_IDX_BYTES, item_shape=None):
    """Reads an unsigned-byte IDX file and validates its header and size.

    The file is streamed (gzip data decompressed chunk by chunk): the header's dimensions are
    checked against ``max_bytes``, ``item_shape`` and, for a plain file, its size on disk before
    the data is read, and at most the declared number of bytes plus one is ever decompressed.
    Compression is detected from the content (the gzip magic bytes), not from the file name.

    Parameters
    ----------
    path : str or os.PathLike
        The file, plain or gzip-compressed.
    magic : int
        The expected magic number: ``IMAGES_MAGIC`` (2051) or
        ``LABELS_MAGIC`` (2049).
    max_bytes : int
        The most data the header may declare (default :data:`MAX_IDX_BYTES`, 1 GiB).
    item_shape : tuple of int, optional
        The dimensions after the first that the header must declare, e.g. ``(28, 28)``.

    Returns
    -------
    numpy.ndarray
        A writable ``uint8`` array shaped as the header says.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file, if the magic number is not ``magic``, the dimensions exceed
        ``max_bytes`` or differ from ``item_shape``, the data is shorter (truncated) or longer
        than the header announces, or the gzip data is truncated or corrupt.
    """
    name = os.fspath(path)
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        try:
            with stream:
                return _parse(name, stream, magic, max_bytes, item_shape,
                              None if gz else os.fstat(raw.fileno()).st_size)
        except _Corrupt as e:
            raise ValueError(f"{name}: corrupt or truncated gzip data ({e})") from None


def _parse(name, stream, magic, max_bytes, item_shape, file_size):
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    data = _read(stream, 4)
    if len(data) < 4:
        raise ValueError(f"{name}: truncated IDX file ({len(data)} bytes, no magic number)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        hint = f"; this is an IDX {_KIND[found]} file" if found in _KIND else ""
        raise ValueError(
            f"{name}: bad IDX magic number {found}, expected {magic} "
            f"(an IDX {_KIND[magic]} file){hint}"
        )
    data = _read(stream, header - 4, data)
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if item_shape is not None and dims[1:] != tuple(item_shape):
        raise ValueError(f"{name}: items are {' x '.join(map(str, dims[1:]))}, expected "
                         f"{' x '.join(map(str, item_shape))}")
    expected = math.prod(dims)
    if expected > max_bytes:
        raise ValueError(f"{name}: the IDX header declares {dims} = {expected} bytes of data, "
                         f"more than the limit of {max_bytes} (read_idx's max_bytes)")
    got = None if file_size is None else file_size - header
    if got is None or got == expected:
        data = _read(stream, expected + _SLACK, bytearray())
        got = len(data)
    if got < expected:
        raise ValueError(
            f"{name}: truncated IDX file: header announces {dims} = {expected} bytes "
            f"of data, found {got}"
        )
    if got > expected:
        extra = f"more than {_SLACK}" if got == expected + _SLACK else f"{got - expected}"
        raise ValueError(
            f"{name}: corrupt IDX file: {extra} bytes after the {dims} "
            f"data the header announces"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)
