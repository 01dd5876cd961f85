"""Reading IDX files (the MNIST file format), plain or gzip-compressed.

The format (http://yann.lecun.com/exdb/mnist/): a 4-byte big-endian magic
number ``0x0000TTDD`` (``TT`` the element type, ``DD`` the number of
dimensions), ``DD`` big-endian uint32 dimension sizes, then the elements in
C order.  MNIST and Fashion-MNIST use unsigned bytes (``TT = 0x08``), which
makes the magic 2051 for image files (3 dimensions) and 2049 for label
files (1 dimension).
"""

import gzip
import os
import zlib

import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

_KIND = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}


def read_bytes(path):
    """Returns the contents of ``path``, decompressed if it is gzip data.

    Compression is detected from the content (the gzip magic bytes), not
    from the file name.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is gzip data that is truncated or corrupt.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{os.fspath(path)}: corrupt or truncated gzip data ({e})") from None


def read_idx(path, magic):
    """Reads an unsigned-byte IDX file and validates its header and size.

    Parameters
    ----------
    path : str or os.PathLike
        The file, plain or gzip-compressed.
    magic : int
        The expected magic number: ``IMAGES_MAGIC`` (2051) or
        ``LABELS_MAGIC`` (2049).

    Returns
    -------
    numpy.ndarray
        A writable ``uint8`` array shaped as the header says.

    Raises
    ------
    ValueError
        Naming the file, if the magic number is not ``magic``, or the data
        is shorter (truncated) or longer than the header announces.
    """
    name = os.fspath(path)
    data = read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise ValueError(f"{name}: truncated IDX file ({len(data)} bytes, no magic number)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        hint = f"; this is an IDX {_KIND[found]} file" if found in _KIND else ""
        raise ValueError(
            f"{name}: bad IDX magic number {found}, expected {magic} "
            f"(an IDX {_KIND[magic]} file){hint}"
        )
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(data) - header
    if got < expected:
        raise ValueError(
            f"{name}: truncated IDX file: header announces {dims} = {expected} bytes "
            f"of data, found {got}"
        )
    if got > expected:
        raise ValueError(
            f"{name}: corrupt IDX file: {got - expected} bytes after the {dims} "
            f"data the header announces"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return array.copy()
