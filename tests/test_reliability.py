"""Untrusted files and slow servers: sizes checked before anything is allocated, every value
validated after conversion, clean errors (issue 14). The fuzz suite is test_fuzz.py."""

import gzip
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

import vaecpp
from vaecpp import _file_checks, _idx, datasets
from vaecpp._download import DownloadError, fetch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fuzz_cases import idx_file, mat_file, rewrite_model  # noqa: E402


@pytest.fixture
def saved(tmp_path, blobs):
    vae = vaecpp.VAE(20, latent_dim=2, hidden=(16,), seed=5)
    vae.compile("adam")
    vae.fit(blobs[:64], epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "m.vae"
    vae.save(path)
    return path


def _no_engine(monkeypatch):
    """Makes building a model fail the test: the file must be rejected before that."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built from a file that should have been rejected")
    monkeypatch.setattr(vaecpp.model, "VAE", refuse)



# ---- peak memory of one call, in a fresh process --------------------------------------------------
_PEAK = """
import resource, sys
import numpy as np
import vaecpp
from vaecpp import datasets, plot
exec(sys.argv[1])  # the setup, not measured
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    exec(sys.argv[2])
    kind, message = "returned", ""
except BaseException as e:
    kind, message = type(e).__name__, str(e).replace("\\n", " ")
print(kind, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, message)
"""


def peak(setup, call, address_space=4 << 30):
    """Runs ``call`` after ``setup`` in a fresh one-thread process whose address space is capped
    (so that a call that would allocate too much fails there, not on this machine); returns
    ``(what it raised or "returned", how many MB its peak resident memory grew, the message)``."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    out = subprocess.run([sys.executable, "-c", _PEAK, setup, call], capture_output=True,
                         text=True, timeout=600, preexec_fn=cap,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "VAECPP_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    kind, grown_kb, message = out.stdout.strip().splitlines()[-1].split(" ", 2)
    return kind, int(grown_kb) / 1024, message


# ---- model files: sizes before allocation -------------------------------------------------------
def test_huge_layer_widths_are_rejected_before_building(saved, monkeypatch):
    bad = rewrite_model(saved, lambda h: h["config"]["encoder"][0]["args"].update(units=10**9))
    _no_engine(monkeypatch)
    with pytest.raises(ValueError, match=r"'params' should hold 25000000392 values for the architecture"):
        vaecpp.load_model(bad)


def test_unknown_and_duplicate_members_are_rejected_unread(saved, tmp_path):
    bad = tmp_path / "extra.vae"
    bad.write_bytes(saved.read_bytes())
    with zipfile.ZipFile(bad, "a") as z:
        z.writestr("extra.npy", b"not even read")
    with pytest.raises(ValueError, match="unexpected member 'extra.npy'"):
        vaecpp.load_model(bad)
    dup = tmp_path / "dup.vae"
    dup.write_bytes(saved.read_bytes())
    with zipfile.ZipFile(saved) as src, pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(dup, "a") as z:
            z.writestr("params.npy", src.read("params.npy"))
    with pytest.raises(ValueError, match="appears twice"):
        vaecpp.load_model(dup)


def test_array_entry_must_hold_what_its_header_declares(saved, tmp_path):
    bad = tmp_path / "lying.vae"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "params.npy":
                data = data[:-40]  # the .npy header still declares the full array
            dst.writestr(name, data)
    with pytest.raises(ValueError, match="declares .* bytes of data but its zip entry holds"):
        vaecpp.load_model(bad)


@pytest.mark.parametrize("dtype", ["complex64", "bool", "datetime64[s]", "S4", "O"])
def test_non_real_arrays_are_rejected(saved, dtype):
    def change(arrays):
        a = arrays["params"]
        arrays["params"] = (np.zeros(a.shape, dtype) if dtype != "O"
                            else np.array([None] * a.size, dtype=object))
    if dtype == "O":
        with pytest.raises(ValueError, match="not an intact vaecpp file|real numbers only"):
            vaecpp.load_model(rewrite_model(saved, arrays=change, allow_pickle=True))
    else:
        with pytest.raises(ValueError, match="real numbers only"):
            vaecpp.load_model(rewrite_model(saved, arrays=change))


def test_finite_after_the_cast_to_the_model_dtype(saved):
    bad = rewrite_model(saved, arrays=lambda a: a.update(params=np.full(a["params"].shape, 1e300)))
    with pytest.raises(ValueError, match="'params' contains NaN or inf as float32"):
        vaecpp.load_model(bad)


@pytest.mark.parametrize("change, message", [
    (lambda a: a["opt_v"].__setitem__(3, -1.0), "'opt_v' holds values below 0"),
    (lambda a: a["opt_v"].__setitem__(0, np.nan), "'opt_v' contains NaN"),
    (lambda a: a["opt_m"].__setitem__(0, np.inf), "'opt_m' contains NaN or inf"),
    (lambda a: a.update(opt_m=a["opt_m"][:5]), "'opt_m' should hold 0 or"),
], ids=["negative-v", "nan-v", "inf-m", "short-m"])
def test_optimizer_state_is_validated(saved, change, message):
    with pytest.raises(ValueError, match=message):
        vaecpp.load_model(rewrite_model(saved, arrays=change))


@pytest.mark.parametrize("step", [-1, 1.5, "3", True, 2**70])
def test_optimizer_step_must_be_a_non_negative_integer(saved, step):
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        vaecpp.load_model(rewrite_model(saved, lambda h: h.update(step=step)))


def _set_config(key, value):
    return lambda h: h["config"].__setitem__(key, value)


MALFORMED_HEADERS = {
    "config-list": lambda h: h.update(config=[1, 2]),
    "config-missing": lambda h: h.pop("config"),
    "no-encoder": lambda h: h["config"].pop("encoder"),
    "encoder-str": _set_config("encoder", "dense"),
    "layer-int": _set_config("decoder", [5]),
    "layer-args-list": lambda h: h["config"]["encoder"][0].update(args=[1]),
    "layer-class-unknown": lambda h: h["config"]["encoder"][0].update({"class": "Nope"}),
    "layer-units-str": lambda h: h["config"]["encoder"][0]["args"].update(units="many"),
    "layer-units-huge": lambda h: h["config"]["encoder"][0]["args"].update(units=2**70),
    "layer-name-int": lambda h: h["config"]["encoder"][0]["args"].update(name=7),
    "unknown-key": _set_config("colour", "blue"),
    "threads-huge": _set_config("threads", 10**6),
    "threads-zero": _set_config("threads", 0),
    "latent-huge": _set_config("latent_dim", 2**40),
    "seed-negative": _set_config("seed", -1),
    "seed-huge": _set_config("seed", 2**70),
    "k-float": _set_config("k", 2.5),
    "input-shape-empty": _set_config("input_shape", []),
    "input-shape-str": _set_config("input_shape", ["a"]),
    "input-shape-int": _set_config("input_shape", 20),
    "input-shape-huge": _set_config("input_shape", [2**20, 2**20]),
    "beta-nan": _set_config("beta", float("nan")),
    "beta-str": _set_config("beta", "1"),
    "likelihood-int": _set_config("likelihood", 5),
    "likelihood-dict": _set_config("likelihood", {"class": 5}),
    "dtype-list": _set_config("dtype", ["float32"]),
    "history-list": lambda h: h.update(history=[1]),
    "history-epoch-str": lambda h: h.update(history={"epoch": "0", "history": {}}),
    "history-values": lambda h: h.update(history={"epoch": [0], "history": {"loss": "x"}}),
    "optimizer-int": lambda h: h.update(optimizer=5),
    "optimizer-unknown": lambda h: h.update(optimizer={"name": "nope"}),
    "optimizer-option": lambda h: h.update(optimizer={"name": "adam", "beta_1": [1]}),
    "optimizer-lr-nan": lambda h: h.update(optimizer={"name": "adam", "learning_rate": float("nan")}),
    "optimizer-lr-inf-as-float32": lambda h: h.update(optimizer={"name": "adam",
                                                                 "learning_rate": 1e300}),
    "beta-inf-as-float32": _set_config("beta", 1e300),
    "format-missing": lambda h: h.pop("format"),
    "version-str": lambda h: h.update(version="1"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_HEADERS))
def test_malformed_headers_raise_value_error(saved, name):
    with pytest.raises(ValueError):
        vaecpp.load_model(rewrite_model(saved, MALFORMED_HEADERS[name]))


def test_header_that_is_not_a_dict_or_not_json(saved, tmp_path):
    for blob in (b"[1, 2]", b"{not json", b"\xff\xfe", b"[" * 100000):
        bad = rewrite_model(saved, blob=blob)
        with pytest.raises(ValueError):
            vaecpp.load_model(bad)


def test_load_model_on_a_directory_says_so(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        vaecpp.load_model(tmp_path)


def test_weights_file_checks(saved, tmp_path):
    vae = vaecpp.load_model(saved)
    vae.save_weights(tmp_path / "w.npz")
    bad = rewrite_model(tmp_path / "w.npz",
                        arrays=lambda a: a.update(params=a["params"].astype(np.complex64)))
    with pytest.raises(ValueError, match="real numbers only"):
        vae.load_weights(bad)
    extra = rewrite_model(tmp_path / "w.npz", arrays=lambda a: a.update(opt_m=a["params"]))
    with pytest.raises(ValueError, match="unexpected member 'opt_m.npy'"):
        vae.load_weights(extra)


def test_architecture_sizes_match_the_engine():
    from vaecpp import architectures
    models = [vaecpp.VAE(20, hidden=(7, 5), latent_dim=3, seed=0),
              vaecpp.VAE((6, 4), hidden=(3,), likelihood="gaussian", seed=0),
              architectures.keras_mnist_conv_vae(seed=0),
              architectures.celeba_conv_vae((16, 16, 3), latent_dim=4, num_filters=[4, 8],
                                            seed=0)]
    for vae in models:
        assert _file_checks.architecture_sizes(vae.get_config()) == (
            vae._core.num_params, vae._core.num_state), vae


# ---- safetensors weights ------------------------------------------------------------------------
def _safetensors(path, header, data=b""):
    """Writes a safetensors file by hand: the 8-byte header length, the JSON header, the data."""
    blob = json.dumps(header).encode()
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)
    return path


@pytest.fixture
def weights_file(tmp_path, saved):
    pytest.importorskip("safetensors")
    vae = vaecpp.load_model(saved)
    path = tmp_path / "w.safetensors"
    vae.save_weights(path)
    return vae, path


def _st_header(path):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def test_safetensors_file_larger_than_the_model_is_rejected_unread(weights_file):
    """1 GiB (sparse) after the tensors: refused from the header and the file's size; the reader
    used to read the whole file first."""
    vae, path = weights_file
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size + (1 << 30))
    kind, grown_mb, message = peak(f"vae = vaecpp.load_model({str(path.parent / 'm.vae')!r})",
                                   f"vae.load_weights({str(path)!r})")
    assert grown_mb < 16, (grown_mb, message)
    assert kind == "ValueError" and "bytes" in message, message


def test_safetensors_header_declaring_huge_tensors_is_rejected_unread(weights_file, tmp_path):
    vae, path = weights_file
    header, data = _st_header(path)
    name = vae.weight_names()[0]
    begin = header[name]["data_offsets"][0]
    header[name].update(shape=[2**28], data_offsets=[begin, begin + 2**30])
    bad = _safetensors(tmp_path / "huge.safetensors", header, data)
    with open(bad, "r+b") as f:  # the file really is as large as the header says (sparse)
        f.truncate(bad.stat().st_size + 2**30)
    kind, grown_mb, message = peak(f"vae = vaecpp.load_model({str(path.parent / 'm.vae')!r})",
                                   f"vae.load_weights({str(bad)!r})")
    assert grown_mb < 16, (grown_mb, message)
    assert kind == "ValueError" and name in message, message


def _edit(header, name, **change):
    header = json.loads(json.dumps(header))
    header[name].update(change)
    return header


def test_safetensors_header_is_validated(weights_file, tmp_path):
    vae, path = weights_file
    header, data = _st_header(path)
    name = vae.weight_names()[1]  # the first bias
    entry = header[name]
    (b, e) = entry["data_offsets"]
    cases = {
        "declares 9223372036854775807 header bytes": (None, None),
        "dtype 'BOOL'": (_edit(header, name, dtype="BOOL"), data),
        "dtype 'C64'": (_edit(header, name, dtype="C64"), data),
        "shape": (_edit(header, name, shape=[e - b]), data),
        "offsets": (_edit(header, name, data_offsets=[b + 4, e + 4]), data),
        "holds weights of a different architecture": ({k: v for k, v in header.items()
                                                       if k != name}, data),
        "metadata": ({**header, "__metadata__": {"format": 5}}, data),
        "header": ([1, 2], b""),
    }
    for message, (h, d) in cases.items():
        bad = tmp_path / "bad.safetensors"
        if h is None:
            bad.write_bytes((2**63 - 1).to_bytes(8, "little") + b"{}")
        else:
            _safetensors(bad, h, d)
        before = vae.get_weights()
        with pytest.raises(ValueError, match=message):
            vae.load_weights(bad)
        assert all(np.array_equal(a, b) for a, b in zip(before, vae.get_weights()))
    with pytest.raises(ValueError, match="truncated|bytes"):  # cut inside the data
        bad.write_bytes(path.read_bytes()[:-3])
        vae.load_weights(bad)


def test_safetensors_values_are_checked_after_the_cast(weights_file, tmp_path):
    vae, path = weights_file
    header, data = _st_header(path)
    names = vae.weight_names()
    # every tensor as F64 (as PyTorch users may save them): the values load, cast to float32
    tensors = {n: w.astype(np.float64) for n, w in zip(names, vae.get_weights())}
    wide, chunks, at = {}, [], 0
    for n, w in tensors.items():
        wide[n] = {"dtype": "F64", "shape": list(w.shape), "data_offsets": [at, at + w.nbytes]}
        chunks.append(w.tobytes())
        at += w.nbytes
    other = vaecpp.VAE(20, latent_dim=2, hidden=(16,), seed=9)
    other.load_weights(_safetensors(tmp_path / "f64.safetensors", wide, b"".join(chunks)))
    assert all(np.array_equal(a, b) for a, b in zip(other.get_weights(), vae.get_weights()))
    first = np.frombuffer(b"".join(chunks), np.float64).copy()
    first[0] = 1e300  # finite as float64, inf as float32
    with pytest.raises(ValueError, match="finite"):
        other.load_weights(_safetensors(tmp_path / "big.safetensors", wide, first.tobytes()))
    first[0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        other.load_weights(_safetensors(tmp_path / "nan.safetensors", wide, first.tobytes()))


# ---- stale temporary files ----------------------------------------------------------------------
_KILLED_SAVE = """
import os, signal, sys
import numpy as np
import vaecpp
vae = vaecpp.VAE(20, hidden=(8,), seed=1)
def savez(f, **arrays):
    f.write(b"x" * 5000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
np.savez = savez
vae.save(sys.argv[1])
"""


def test_stale_temporary_of_a_killed_save_is_removed_by_the_next_save(tmp_path, saved):
    target = tmp_path / "m.vae"
    before = target.read_bytes()
    proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(target)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert len(leftovers) == 1 and target.read_bytes() == before
    live = tmp_path / ".vaecpp-m.vae.1.keep_it_.tmp"  # pid 1 is alive: a save in progress
    live.write_bytes(b"")
    other = tmp_path / ".vaecpp-other.vae.999999999.xxxxxxxx.tmp"  # another target's: not ours
    other.write_bytes(b"")
    vaecpp.load_model(target).save(target)
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".tmp")) == sorted(
        [live.name, other.name])
    vaecpp.load_model(target)


def test_live_temporary_of_a_longer_name_is_not_taken_for_a_dead_one(tmp_path, saved):
    """A save to "m.vae.999999999" in this (live) process has the temporary
    ".vaecpp-m.vae.999999999.<pid>.<random>.tmp"; a save to "m.vae" read that as its own of the
    dead process 999999999 and deleted it under the live save. Only names of exactly the form
    mkstemp gives a save to this path count."""
    live = tmp_path / f".vaecpp-m.vae.999999999.{os.getpid()}.abcd_123.tmp"
    live.write_bytes(b"")
    dead = tmp_path / ".vaecpp-m.vae.999999999.abcd_123.tmp"  # m.vae's, of a dead process
    dead.write_bytes(b"")
    vaecpp.load_model(tmp_path / "m.vae").save(tmp_path / "m.vae")
    assert live.exists() and not dead.exists()
    vaecpp.load_model(tmp_path / "m.vae").save(tmp_path / "m.vae.999999999")
    assert live.exists()  # its own process's: a save in progress


# ---- IDX ----------------------------------------------------------------------------------------
def _mnist_dir(folder, images_gz=None, n=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        images_gz if images_gz is not None else gzip.compress(idx_file(images)))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_file(np.arange(n, dtype=np.uint8) % 10)))
    return folder


def _zeros_gz(mib):
    """A gzip file that inflates to ``mib`` MiB of zeros, as concatenated members (about 1 KiB
    each), without compressing that much data here."""
    member = gzip.compress(bytes(1 << 20))
    return b"".join([member] * mib)


def test_idx_gzip_bomb_fails_fast_and_mnist_falls_back(tmp_path, isolated_data):
    header = idx_file(np.zeros((4, 28, 28), np.uint8))
    bomb = gzip.compress(header) + _zeros_gz(1024)  # 1 GiB after the 4 declared images
    assert len(bomb) < 2 << 20
    folder = _mnist_dir(tmp_path / "d", bomb)
    with pytest.raises(ValueError, match="more than 4096 bytes after"):
        datasets.mnist(path=folder)
    test = _mnist_dir(tmp_path / "t", n=3)
    for kind in ("images-idx3", "labels-idx1"):
        os.rename(test / f"train-{kind}-ubyte.gz", folder / f"t10k-{kind}-ubyte.gz")
    with pytest.warns(datasets.DatasetFallbackWarning, match="bytes after"):
        x, y = datasets.mnist(path=folder, fallback=True)
    assert x.shape == (3, 28, 28) and y.shape == (3,)


def test_idx_header_sizes_are_checked_before_reading(tmp_path):
    declared = (3 << 30).to_bytes(4, "big")
    path = tmp_path / "huge.idx"
    path.write_bytes(b"\0\0\x08\x01" + declared + bytes(100))
    with pytest.raises(ValueError, match="more than the limit"):
        _idx.read_idx(path, _idx.LABELS_MAGIC)
    path.write_bytes(gzip.compress(idx_file(np.zeros((2, 27, 28), np.uint8))))
    with pytest.raises(ValueError, match="items are 27 x 28, expected 28 x 28"):
        _idx.read_idx(path, _idx.IMAGES_MAGIC, item_shape=(28, 28))
    path.write_bytes(idx_file(np.zeros((100000, 28, 28), np.uint8))[:1000])  # plain, truncated
    with pytest.raises(ValueError, match="truncated IDX file"):
        _idx.read_idx(path, _idx.IMAGES_MAGIC)


def test_idx_more_images_than_labels_is_rejected_unread(tmp_path, isolated_data):
    images = gzip.compress(idx_file(np.zeros((4, 28, 28), np.uint8))[:16])  # header says 4
    folder = _mnist_dir(tmp_path / "d", images, n=2)
    with pytest.raises(ValueError, match="more than the limit"):
        datasets.mnist(path=folder)


_MEASURE = """
import resource, sys
from vaecpp import datasets
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    datasets.mnist(path=sys.argv[1])
except ValueError as e:
    print("ValueError", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_idx_gzip_bomb_uses_little_memory(tmp_path):
    header = idx_file(np.zeros((60000, 28, 28), np.uint8))[:16]
    folder = _mnist_dir(tmp_path / "d", gzip.compress(header) + _zeros_gz(1024), n=60000)
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(folder)], capture_output=True,
                         text=True, timeout=300)
    kind, grown_kb = out.stdout.split()
    assert kind == "ValueError"
    assert int(grown_kb) < 2 * 47 * 1024 + 20 * 1024  # at most twice the 47 MB declared


@pytest.fixture
def isolated_data(monkeypatch, tmp_path):
    for var in ("VAECPP_DATA", "VAECPP_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VAECPP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(datasets._FASHION_MNIST, "system_dirs", ())


# ---- Frey .mat ----------------------------------------------------------------------------------
def test_frey_frame_count_is_checked_before_reading(tmp_path, monkeypatch):
    import scipy.io
    from vaecpp import _matfile
    scipy.io.savemat(tmp_path / "f.mat", {"ff": np.zeros((560, 12), np.uint8)})
    monkeypatch.setattr(datasets, "MAX_FREY_FRAMES", 10)
    monkeypatch.setattr(_matfile._Plain, "readinto", lambda *a: pytest.fail("data were read"))
    with pytest.raises(ValueError, match="'ff' is 560 x 12; expected 560 x n with 1 <= n <= 10"):
        datasets.frey_faces(tmp_path / "f.mat")
    scipy.io.savemat(tmp_path / "g.mat", {"ff": np.zeros((560, 2), np.float64)})
    with pytest.raises(ValueError, match="not a real uint8 matrix"):
        datasets.frey_faces(tmp_path / "g.mat")


def _frey_frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (560, n), dtype=np.uint8)


def test_frey_zlib_bomb_is_rejected_without_inflating_it(tmp_path):
    """A 2 MB compressed 'ff' of 560 x 3 frames whose data element declares 1 GiB and whose zlib
    stream inflates to 512 MiB (SciPy inflated it all), or whose sizes are honest but whose
    stream goes on for 512 MiB: refused after the 1680 bytes the dimensions declare."""
    path = tmp_path / "bomb.mat"
    for change, message in ((dict(declared=1 << 30), "declares 1073741824 bytes"),
                            (dict(), "more data")):
        path.write_bytes(mat_file(_frey_frames(3), compress=True, extra=512 << 20, **change))
        kind, grown_mb, text = peak("", f"datasets.frey_faces({str(path)!r})")
        assert grown_mb < 32, (grown_mb, text)
        assert kind == "ValueError" and message in text, text


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("order", ["<", ">"])
def test_frey_reader_reads_what_matlab_and_scipy_write(tmp_path, compress, order):
    import scipy.io
    ff = _frey_frames(7, seed=3)
    path = tmp_path / "frey_rawface.mat"
    path.write_bytes(mat_file(ff, compress=compress, order=order))
    faces = datasets.frey_faces(path)
    np.testing.assert_array_equal(faces, (ff.T.reshape(-1, 28, 20) / np.float32(255)))
    scipy.io.savemat(path, {"other": np.zeros((3, 3)), "ff": ff}, do_compression=compress)
    np.testing.assert_array_equal(datasets.frey_faces(path), faces)


@pytest.mark.parametrize("change, message", [
    (dict(declared=560 * 7 + 8), "declares 3928 bytes of data"),
    (dict(declared=2**32 - 8), "declares 4294967288 bytes of data"),
    (dict(extra=64), "more data"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_frey_data_element_must_hold_what_the_dimensions_declare(tmp_path, change, message,
                                                                 compress):
    path = tmp_path / "f.mat"
    path.write_bytes(mat_file(_frey_frames(7), compress=compress, **change))
    if not compress and "extra" in change:  # zeros after the last variable: not a variable
        message = "unexpected data element"
    with pytest.raises(ValueError, match=message):
        datasets.frey_faces(path)


# ---- image folders ------------------------------------------------------------------------------
def _png(path, size):
    from PIL import Image
    Image.new("RGB", size, (10, 200, 30)).save(path)


@pytest.mark.parametrize("pixels", [1600, 3000])
def test_decompression_bomb_limit_is_an_error_with_a_way_out(tmp_path, monkeypatch, pixels):
    from PIL import Image
    side = int(pixels ** 0.5) + 1
    _png(tmp_path / "big.png", (side, side))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"big.png: image too large.*MAX_IMAGE_PIXELS = None"):
        datasets.image_folder(tmp_path, size=(4, 4))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert datasets.image_folder(tmp_path, size=(4, 4)).shape == (1, 4, 4, 3)


def test_deeply_nested_folders_do_not_recurse(tmp_path):
    chain = [tmp_path]
    for _ in range(1200):  # 2400 characters: within PATH_MAX (pathlib's mkdir(parents) recurses)
        chain.append(chain[-1] / "d")
        os.mkdir(chain[-1])
    try:
        _png(chain[-1] / "x.png", (5, 5))
        _png(tmp_path / "a.png", (5, 5))
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(1000)  # below the depth (another test may have raised it)
        try:
            assert datasets.image_folder(tmp_path, size=(2, 2)).shape == (2, 2, 2, 3)
        finally:
            sys.setrecursionlimit(limit)
        os.symlink(tmp_path, tmp_path / "d" / "loop")  # a cycle is not followed
        assert len(datasets.ImageFolderSource(
            _image_list(tmp_path), (2, 2), "center", "raise", (0, 0, 0))) == 2
    finally:  # bottom-up, so that pytest's recursive clean-up of old temp dirs never meets it
        for folder in reversed(chain[1:]):
            for entry in os.listdir(folder):
                os.unlink(folder / entry)
            os.rmdir(folder)


def _image_list(path):
    from vaecpp._image_folder import list_images
    return list_images(path)


# ---- downloads ----------------------------------------------------------------------------------
class _Slow(http.server.BaseHTTPRequestHandler):
    """/trickle: announces 100 kB, then sends a byte every 10 ms, 3000 at most (stops by itself).
    /endless: no Content-Length, 1 kB chunks, 3000 at most."""

    def do_GET(self):  # noqa: N802 (the http.server API)
        self.send_response(200)
        if self.path == "/trickle":
            self.send_header("Content-Length", "100000")
        self.end_headers()
        piece, pause = (b"x", 0.01) if self.path == "/trickle" else (b"y" * 1024, 0)
        try:
            for _ in range(3000):
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(pause)
        except OSError:  # the client gave up
            pass
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()
    httpd.server_close()


def test_download_has_a_total_deadline(slow_server, tmp_path):
    with pytest.raises(DownloadError, match="took more than 0.3 s"):
        fetch(slow_server + "/trickle", "0" * 64, tmp_path, timeout=5, deadline=0.3, quiet=True)
    assert not list(tmp_path.iterdir())


def test_download_has_a_size_cap(slow_server, tmp_path):
    with pytest.raises(DownloadError, match="announces 100000 bytes, more than the 5000"):
        fetch(slow_server + "/trickle", "0" * 64, tmp_path, max_bytes=5000, quiet=True)
    with pytest.raises(DownloadError, match="sent more than the 50000 bytes"):
        fetch(slow_server + "/endless", "0" * 64, tmp_path, max_bytes=50000, quiet=True)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="deadline"):
        fetch(slow_server + "/endless", "0" * 64, tmp_path, deadline=0, quiet=True)


def batchnorm_vae():
    return vaecpp.VAE((4, 4, 1), latent_dim=2, seed=0, encoder=[vaecpp.layers.BatchNorm(),
                                                               vaecpp.layers.Flatten()])


def test_negative_moving_variance_is_rejected(tmp_path):
    vae = batchnorm_vae()
    vae.save(tmp_path / "bn.vae")
    bad = rewrite_model(tmp_path / "bn.vae", arrays=lambda a: a["state"].__setitem__(-1, -0.5))
    with pytest.raises(ValueError, match="moving_variance holds negative values"):
        vaecpp.load_model(bad)


def test_negative_moving_variance_is_rejected_by_set_weights_and_safetensors(tmp_path):
    """The check .vae / .npz files get (``_file_checks.check_state``) applies to set_weights and
    safetensors files too: they took a negative variance, and encode then returned NaN."""
    pytest.importorskip("safetensors")
    vae = batchnorm_vae()
    weights = vae.get_weights()
    weights[vae.weight_names().index("batchnorm/moving_variance")][-1] = -0.5
    before = vae.get_weights()
    with pytest.raises(ValueError, match="set_weights: batchnorm/moving_variance holds negative"):
        vae.set_weights(weights)
    path = tmp_path / "bn.safetensors"
    vaecpp.saving.save_safetensors(path, dict(zip(vae.weight_names(), weights)))
    with pytest.raises(ValueError, match="bn.safetensors.*moving_variance holds negative"):
        vae.load_weights(path)
    for kept, was in zip(vae.get_weights(), before):  # unchanged by either
        np.testing.assert_array_equal(kept, was)
    assert np.isfinite(vae.encode(np.ones((2, 4, 4, 1), np.float32))).all()


# ---- the model's own arguments: _limits before the engine -----------------------------------------
INT_MAX = 2**31 - 1


@pytest.mark.parametrize("kwargs, error, message", [
    ({"latent_dim": 2**31}, ValueError, f"latent_dim must be <= {INT_MAX}"),
    ({"k": 2**40}, ValueError, f"k must be <= {INT_MAX}"),
    ({"hidden": (2**31,)}, ValueError, f"hidden width must be <= {INT_MAX}"),
    ({"decoder_hidden": (2**64,)}, ValueError, f"decoder_hidden width must be <= {INT_MAX}"),
    ({"input_shape": (2**31, 2)}, ValueError, f"input_shape dimension must be <= {INT_MAX}"),
    ({"input_shape": (2**16, 2**16)}, ValueError, "has 4294967296 values"),
    ({"threads": 2**40}, ValueError, "threads must be <= 1024"),
    ({"threads": 1025}, ValueError, "threads must be <= 1024"),
    ({"seed": 2**64}, ValueError, f"seed must be <= {2**64 - 1}"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
    ({"device": 2**31}, ValueError, f"device must be <= {INT_MAX}"),  # backend="cpu" too
    ({"threads": 2.0}, TypeError, "threads must be an integer"),
    ({"beta": lambda epoch: float("nan")}, ValueError, r"beta\(0\) must be finite"),
    ({"prior_std": 1e300}, ValueError, "prior_std must be finite as float32"),
], ids=lambda v: None if isinstance(v, (dict, type)) else str(v)[:20])
def test_constructor_integers_beyond_the_engine_are_value_errors(kwargs, error, message):
    args = {"input_shape": 20, "hidden": (4,), "seed": 0, **kwargs}
    with pytest.raises(error, match=message):
        vaecpp.VAE(args.pop("input_shape"), **args)


def test_device_bound_is_the_same_for_the_constructor_and_model_files(tmp_path):
    """A CPU model took device=2**31 and saved a file load_model refused; the constructor now
    applies the file's bound, and the largest device it takes round-trips."""
    vae = vaecpp.VAE(20, hidden=(4,), seed=0, device=INT_MAX)
    vae.save(tmp_path / "m.vae")
    assert vaecpp.load_model(tmp_path / "m.vae").get_config()["device"] == INT_MAX


def test_layer_sizes_beyond_the_engine_are_value_errors():
    with pytest.raises(ValueError, match=f"Dense units must be <= {INT_MAX}"):
        vaecpp.layers.Dense(2**31)
    with pytest.raises(ValueError, match=f"Conv2D filters must be <= {INT_MAX}"):
        vaecpp.layers.Conv2D(2**40, 3)


def test_huge_model_is_refused_before_allocation():
    # about 10**11 parameters: the engine's memory check answers before anything is allocated
    with pytest.raises(ValueError, match="parameters"):
        vaecpp.VAE(20, hidden=(2**30,), seed=0, threads=1)


def test_model_beyond_the_memory_limit_is_refused_before_allocation(monkeypatch):
    """A model that fits the machine's physical memory but not what this process can have now
    (``_limits.memory_limit``: available memory, a container's limit) is a ValueError naming
    both sizes, before the engine allocates its parameters."""
    from vaecpp import _limits
    monkeypatch.setattr(_limits, "memory_limit", lambda: 100 << 20)  # 100 MiB
    # 784-20000-2: 31.5 M parameters, 4 float32 arrays of them: 0.50 GB
    with pytest.raises(ValueError, match=r"this model's 31520788 parameters, .* would need "
                                         r"about 0\.504 GB of memory, more than the 0\.105 GB"):
        vaecpp.VAE(784, hidden=(20000,), seed=0, threads=1)
    with pytest.raises(ValueError, match=r"would need about 1\.01 GB"):  # float64: twice that
        vaecpp.VAE(784, hidden=(20000,), seed=0, threads=1, dtype="float64")
    assert vaecpp.VAE(784, hidden=(2000,), seed=0, threads=1).count_params() == 3152788


def test_a_failed_allocation_leaves_the_model_usable():
    """IWAE's batch x k rows beyond what the process may allocate (here 32 x 10**6 decoder rows,
    about 6 GB, under a 4 GiB address-space cap): a MemoryError, after which the model still
    encodes and the same call fails the same way again (the engine's buffers kept their old
    sizes: it crashed on the next call before)."""
    setup = ("vae = vaecpp.VAE(16, hidden=(8,), objective='iwae', k=10**6, seed=0, threads=1)\n"
             "x = np.random.default_rng(0).random((64, 16)).astype('f4')")
    call = ("errors = []\n"
            "for attempt in ('evaluate', 'fit'):\n"
            "    try:\n"
            "        getattr(vae, attempt)(x)\n"
            "    except MemoryError:\n"
            "        errors.append(attempt)\n"
            "    z = vae.encode(x[:4])\n"
            "    assert z.shape == (4, 2) and np.isfinite(z).all()\n"
            "raise RuntimeError(' '.join(errors))")
    kind, _, message = peak(setup, call)
    assert (kind, message) == ("RuntimeError", "evaluate fit")


def test_iwae_rows_beyond_the_engine_are_a_value_error():
    vae = vaecpp.VAE(16, hidden=(8,), objective="iwae", k=10**8, seed=0, threads=1)
    x = np.random.default_rng(0).random((64, 16)).astype("f4")
    with pytest.raises(ValueError, match=r"32 samples with 100000000 draws each is 3200000000 "
                                         r"decoder rows, more than the engine's 2147483647"):
        vae.evaluate(x)
    with pytest.raises(ValueError, match=r"needs about \d+ GB of working memory, more than this "
                                         r"machine's"):
        vaecpp.VAE(16, hidden=(8,), objective="iwae", k=10**8 // 2, seed=0, threads=1).fit(
            x, batch_size=32, verbose=0)
    assert vae.encode(x[:2]).shape == (2, 2)


# ---- outputs whose size the caller chooses ------------------------------------------------------
def test_sample_beyond_memory_is_a_value_error_before_allocating():
    """sample(n) with an output of 31 GB in a process that may use 4 GiB: a ValueError naming
    the size, not a MemoryError from NumPy (or the machine's memory exhausted)."""
    setup = "vae = vaecpp.VAE(784, hidden=(4,), latent_dim=2, seed=0, threads=1)"
    for call in ("vae.sample(10**7)", "vae.decode(np.zeros((10**7, 2), np.float32))",
                 "vae.decode(np.zeros((10**6, 2)), sample=True)",
                 "plot.manifold_grid(vae, n=10**5)"):
        kind, grown_mb, message = peak(setup, call)
        print(call, kind, grown_mb, message)
        assert kind == "ValueError" and "GB of memory" in message, (call, kind, message)
        assert grown_mb < 200, (call, grown_mb)


def test_outputs_are_checked_against_the_memory_limit(monkeypatch):
    from vaecpp import _limits, plot
    vae = vaecpp.VAE(784, hidden=(4,), latent_dim=2, seed=0, threads=1)
    monkeypatch.setattr(_limits, "memory_limit", lambda: 100 << 20)  # 100 MiB
    big = 10**5  # 10**5 images of 784 float32 pixels: 314 MB
    for call in (lambda: vae.sample(big), lambda: vae.decode(np.zeros((big, 2))),
                 lambda: vae.decoder_outputs(np.zeros((big, 2))),
                 lambda: vae.decode(np.zeros((big, 2)), sample=True),
                 lambda: plot.manifold_grid(vae, n=400),
                 lambda: plot.interpolation(vae, np.zeros(784), np.ones(784), steps=big),
                 lambda: datasets.s_curve(10**8)):
        with pytest.raises(ValueError, match=r"would need about 0\.\d+ GB|would need about \d"):
            call()
    assert vae.sample(100).shape == (100, 784)  # what fits still works
    assert plot.manifold_grid(vae, n=5)[0].shape == (140, 140)


def test_memory_limit_figures():
    from vaecpp import _limits
    assert _limits.memory_limit() > 0 and _limits.physical_memory() > 0
    assert _limits.memory_limit() <= _limits.physical_memory()
    _limits.check_memory(1, "one byte")
    with pytest.raises(ValueError, match=r"x would need about 1e\+06 GB of memory"):
        _limits.check_memory(10**15, "x")


def test_memory_limit_counts_what_is_available_now(monkeypatch, tmp_path):
    """The limit is what can still be had now: MemAvailable + SwapFree (/proc/meminfo), what a
    container's cgroup limit leaves beside its usage less its inactive file cache; a file that is
    absent or says "max" (no limit) is skipped, and an old kernel's meminfo without MemAvailable
    counts as unknown."""
    from vaecpp import _limits
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384 kB\nMemFree:         1024 kB\n"
                       "MemAvailable:    2048 kB\nSwapTotal:       4096 kB\nSwapFree:        1024 kB\n")
    monkeypatch.setattr(_limits, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(_limits, "_CGROUP_FILES", ())
    assert _limits.available_memory() == (2048 + 1024) * 1024
    assert _limits.memory_limit() == (2048 + 1024) * 1024
    with pytest.raises(ValueError, match=r"x would need about 0\.0168 GB of memory, more than the "
                                         r"0\.00315 GB this process can use"):
        _limits.check_memory(16_800_000, "x")

    meminfo.write_text("MemTotal:       16384 kB\nMemFree:         1024 kB\n")  # before Linux 3.14
    assert _limits.available_memory() == 0
    monkeypatch.setattr(_limits, "_MEMINFO", str(tmp_path / "absent"))
    assert _limits.available_memory() == 0
    assert _limits.memory_limit() == min(m for m in (_limits.physical_memory(),
                                                     _limits._address_space_left()) if m > 0)

    v2_max, v2_now, v2_stat, v1_max, v1_now, v1_stat = (
        tmp_path / n for n in ("max", "current", "stat2", "limit", "usage", "stat1"))
    monkeypatch.setattr(_limits, "_CGROUP_FILES", ((str(v2_max), str(v2_now), str(v2_stat)),
                                                   (str(v1_max), str(v1_now), str(v1_stat))))
    v2_max.write_text("max\n")  # no limit in v2: v1's files are read next
    v1_max.write_text("1000000000\n")
    assert _limits._cgroup_left() == 1_000_000_000  # v1's usage unknown: the limit
    v1_now.write_text("900000000\n")
    assert _limits._cgroup_left() == 100_000_000  # no memory.stat: all of the usage counts
    v1_stat.write_text("cache 500000000\ninactive_file 1000\ntotal_inactive_file 300000000\n")
    assert _limits._cgroup_left() == 400_000_000  # the hierarchy's inactive file cache drops
    v2_max.write_text("50000000\n")
    v2_now.write_text("60000000\n")  # over the limit (reclaim pending), no cache: 1 byte left
    assert _limits._cgroup_left() == 1
    assert _limits.memory_limit() == 1
    v2_stat.write_text("anon 10000000\nfile 50000000\ninactive_file 40000000\n")
    assert _limits._cgroup_left() == 30_000_000
    v2_max.write_text("max\n")
    v1_max.write_text("not a number\n")
    assert _limits._cgroup_left() == 0


def test_available_memory_on_this_machine():
    from vaecpp import _limits
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("no /proc/meminfo (not Linux)")
    have = _limits.available_memory()
    assert 0 < have
    assert _limits.memory_limit() <= have


@pytest.fixture
def small(blobs):
    return vaecpp.VAE(20, hidden=(8,), latent_dim=2, seed=0, threads=1), blobs[:16]


def test_method_integers_beyond_the_engine_are_value_errors(small):
    vae, x = small
    for call in (lambda: vae.fit(x, batch_size=2**31, verbose=0),
                 lambda: vae.evaluate(x, batch_size=2**40, verbose=0),
                 lambda: vae.encode(x, batch_size=2**63),
                 lambda: vae.log_likelihood(x, k=2**31),
                 lambda: vae.sample(2**40),
                 lambda: vae.fit(x, epochs=2**40, verbose=0)):
        with pytest.raises(ValueError, match=f"must be <= {INT_MAX}"):
            call()
    with pytest.raises(ValueError, match="threads must be <= 1024"):
        vae.threads = 10**6
    assert vae.threads == 1
    vae.step = 2**40  # the optimizer's step is a 64-bit counter
    assert vae.step == 2**40
    with pytest.raises(ValueError, match="step must be <="):
        vae.step = 2**63


def test_compile_and_callbacks_speak_the_vocabulary(small):
    vae, x = small
    with pytest.raises(ValueError, match="needs 'name'"):
        vae.compile({})
    with pytest.raises(ValueError, match="needs 'name'"):
        vae.compile({"name": "nope"})
    with pytest.raises(TypeError, match="unknown option"):
        vae.compile({"name": "adam", "colour": 1})
    with pytest.raises(TypeError, match="Callback objects, got int"):
        vae.fit(x, epochs=1, verbose=0, callbacks=[5])
    with pytest.raises(TypeError, match="a list of vaecpp.callbacks.Callback"):
        vae.fit(x, epochs=1, verbose=0, callbacks=vaecpp.callbacks.History())
    assert vae.history.epoch == []


def test_learning_rate_must_be_finite_in_the_model_dtype(small):
    vae, x = small
    with pytest.raises(ValueError, match="learning_rate must be finite as float32"):
        vae.compile(vaecpp.optimizers.Adam(learning_rate=1e300))
    assert vae.optimizer is None
    vaecpp.VAE(20, hidden=(8,), seed=0, dtype="float64").compile(
        vaecpp.optimizers.Adam(learning_rate=1e300))  # finite as float64: the caller's choice
    vae.compile("adam")

    class Explode(vaecpp.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.optimizer.learning_rate = float("nan")
    vae.fit(x, epochs=1, verbose=0, callbacks=[Explode()])
    before = vae.get_weights()
    with pytest.raises(ValueError, match="learning_rate must be finite"):
        vae.fit(x, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, vae.get_weights()))


def test_values_are_finite_after_the_cast(small):
    vae, x = small
    with pytest.raises(ValueError, match="NaN or inf"):  # no RuntimeWarning from the cast
        vae.encode(np.full((1, 20), 1e300))
    w = vae.get_weights()
    with pytest.raises(ValueError, match="must be finite numbers \\(as float32\\)"):
        vae.set_weights([np.full(a.shape, 1e300) for a in w])
    with pytest.raises(TypeError, match="must hold real numbers"):
        vae.set_weights([a.astype(np.complex64) for a in w])
    assert all(np.array_equal(a, b) for a, b in zip(w, vae.get_weights()))
    vae.compile("adam")
    state = vae.get_optimizer_state()
    with pytest.raises(ValueError, match="'v' must be >= 0"):
        vae.set_optimizer_state({**state, "v": -np.ones_like(state["v"])})
    with pytest.raises(ValueError, match="'m' must be finite"):
        vae.set_optimizer_state({**state, "m": np.full_like(state["m"], np.nan)})
    with pytest.raises(ValueError, match="optimizer step must be >= 0"):
        vae.set_optimizer_state({**state, "step": -1})


def test_a_loss_that_overflows_is_an_error_not_a_number():
    """An untrained float32 Gaussian VAE on a pixel of 133 overflows its KL term: evaluate and
    gradients raise FloatingPointError instead of handing back inf (found by the fuzz suite)."""
    vae = vaecpp.VAE(6, hidden=(4,), latent_dim=2, seed=0, threads=1, likelihood="gaussian")
    x = np.array([[133.0, 0, 0, 0, 0, 0]])
    with pytest.raises(FloatingPointError, match="overflow"):
        vae.evaluate(x)
    with pytest.raises(FloatingPointError, match="overflow"):
        vae.gradients(x)
    assert np.isfinite(vae.evaluate(x / 133.0))
