"""Mutation fuzzing of the files vaecpp reads: model files, IDX, MATLAB (Frey) and images.

Run by test_fuzz.py as a worker process (``python fuzz_cases.py AREA SEED START COUNT``) under an
address-space limit. The worker imports everything once, builds the legitimate base files, then
forks one child per case: the child derives its mutation from ``(SEED, AREA, index)``, writes the
mutated file, calls the loader under ``alarm(CASE_TIMEOUT)`` and reports on a pipe. The worker
prints one JSON line per case: ``outcome`` is

* ``error``: a clean ValueError / TypeError / FileNotFoundError (the vocabulary),
* ``ok``: the loader returned, and the result passed the area's checks,
* ``wrong``: the loader returned something that fails those checks (silently wrong),
* ``foreign``: an exception outside the vocabulary (or a pybind cast message),
* ``crash``: the child died from a signal (SIGSEGV, abort),
* ``hang``: the child ran past its timeout,

with ``peak_kb`` the child's peak resident memory above its resident memory at the fork, and
``legit_kb`` what the case's legitimate content may need (the memory bound is checked by the
test). Also a library of helpers for the tests (``idx_file``, ``rewrite_model``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import signal
import struct
import sys
import tempfile
import traceback
import zipfile
import zlib

import numpy as np

AREAS = ("model", "idx", "mat", "image")
CASE_TIMEOUT = 20  # seconds
SLACK_KB = 48 * 1024  # interpreter, allocator and library overhead allowed beyond 2x the data
PYBIND_TEXTS = ("Unable to cast", "incompatible function arguments", "vector::_M",
                "std::bad_alloc", "-2147483648")


# ---- helpers shared with the tests --------------------------------------------------------------
def idx_file(array, magic=None):
    """An unsigned-byte IDX file holding ``array`` (``magic`` overrides the header's)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def mat_file(ff, compress=False, declared=None, extra=0, order="<", dims=None):
    """A MATLAB 5 file holding the uint8 matrix ``ff`` as variable ``ff``, written by hand so
    that it can lie: ``dims`` overrides its dimensions, ``declared`` the byte count of its data
    element; ``extra`` zero bytes follow the data (inside the zlib stream when ``compress``: a
    bomb of that size)."""
    ff = np.asarray(ff, np.uint8)
    tag = lambda kind, count: struct.pack(order + "II", kind, count)  # noqa: E731
    pad = lambda b: b + bytes(-len(b) % 8)  # noqa: E731
    data = ff.tobytes(order="F")
    body = (tag(6, 8) + struct.pack(order + "II", 9, 0)            # array flags: uint8 class
            + tag(5, 8) + struct.pack(order + "ii", *(dims or ff.shape))  # dimensions
            + struct.pack(order + "I", 2 << 16 | 1) + b"ff\0\0"     # name: a small element
            + tag(2, len(data) if declared is None else declared) + pad(data))
    element = tag(14, len(body)) + body
    header = b"MATLAB 5.0 MAT-file, written by vaecpp's tests".ljust(116, b" ") + bytes(8)
    header += struct.pack(order + "H", 0x0100) + (b"IM" if order == "<" else b"MI")
    if not compress:
        return header + element + bytes(extra)
    z = zlib.compressobj(1)
    stream = [z.compress(element)]
    zeros = bytes(1 << 20)
    for i in range(0, extra, len(zeros)):
        stream.append(z.compress(zeros[: extra - i]))
    stream = b"".join(stream) + z.flush()
    return header + tag(15, len(stream)) + stream


_rewrites = [0]


def rewrite_model(path, header_fn=None, arrays=None, blob=None, allow_pickle=False):
    """Writes a copy of the vaecpp file ``path`` beside it with its JSON header changed by
    ``header_fn(header)`` (or replaced by the bytes ``blob``) and its arrays by
    ``arrays(dict)``; returns the new path."""
    path = os.fspath(path)
    with np.load(path) as z:
        contents = {k: z[k] for k in z.files}
    header = json.loads(bytes(contents["__vaecpp__"]).decode())
    if header_fn is not None:
        header_fn(header)
    if blob is None:
        blob = json.dumps(header).encode()
    contents["__vaecpp__"] = np.frombuffer(blob, np.uint8)
    if arrays is not None:
        arrays(contents)
    _rewrites[0] += 1
    out = f"{os.path.splitext(path)[0]}-rewritten{_rewrites[0]}.vae"
    with open(out, "wb") as f:
        np.savez(f, allow_pickle=allow_pickle, **contents)
    return out


# ---- byte-level mutations -----------------------------------------------------------------------
def _mutate_bytes(rng, data):
    """One of: bit flips, random bytes, truncation, a deleted or inserted chunk, a duplicated
    chunk. Returns (new bytes, kind)."""
    data = bytearray(data)
    kind = rng.choice(["flip", "set", "truncate", "delete", "insert", "repeat"])
    n = len(data)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(n))] ^= 1 << int(rng.integers(8))
    elif kind == "set":
        for _ in range(int(rng.integers(1, 5))):
            data[int(rng.integers(n))] = int(rng.choice([0, 0xFF, 0x7F, 0x80, rng.integers(256)]))
    elif kind == "truncate":
        data = data[: int(rng.integers(n))]
    elif kind == "delete":
        i = int(rng.integers(n))
        del data[i : i + int(rng.integers(1, 64))]
    elif kind == "insert":
        i = int(rng.integers(n + 1))
        data[i:i] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    else:
        i = int(rng.integers(n))
        data[i:i] = data[i : i + int(rng.integers(1, 4096))]
    return bytes(data), kind


def _evil_value(rng):
    return [-1, 0, 1, 2**31, 2**31 - 1, 2**32, 2**63, 2**64, 2**70, -2**70, 1e300, -1e300,
            float("nan"), float("inf"), 1.5, "x", "", None, True, False, [], {}, [1, 2, 3],
            {"a": 1}, [[[[1]]]], int(rng.integers(-1000, 100000))][int(rng.integers(26))]


def _paths(tree, prefix=()):
    """Every path into a JSON tree (keys and list indices)."""
    yield prefix
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(
        tree, list) else ()
    for k, v in items:
        yield from _paths(v, prefix + (k,))


def _mutate_json(rng, header):
    header = json.loads(json.dumps(header))
    paths = [p for p in _paths(header) if p]
    path = paths[int(rng.integers(len(paths)))]
    node = header
    for k in path[:-1]:
        node = node[k]
    what = rng.choice(["value", "delete", "scale"])
    if what == "delete" and isinstance(node, dict):
        del node[path[-1]]
    elif what == "scale" and isinstance(node[path[-1]], int) and not isinstance(
            node[path[-1]], bool):
        node[path[-1]] = node[path[-1]] * int(rng.choice([10**3, 10**6, 10**9, -1, 0]))
    else:
        node[path[-1]] = _evil_value(rng)
    return header, f"json:{what}:{'/'.join(map(str, path))}"


# ---- the areas ----------------------------------------------------------------------------------
class ModelArea:
    """Model and weights files (vaecpp's and safetensors): byte mutations, header mutations,
    array mutations, extra members (one a deflated 1 GiB array), safetensors files declaring
    huge tensors or other dtypes, or followed by up to 1 GiB (sparse)."""

    def __init__(self, work):
        import vaecpp
        self.vaecpp = vaecpp
        self.bases = []
        rng = np.random.default_rng(0)
        specs = [
            dict(input_shape=12, hidden=(6,), latent_dim=2, seed=1, threads=1),
            dict(input_shape=(6, 6, 1), latent_dim=2, seed=2, threads=1, dtype="float64",
                 likelihood="gaussian",
                 encoder=[vaecpp.layers.Conv2D(2, 3, activation="relu"),
                          vaecpp.layers.BatchNorm(), vaecpp.layers.Flatten()],
                 decoder=[vaecpp.layers.Dense(16), vaecpp.layers.Reshape((4, 4, 1)),
                          vaecpp.layers.Conv2DTranspose(2, 3)]),
        ]
        for i, spec in enumerate(specs):
            vae = vaecpp.VAE(**spec)
            vae.compile("adam" if i == 0 else vaecpp.optimizers.SGD(0.01, momentum=0.9))
            core = vae._core
            n = core.num_params
            core.set_optimizer_slots(rng.normal(size=n).astype(vae.dtype),
                                     np.abs(rng.normal(size=n)).astype(vae.dtype) if i == 0
                                     else np.zeros(0, vae.dtype), np.zeros(0, vae.dtype))
            core.step = 7
            vae.history.epoch = [0, 1]
            vae.history.history = {"loss": [3.0, 2.5]}
            path = os.path.join(work, f"base{i}.vae")
            vae.save(path)
            self.bases.append((path, "model", [w.copy() for w in vae.get_weights()]))
            for suffix in (".weights", ".safetensors"):
                wpath = os.path.join(work, f"base{i}{suffix}")
                vae.save_weights(wpath)
                self.bases.append((wpath, suffix[1:], [w.copy() for w in vae.get_weights()]))
        # a copy of base0 with an extra deflated 1 GiB array: about 1 MB on disk
        self.bomb = os.path.join(work, "bomb.vae")
        with open(self.bases[0][0], "rb") as src, open(self.bomb, "wb") as dst:
            dst.write(src.read())
        with zipfile.ZipFile(self.bomb, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            with z.open("extra.npy", "w", force_zip64=True) as f:
                f.write(_npy_header((1 << 27,), "<f8"))
                zeros = bytes(1 << 24)
                for _ in range(64):
                    f.write(zeros)

    def case(self, rng, work):
        path, kind, weights = self.bases[int(rng.integers(len(self.bases)))]
        what = rng.choice(["bytes", "json", "array", "member", "bomb"], p=[.35, .3, .2, .1, .05])
        with open(path, "rb") as f:
            data = f.read()
        out = os.path.join(work, "case.vae")
        exact = False
        if kind == "safetensors":
            out, how = _mutate_safetensors(rng, data, what, os.path.join(work, "case.safetensors"))
        elif what == "bytes":
            data, how = _mutate_bytes(rng, data)
            exact = True  # a mutation the CRCs miss must not change the weights
            with open(out, "wb") as f:
                f.write(data)
        elif what == "json":
            with np.load(path) as z:
                header = json.loads(bytes(z["__vaecpp__"]).decode())
            header, how = _mutate_json(rng, header)
            out = rewrite_model(path, lambda h: (h.clear(), h.update(header)))
        elif what == "array":
            out, how = self._mutate_array(rng, path)
        elif what == "member":
            out, how = self._mutate_member(rng, path, work)
        else:
            out, how = self.bomb, "bomb"
        load = self.vaecpp.load_model if kind == "model" else self._load_weights(path)
        return how, lambda: self._check(load(out), weights if exact else None), 64

    def _load_weights(self, base):
        def load(path):
            vae = self.vaecpp.load_model(os.path.splitext(base)[0] + ".vae")
            vae.load_weights(path)
            return vae
        return load

    def _mutate_array(self, rng, path):
        name = str(rng.choice(["params", "state", "opt_m", "opt_v"]))
        change = rng.choice(["dtype", "size", "values", "drop", "shape"])
        dtype = rng.choice(["complex64", "bool", "float16", "int8", ">f8", "datetime64[s]",
                            "uint64", "S8", "V4"])

        def apply(arrays):
            if name not in arrays:
                arrays[name] = np.zeros(3)
                return
            a = arrays[name]
            if change == "dtype":
                arrays[name] = np.ones(a.shape, dtype) if str(dtype)[0] not in "SV" else (
                    np.zeros(a.shape, dtype))
            elif change == "size":
                arrays[name] = np.resize(a, max(0, a.size + int(rng.integers(-3, 4))))
            elif change == "values" and a.size:
                v = a.astype(np.float64)
                v[int(rng.integers(a.size))] = rng.choice([np.nan, np.inf, -np.inf, -1.0, 1e300,
                                                           -1e300, 1e38, 4e38])
                arrays[name] = v
            elif change == "drop":
                del arrays[name]
            else:
                arrays[name] = a.reshape(1, -1) if a.size else a.reshape(0, 1)
        return rewrite_model(path, arrays=apply), f"array:{name}:{change}:{dtype}"

    def _mutate_member(self, rng, path, work):
        out = os.path.join(work, "member.vae")
        how = rng.choice(["extra", "duplicate", "directory", "stored-big-header"])
        with open(path, "rb") as f, open(out, "wb") as g:
            g.write(f.read())
        with zipfile.ZipFile(out, "a") as z:
            if how == "extra":
                z.writestr("extra.npy", b"\x93NUMPY")
            elif how == "duplicate":
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    z.writestr("params.npy", b"\x93NUMPY\x01\x00")
            elif how == "directory":
                z.writestr("sub/", b"")
            else:
                z.writestr("opt_q.npy", _npy_header((1 << 40,), "<f4"))
        return out, f"member:{how}"

    def _check(self, vae, exact_weights):
        for w in vae.get_weights():
            if not np.isfinite(w).all():
                return "a weight is NaN or inf"
        if exact_weights is not None:
            for a, b in zip(vae.get_weights(), exact_weights):
                if a.shape != b.shape or not np.array_equal(a, b):
                    return "the weights differ from the file's although it loaded"
        if vae.optimizer is not None:
            m, v, ema = vae._core.get_optimizer_slots()
            if not (np.isfinite(m).all() and np.isfinite(v).all() and (v >= 0).all()
                    and np.isfinite(ema).all()):
                return "optimizer state NaN, inf or negative"
            if vae._core.step < 0:
                return "negative optimizer step"
        vae.threads = 1
        x = np.random.default_rng(0).random((4, *vae.input_shape))
        if max(np.abs(w).max(initial=0) for w in vae.get_weights()) > 1e30:
            return None  # valid but extreme weights (1e38 fits a float32): outputs may overflow
        if not np.isfinite(vae.encode(x)).all():
            return "encode gives NaN"
        if vae.optimizer is not None:
            try:
                vae.fit(x, epochs=1, batch_size=4, verbose=0)
            except FloatingPointError:
                return None  # the vocabulary's answer to a NaN loss (e.g. a huge learning rate)
            if not all(np.isfinite(w).all() for w in vae.get_weights()):
                return "one fit step made the weights NaN"
        return None


def _mutate_safetensors(rng, data, what, out):
    """A safetensors file changed by ``what``: bytes (no checksum covers the data, so such a
    file may load with other weights: only finite ones are required), json (a header
    mutation), or one of tail (bytes or a sparse GiB after the data), huge (a tensor declared
    2^k elements, the file extended to match, sparse) and dtype (another dtype, data unchanged).
    Returns (path, description)."""
    n = int.from_bytes(data[:8], "little")
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    names = sorted(k for k in header if k != "__metadata__")
    name = names[int(rng.integers(len(names)))]
    grow = 0
    if what == "bytes":
        data, how = _mutate_bytes(rng, data)
        how = f"safetensors:bytes:{how}"
    else:
        if what == "json":
            header, how = _mutate_json(rng, header)
        else:
            how = str(rng.choice(["tail", "huge", "dtype"]))
            if how == "tail":
                grow = int(rng.choice([1, 8, 4096, 1 << 30]))
            elif how == "huge":
                k = int(rng.choice([20, 28, 31, 40]))
                begin = header[name]["data_offsets"][0]
                header[name].update(shape=[2**k], data_offsets=[begin, begin + 4 * 2**k])
                grow = min(4 * 2**k, 1 << 31)
            else:
                header[name]["dtype"] = str(rng.choice(["BOOL", "BF16", "F16", "F64", "I64",
                                                        "C64", "F8_E4M3", "", "f32"]))
        how = f"safetensors:{how}" + ("" if what == "json" else f":{name}")
        blob = json.dumps(header).encode()
        data = len(blob).to_bytes(8, "little") + blob + body
    with open(out, "wb") as f:
        f.write(data)
        if grow:
            f.truncate(len(data) + grow)  # sparse: costs no disk
    return out, how


def _npy_header(shape, descr):
    """The bytes of a version 1.0 .npy header declaring ``shape`` of ``descr``."""
    d = {"descr": descr, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, d)
    return buf.getvalue()


class IdxArea:
    """MNIST-style IDX pairs, gzip or plain: byte mutations, header dimensions, gzip bombs,
    multi-member gzip (legitimate)."""

    def __init__(self, work):
        from vaecpp import datasets
        self.datasets = datasets
        rng = np.random.default_rng(1)
        self.images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
        self.labels = rng.integers(0, 10, 6, dtype=np.uint8)
        self.zeros_member = gzip.compress(bytes(1 << 20))

    def case(self, rng, work):
        images, labels = idx_file(self.images), idx_file(self.labels)
        gz = bool(rng.integers(2))
        which = rng.choice(["images", "labels"])
        what = rng.choice(["bytes", "dims", "bomb", "members"], p=[.5, .25, .15, .1])
        target = images if which == "images" else labels
        exact = False
        if what == "dims":
            ndim = 3 if which == "images" else 1
            i = int(rng.integers(ndim))
            value = int(rng.choice([0, 1, 5, 7, 27, 29, 60000, 2**31, 2**32 - 1,
                                    rng.integers(2**32)]))
            target = target[: 4 + 4 * i] + value.to_bytes(4, "big") + target[8 + 4 * i :]
            encoded = gzip.compress(target) if gz else target
            how = f"dims:{which}:{i}={value}"
        elif what == "bomb":
            mib = int(rng.choice([1, 16, 256, 1024]))
            encoded = gzip.compress(target) + self.zeros_member * mib
            how = f"bomb:{which}:{mib}MiB"
        elif what == "members":
            cut = int(rng.integers(1, len(target)))
            encoded = gzip.compress(target[:cut]) + gzip.compress(target[cut:])
            how, exact = f"members:{which}:{cut}", True
        else:
            encoded = gzip.compress(target) if gz else target
            encoded, kind = _mutate_bytes(rng, encoded)
            how, exact = f"bytes:{which}:{'gz' if gz else 'raw'}:{kind}", gz
        folder = os.path.join(work, "mnist")
        os.makedirs(folder, exist_ok=True)
        files = {"images": gzip.compress(images), "labels": gzip.compress(labels)}
        files[which] = encoded  # gzip or plain: the loader looks at the content, not the name
        for kind, data in files.items():
            name = f"train-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        return how, lambda: self._check(folder, exact), 2 * 47 * 1024

    def _check(self, folder, exact):
        x, y = self.datasets.mnist(path=folder)
        if x.shape[1:] != (28, 28) or len(x) != len(y) or (y.size and y.max() > 9):
            return f"inconsistent result {x.shape} {y.shape}"
        if exact and not (np.array_equal(x, self.images) and np.array_equal(y, self.labels)):
            return "the data differ from the file's although its checksums held"
        return None


class MatArea:
    """Frey-style MATLAB files ('ff' uint8 560 x n), compressed or not, either byte order: byte
    mutations, declared dimensions and data sizes, zlib bombs."""

    def __init__(self, work):
        import scipy.io
        from vaecpp import datasets
        self.datasets = datasets
        self.ff = np.random.default_rng(2).integers(0, 256, (560, 9), dtype=np.uint8)
        self.bases = []
        for compress in (False, True):
            buf = io.BytesIO()
            scipy.io.savemat(buf, {"ff": self.ff}, do_compression=compress)
            self.bases.append(buf.getvalue())
        self.bases += [mat_file(self.ff, True, order=">"), mat_file(self.ff, False, order=">")]
        # zlib bombs (about 256 KiB each): 256 MiB after the data, the data element declaring
        # that much or honest
        self.bombs = [(f"bomb:declared={d}", mat_file(self.ff, True, declared=d, extra=256 << 20))
                      for d in (560 * 9, 2**28, 2**32 - 8)]

    def case(self, rng, work):
        what = rng.choice(["bytes", "dims", "declared", "bomb"], p=[.6, .2, .1, .1])
        compress = bool(rng.integers(2))
        order = str(rng.choice(["<", ">"]))
        if what == "bytes":
            i = int(rng.integers(len(self.bases)))
            data, kind = _mutate_bytes(rng, self.bases[i])
            how = f"bytes:{i}:{kind}"
        elif what == "dims":
            dims = [560, 9]
            dims[int(rng.integers(2))] = int(rng.choice(
                [0, 1, 10, 100000, 10**6, 2**31 - 1, -1, rng.integers(2**31)]))
            data = mat_file(self.ff, compress, order=order, dims=dims)
            how = f"dims:{'zlib' if compress else 'plain'}:{dims}"
        elif what == "declared":
            declared = int(rng.choice([0, 1, 560 * 9 - 1, 560 * 9 + 1, 2**31, 2**32 - 1]))
            data = mat_file(self.ff, compress, order=order, declared=declared)
            how = f"declared:{'zlib' if compress else 'plain'}:{declared}"
        else:
            how, data = self.bombs[int(rng.integers(len(self.bombs)))]
        path = os.path.join(work, "frey_rawface.mat")
        with open(path, "wb") as f:
            f.write(data)
        return how, lambda: self._check(path), 16 * 1024

    def _check(self, path):
        x = self.datasets.frey_faces(path)
        if x.dtype != np.float32 or x.shape[1:] != (28, 20) or not (
                np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            return f"bad result {x.dtype} {x.shape}"
        return None


class ImageArea:
    """Image files of every format Pillow reads here: byte mutations, and declared sizes
    (PNG with a recomputed CRC, BMP) up to far beyond the pixel limit."""

    MAX_PIXELS = 1 << 20  # the child's PIL.Image.MAX_IMAGE_PIXELS

    def __init__(self, work):
        from PIL import Image
        from vaecpp import datasets
        self.datasets = datasets
        Image.init()
        rng = np.random.default_rng(3)
        rgb = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
        self.bases = []
        for fmt, img in (("PNG", rgb), ("PNG", rgb.convert("RGBA")), ("PNG", rgb.convert("P")),
                         ("PNG", rgb.convert("I;16")), ("JPEG", rgb), ("GIF", rgb),
                         ("BMP", rgb), ("TIFF", rgb), ("WEBP", rgb)):
            buf = io.BytesIO()
            img.save(buf, fmt)
            self.bases.append((fmt.lower(), buf.getvalue()))

    def case(self, rng, work):
        from PIL import Image
        Image.MAX_IMAGE_PIXELS = self.MAX_PIXELS
        fmt, data = self.bases[int(rng.integers(len(self.bases)))]
        if fmt in ("png", "bmp") and rng.random() < 0.35:
            w, h = (int(rng.choice([0, 1, 24, 1000, 1025, 5000, 65535, 2**31 - 1]))
                    for _ in range(2))
            data = _resize_header(fmt, data, w, h)
            how = f"size:{fmt}:{w}x{h}"
        else:
            data, kind = _mutate_bytes(rng, data)
            how = f"bytes:{fmt}:{kind}"
        folder = os.path.join(work, "images")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"x.{fmt}"), "wb") as f:
            f.write(data)
        return how, lambda: self._check(folder), self.MAX_PIXELS * 4 * 4 // 1024

    def _check(self, folder):
        x = self.datasets.image_folder(folder, size=(8, 8))
        if x.shape != (1, 8, 8, 3) or x.dtype != np.float32 or not (
                np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            return f"bad result {x.dtype} {x.shape}"
        return None


def _resize_header(fmt, data, w, h):
    if fmt == "png":  # IHDR right after the 8-byte signature; CRC over type + data
        ihdr = bytearray(data[12:29])
        ihdr[4:12] = struct.pack(">II", w, h)
        return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
    return data[:18] + struct.pack("<ii", w, h) + data[26:]  # BMP's BITMAPINFOHEADER


# ---- the worker ---------------------------------------------------------------------------------
_CLASSES = {"model": ModelArea, "idx": IdxArea, "mat": MatArea, "image": ImageArea}
_VOCABULARY = (ValueError, TypeError, FileNotFoundError)


def _run_case(area, rng, work):
    """In the forked child: one case; returns the result dict (without memory figures)."""
    try:
        how, call, legit_kb = area.case(rng, work)
    except Exception as e:  # the generator itself failed: a bug in this file
        return {"outcome": "generator", "how": "", "error": repr(e)}
    result = {"how": how, "legit_kb": legit_kb}
    try:
        problem = call()
    except _VOCABULARY as e:
        text = str(e)
        foreign = any(t in text for t in PYBIND_TEXTS)
        result.update(outcome="foreign" if foreign else "error", type=type(e).__name__,
                      error=text[:300])
    except BaseException as e:  # noqa: BLE001 - everything else is outside the vocabulary
        result.update(outcome="foreign", type=type(e).__name__, error=str(e)[:300],
                      trace=traceback.format_exc()[-1500:])
    else:
        result.update(outcome="wrong" if problem else "ok", error=problem)
    return result


def _maxrss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run(area_name, seed, start, count, out=sys.stdout):
    import warnings
    warnings.simplefilter("ignore")  # Pillow and NumPy warnings are not what is tested here
    work = tempfile.mkdtemp(prefix=f"vaecpp-fuzz-{area_name}-")
    area = _CLASSES[area_name](work)
    for index in range(start, start + count):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one case, then _exit
            os.close(read)
            code = 0
            try:
                signal.alarm(CASE_TIMEOUT)
                case_dir = tempfile.mkdtemp(dir=work)
                base = _maxrss_kb()
                rng = np.random.default_rng([seed, AREAS.index(area_name), index])
                result = _run_case(area, rng, case_dir)
                result["peak_kb"] = _maxrss_kb() - base
                os.write(write, json.dumps(result).encode())
            except BaseException:  # noqa: BLE001
                code = 3
            finally:
                os._exit(code)
        os.close(write)
        chunks = []
        while True:
            chunk = os.read(read, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read)
        _, status = os.waitpid(pid, 0)
        result = {"area": area_name, "index": index}
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            result.update(outcome="hang" if sig == signal.SIGALRM else "crash",
                          signal=signal.Signals(sig).name)
        elif chunks:
            result.update(json.loads(b"".join(chunks)))
        else:
            result.update(outcome="crash", signal=f"exit {os.WEXITSTATUS(status)}")
        out.write(json.dumps(result) + "\n")
        out.flush()
        _cleanup(work)


def _cleanup(work):
    import shutil
    for name in os.listdir(work):
        full = os.path.join(work, name)
        if os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)


def memory_ok(result):
    """Peak memory within twice the case's legitimate data, plus a fixed allowance."""
    return result.get("peak_kb", 0) <= 2 * result.get("legit_kb", 0) + SLACK_KB


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
