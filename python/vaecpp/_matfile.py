"""Reading one uint8 matrix from a MATLAB 5 / 7 ``.mat`` file without trusting the file.

SciPy's reader allocates what a data element's tag declares and inflates a compressed variable
before it checks that the result fits the variable's dimensions, so a 2 MB file can cost
gigabytes. This reader walks the file itself (the format: MathWorks, "MAT-File Format", level 5):

* the 128-byte header (text, version 0x0100, byte order ``IM`` / ``MI``);
* top-level variables, each an ``miMATRIX`` element, or an ``miCOMPRESSED`` one whose zlib stream
  holds such an element; variables of other names are skipped unread (a compressed one after
  inflating its first few hundred bytes, to learn its name);
* the wanted variable's array flags (class ``uint8``, real, not logical), dimensions (2-D, the
  rows asked for, 1 to ``max_columns`` columns) and name, then its data element, whose byte count
  must be exactly ``rows * columns``: only then are the data read, at most that many bytes, and a
  zlib stream that inflates to more than its element is an error without inflating the rest.

Memory is that of the declared matrix (compressed data are inflated chunk by chunk into it).
Anything else is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

MI_INT8, MI_UINT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 1, 2, 5, 6, 14, 15
MX_UINT8_CLASS = 9
_COMPLEX, _LOGICAL = 0x0800, 0x0200
_CHUNK = 1 << 20


class _Fail(Exception):
    """A problem with the file; turned into a ValueError naming it."""


class _Plain:
    """The ``size`` bytes of an uncompressed element, read from the file as asked."""

    def __init__(self, f, size):
        self._f, self.left, self.pos = f, size, 0

    def read(self, n):
        if n > self.left:
            raise _Fail(f"an element needs {n} bytes, its variable has {self.left} left")
        data = self._f.read(n)
        if len(data) != n:
            raise _Fail("truncated file")
        self.left -= n
        self.pos += n
        return data

    def readinto(self, out):
        n = len(out)
        if n > self.left:
            raise _Fail(f"an element needs {n} bytes, its variable has {self.left} left")
        for at in range(0, n, _CHUNK):
            part = out[at:at + _CHUNK]
            if self._f.readinto(part) != len(part):
                raise _Fail("truncated file")
        self.left -= n
        self.pos += n


class _Inflated:
    """What the zlib stream of a compressed element (``size`` bytes of the file) inflates to,
    inflated only as far as it is read: never more than asked for."""

    def __init__(self, f, size):
        self._f, self._left, self.pos = f, size, 0
        self._z = zlib.decompressobj()
        self._pending = b""  # input not yet given to the decompressor

    def _inflate(self, want):
        """Up to ``want`` more inflated bytes (fewer only where the stream ends)."""
        while True:
            if not self._pending and self._left > 0:
                self._pending = self._f.read(min(_CHUNK, self._left))
                if not self._pending:
                    raise _Fail("truncated file (in a compressed variable)")
                self._left -= len(self._pending)
            try:
                out = self._z.decompress(self._pending, want)
            except zlib.error as e:
                raise _Fail(f"corrupt compressed variable ({e})") from None
            self._pending = self._z.unconsumed_tail
            if out or self._z.eof or (not self._pending and self._left == 0):
                return out

    def read(self, n):
        parts, have = [], 0
        while have < n:
            part = self._inflate(n - have)
            if not part:
                raise _Fail("a compressed variable ends early")
            parts.append(part)
            have += len(part)
        self.pos += n
        return b"".join(parts)

    def readinto(self, out):
        at = 0
        while at < len(out):
            part = self._inflate(min(_CHUNK, len(out) - at))
            if not part:
                raise _Fail("a compressed variable ends early")
            out[at:at + len(part)] = part
            at += len(part)
        self.pos += at

    def finish(self):
        """The stream must end here (its checksum verified): nothing more than its element."""
        if self._inflate(1):
            raise _Fail("a compressed variable holds more data than its element declares")
        if not self._z.eof:
            raise _Fail("truncated compressed variable")


def _tag(src, order):
    """(type, byte count, data of a small element or None) of the next element of ``src``."""
    word, count = struct.unpack(order + "II", src.read(8))
    if word >> 16:  # small data element: type and count in one word, data in the next four
        n = word >> 16
        if n > 4:
            raise _Fail(f"a small data element declares {n} bytes (at most 4)")
        return word & 0xFFFF, n, struct.pack(order + "I", count)[:n]
    return word, count, None


def _element(src, order, kind, limit, what):
    """The data of the next element, of type ``kind`` and at most ``limit`` bytes, padding
    skipped."""
    mtype, n, small = _tag(src, order)
    if mtype != kind or n > limit:
        raise _Fail(f"bad {what} element (type {mtype}, {n} bytes)")
    if small is not None:
        return small
    data = src.read(n)
    src.read(-n % 8)
    return data


def _matrix(src, order, size, name, rows, max_columns):
    """Reads an ``miMATRIX`` element of ``size`` bytes from ``src``: the matrix if it is the
    variable ``name`` (checked), else None with its data left unread."""
    start = src.pos
    flags = struct.unpack(order + "II", _element(src, order, MI_UINT32, 8, "array flags"))[0]
    dims_raw = _element(src, order, MI_INT32, 4 * 64, "dimensions")
    if not dims_raw or len(dims_raw) % 4:
        raise _Fail(f"bad dimensions element ({len(dims_raw)} bytes)")
    dims = struct.unpack(order + f"{len(dims_raw) // 4}i", dims_raw)
    found = _element(src, order, MI_INT8, 64, "array name").decode("latin-1")
    used = src.pos - start  # flags, dimensions and name, with their tags and padding
    if found != name:
        return None
    if flags & 0xFF != MX_UINT8_CLASS or flags & (_COMPLEX | _LOGICAL):
        raise _Fail(f"'{name}' is not a real uint8 matrix (array flags {flags:#x})")
    if len(dims) != 2 or dims[0] != rows or not 1 <= dims[1] <= max_columns:
        raise _Fail(f"'{name}' is {' x '.join(map(str, dims))}; expected {rows} x n with 1 <= n "
                    f"<= {max_columns}")
    need = rows * dims[1]
    mtype, n, small = _tag(src, order)
    if mtype != MI_UINT8 or n != need or small is not None:
        raise _Fail(f"'{name}' ({rows} x {dims[1]}) declares {n} bytes of data of type "
                    f"{mtype}; its dimensions need {need} of uint8 (type {MI_UINT8})")
    if size not in range(used + 8 + need, used + 8 + need + 8):  # + padding to 8 bytes
        raise _Fail(f"'{name}' is an element of {size} bytes; its contents need "
                    f"{used + 8 + need}")
    out = np.empty(need, np.uint8)
    src.readinto(memoryview(out))
    src.read(-need % 8)
    return out.reshape(dims[1], rows)  # column-major: one row here per MATLAB column


def read_uint8_matrix(path, name, rows, max_columns):
    """The real uint8 matrix variable ``name`` of a MATLAB 5 / 7 file, ``rows`` x n with
    1 <= n <= ``max_columns``, returned transposed: an ``(n, rows)`` array whose row j is column
    j. ValueError (naming the file) for anything else, before its data are read."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return _read(f, os.fstat(f.fileno()).st_size, name, rows, max_columns)
    except _Fail as e:
        raise ValueError(f"{path}: not a readable MATLAB file: {e}") from None
    except struct.error:  # a short read inside an element
        raise ValueError(f"{path}: not a readable MATLAB file: truncated file") from None


def _read(f, size, name, rows, max_columns):
    head = f.read(128)
    if len(head) < 128 or head[126:128] not in (b"IM", b"MI"):
        raise _Fail("not a MATLAB 5 (or 7) file")
    order = "<" if head[126:128] == b"IM" else ">"
    version = struct.unpack(order + "H", head[124:126])[0]
    if version != 0x0100:
        raise _Fail(f"MAT-file version {version:#x} (MATLAB 7.3 files are HDF5; save with -v7)")
    found = None
    while f.tell() < size:
        at = f.tell()
        mtype, n = struct.unpack(order + "II", f.read(8)) if size - at >= 8 else (None, 0)
        if mtype not in (MI_MATRIX, MI_COMPRESSED) or n > size - at - 8:
            raise _Fail(f"unexpected data element at byte {at} (type {mtype}, {n} bytes; "
                        f"{size - at - 8} left in the file)")
        if mtype == MI_COMPRESSED:
            src = _Inflated(f, n)
            inner, inner_size = struct.unpack(order + "II", src.read(8))
            if inner != MI_MATRIX:
                raise _Fail(f"a compressed variable holds an element of type {inner}")
            matrix = _matrix(src, order, inner_size, name, rows, max_columns)
            if matrix is not None:
                src.finish()
        else:
            matrix = _matrix(_Plain(f, n), order, n, name, rows, max_columns)
        if matrix is not None:
            if found is not None:
                raise _Fail(f"two variables named '{name}'")
            found = matrix
        f.seek(at + 8 + n)
    if found is None:
        raise _Fail(f"no variable '{name}'")
    return found
