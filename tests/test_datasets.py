"""Loaders for MNIST, Fashion-MNIST, Frey faces, digits and the S-curve.

Most tests use small IDX and MATLAB files written here; the real data sets
are read only where they exist on this machine.
"""

import gzip
import hashlib
import os
import pathlib

import numpy as np
import pytest

from vaecpp import datasets

DEBIAN_FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")
SHARED_DATA = pathlib.Path("/work/shared/data")


def idx_bytes(array, magic=None):
    """An unsigned-byte IDX file holding ``array`` (``magic`` overrides the header's)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_split(folder, split="train", n=5, gz=True, seed=0, images=None, labels=None,
                dotted=False):
    """Writes an MNIST-style split of ``n`` random images; returns (images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if images is None else images
    labels = rng.integers(0, 10, n, dtype=np.uint8) if labels is None else labels
    prefix = "train" if split == "train" else "t10k"
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        name = f"{prefix}-{kind}-ubyte"
        if dotted:
            name = name.replace("-idx", ".idx")
        data = idx_bytes(array)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images, labels


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No environment variables, an empty cache and no system directories."""
    for var in ("VAECPP_DATA", "VAECPP_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VAECPP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(datasets._FASHION_MNIST, "system_dirs", (tmp_path / "system",))
    return tmp_path


# ---- IDX parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_gzip_and_raw_idx(isolated, gz):
    images, labels = write_split(isolated / "d", "test", n=4, gz=gz)
    x, y = datasets.mnist(path=isolated / "d", split="test")
    assert x.dtype == np.uint8 and x.shape == (4, 28, 28)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    x[0, 0, 0] = 1  # the arrays are writable


def test_normalize_gives_float32_unit_interval(isolated):
    images, _ = write_split(isolated / "d", n=3)
    x, _ = datasets.fashion_mnist(path=isolated / "d", normalize=True)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-6)


def test_dotted_file_names_are_found(isolated):
    write_split(isolated / "d", n=2, gz=False, dotted=True)
    assert datasets.mnist(path=isolated / "d")[0].shape == (2, 28, 28)


def _corrupt(folder, which, transform):
    name = f"train-{which}-ubyte.gz"
    path = folder / name
    path.write_bytes(transform(gzip.decompress(path.read_bytes()), path.read_bytes()))
    return name


@pytest.mark.parametrize(
    "which, transform, message",
    [
        ("images-idx3", lambda raw, gz: gzip.compress(raw[:-100]), "truncated IDX file"),
        ("images-idx3", lambda raw, gz: gzip.compress(raw[:10]), "truncated IDX header"),
        ("labels-idx1", lambda raw, gz: gzip.compress(raw[:2]), "no magic number"),
        ("images-idx3", lambda raw, gz: gzip.compress(raw + b"xx"), "2 bytes after"),
        ("images-idx3", lambda raw, gz: gz[: len(gz) // 2], "truncated gzip"),
        ("labels-idx1", lambda raw, gz: gz[:-8] + bytes(8), "corrupt or truncated gzip"),
        ("images-idx3", lambda raw, gz: gzip.compress(idx_bytes([1, 2])), "bad IDX magic"),
        ("labels-idx1", lambda raw, gz: gzip.compress(b"\0\0\x08\x03" + raw[4:]), "2051"),
    ],
    ids=["short-data", "short-header", "no-magic", "trailing", "cut-gzip", "bad-crc",
         "labels-as-images", "images-magic-in-labels"],
)
def test_broken_idx_files_raise_value_error_naming_the_file(isolated, which, transform, message):
    write_split(isolated / "d", n=3)
    name = _corrupt(isolated / "d", which, transform)
    with pytest.raises(ValueError, match=message) as info:
        datasets.mnist(path=isolated / "d")
    assert name in str(info.value)


def test_corrupt_cached_idx_file_says_to_delete_it(isolated):
    """A damaged copy in the cache fails the same way on every call; the error names it and
    says what to do: delete it (then it is downloaded again) or, with no download, replace it."""
    cached = isolated / "cache" / "mnist"
    write_split(cached, n=3)
    name = _corrupt(cached, "images-idx3", lambda raw, gz: gz[: len(gz) // 2])
    with pytest.raises(ValueError, match="truncated gzip") as info:
        datasets.mnist()
    assert str(info.value).endswith(f"; delete {cached / name} and load again to download a "
                                    f"fresh copy")
    with pytest.raises(ValueError, match=f"; replace {cached / name} with an intact copy$"):
        datasets.mnist(download=False)
    with pytest.raises(ValueError, match="with an intact copy$"):
        datasets.mnist(path=cached)  # an explicit path is never downloaded to


def test_bad_magic_message_says_which_kind_was_found(isolated):
    write_split(isolated / "d", n=3)
    _corrupt(isolated / "d", "images-idx3", lambda raw, gz: gzip.compress(idx_bytes([1, 2, 3])))
    with pytest.raises(ValueError, match="this is an IDX labels file"):
        datasets.mnist(path=isolated / "d")


def test_inconsistent_files_are_rejected(isolated):
    rng = np.random.default_rng(1)
    write_split(isolated / "a", n=3, labels=np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="3 images but .* 4 labels"):
        datasets.mnist(path=isolated / "a")
    write_split(isolated / "b", n=2, images=rng.integers(0, 255, (2, 28, 27), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected 28 x 28"):
        datasets.mnist(path=isolated / "b")
    write_split(isolated / "c", n=2, labels=np.array([3, 12], np.uint8))
    with pytest.raises(ValueError, match="label 12 out of range"):
        datasets.mnist(path=isolated / "c")


def test_bad_split_name(isolated):
    with pytest.raises(ValueError, match="split must be"):
        datasets.mnist(split="validation", download=False)


# ---- where files are found ---------------------------------------------------------------------

def test_missing_files_with_explicit_path_name_the_place(isolated):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        datasets.mnist(path=isolated / "nowhere")


def test_nothing_found_and_no_download(isolated):
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST test files") as info:
        datasets.fashion_mnist(split="test", download=False)
    assert str(isolated / "system") in str(info.value)


def test_search_order_data_env_then_cache_then_system(isolated, monkeypatch):
    data_images, _ = write_split(isolated / "data" / "fashion-mnist", n=2, seed=1)
    cache_images, _ = write_split(isolated / "cache" / "fashion-mnist", n=3, seed=2)
    system_images, _ = write_split(isolated / "system", n=4, seed=3)
    load = lambda: datasets.fashion_mnist(download=False)[0]  # noqa: E731
    np.testing.assert_array_equal(load(), cache_images)
    monkeypatch.setenv("VAECPP_DATA", os.pathsep.join([str(isolated / "x"), str(isolated / "data")]))
    np.testing.assert_array_equal(load(), data_images)
    monkeypatch.delenv("VAECPP_DATA")
    monkeypatch.setenv("VAECPP_CACHE", str(isolated / "empty"))
    np.testing.assert_array_equal(load(), system_images)
    explicit = datasets.fashion_mnist(path=isolated / "cache" / "fashion-mnist", cache_dir=isolated)
    np.testing.assert_array_equal(explicit[0], cache_images)


def test_cache_dir_argument_overrides_env(isolated):
    images, _ = write_split(isolated / "elsewhere" / "mnist", "test", n=2)
    x, _ = datasets.mnist(split="test", cache_dir=isolated / "elsewhere", download=False)
    np.testing.assert_array_equal(x, images)


def test_mnist_and_fashion_use_separate_subdirectories(isolated, monkeypatch):
    monkeypatch.setenv("VAECPP_DATA", str(isolated / "data"))
    write_split(isolated / "data" / "mnist", n=2)
    with pytest.raises(FileNotFoundError):
        datasets.fashion_mnist(download=False)


# ---- MNIST fallback ----------------------------------------------------------------------------

def test_mnist_fallback_to_test_set_warns(isolated, monkeypatch):
    monkeypatch.setenv("VAECPP_DATA", str(isolated / "data"))
    images, _ = write_split(isolated / "data" / "mnist", "test", n=3)
    with pytest.warns(datasets.DatasetFallbackWarning, match="using the MNIST test set"):
        x, _ = datasets.mnist(split="train", download=False, fallback=True)
    np.testing.assert_array_equal(x, images)


def test_mnist_fallback_to_fashion_mnist_warns(isolated):
    images, _ = write_split(isolated / "system", "test", n=2)
    with pytest.warns(datasets.DatasetFallbackWarning, match="Fashion-MNIST test set"):
        x, _ = datasets.mnist(split="test", download=False, fallback=True, normalize=True)
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-6)


def test_mnist_without_fallback_or_substitute_raises(isolated):
    with pytest.raises(FileNotFoundError, match="MNIST train files"):
        datasets.mnist(download=False)
    with pytest.raises(FileNotFoundError, match="MNIST train files"):
        datasets.mnist(download=False, fallback=True)


def test_load_mnist_gives_keras_pairs(isolated, monkeypatch):
    monkeypatch.setenv("VAECPP_DATA", str(isolated / "data"))
    train = write_split(isolated / "data" / "mnist", "train", n=6, seed=1)
    test = write_split(isolated / "data" / "mnist", "test", n=4, seed=2)
    (x, y), (xt, yt) = datasets.load_mnist(download=False, fallback=False)
    assert x.dtype == np.float32 and x.max() <= 1.0
    np.testing.assert_allclose(x, train[0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, train[1])
    np.testing.assert_allclose(xt, test[0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(yt, test[1])


def test_load_mnist_splits_the_test_set_when_the_training_set_is_missing(isolated, monkeypatch):
    monkeypatch.setenv("VAECPP_DATA", str(isolated / "data"))
    images, labels = write_split(isolated / "data" / "mnist", "test", n=10)
    with pytest.warns(datasets.DatasetFallbackWarning, match="first 7 digits for training, its last 3"):
        (x, y), (xt, yt) = datasets.load_mnist(download=False, holdout=3, normalize=False)
    np.testing.assert_array_equal(x, images[:7])
    np.testing.assert_array_equal(yt, labels[7:])
    with pytest.raises(ValueError, match="holdout"):
        datasets.load_mnist(download=False, holdout=10)
    with pytest.raises(FileNotFoundError, match="MNIST train files"):
        datasets.load_mnist(download=False, fallback=False)


def test_load_mnist_falls_back_to_fashion_mnist(isolated):
    train = write_split(isolated / "system", "train", n=3)
    write_split(isolated / "system", "test", n=2)
    with pytest.warns(datasets.DatasetFallbackWarning, match="Fashion-MNIST's training and test"):
        (x, _), (xt, _) = datasets.load_mnist(download=False, normalize=False)
    np.testing.assert_array_equal(x, train[0])
    assert len(xt) == 2


def test_load_mnist_rejects_bad_arguments(isolated):
    with pytest.raises(ValueError, match="holdout"):
        datasets.load_mnist(holdout=0)
    with pytest.raises(TypeError, match="split"):
        datasets.load_mnist(split="train")


# ---- Frey faces --------------------------------------------------------------------------------

def write_frey(path, n=7, seed=0):
    import scipy.io

    ff = np.random.default_rng(seed).integers(0, 256, (560, n), dtype=np.uint8)
    scipy.io.savemat(path, {"ff": ff})
    return ff


def test_frey_faces_from_file_and_directory(isolated):
    ff = write_frey(isolated / "frey_rawface.mat")
    for path in (isolated / "frey_rawface.mat", isolated):
        faces = datasets.frey_faces(path)
        assert faces.shape == (7, 28, 20) and faces.dtype == np.float32
        np.testing.assert_allclose(faces[2].ravel(), ff[:, 2] / 255.0, rtol=1e-6)


def test_frey_faces_found_in_vaecpp_data(isolated, monkeypatch):
    write_frey(isolated / "frey_rawface.mat", n=3)
    monkeypatch.setenv("VAECPP_DATA", str(isolated))
    assert datasets.frey_faces(download=False).shape == (3, 28, 20)


def test_frey_faces_errors(isolated):
    with pytest.raises(FileNotFoundError, match="frey_rawface.mat"):
        datasets.frey_faces(download=False)
    bad = isolated / "bad.mat"
    bad.write_bytes(b"this is not a MATLAB file" * 10)
    with pytest.raises(ValueError, match="bad.mat"):
        datasets.frey_faces(bad)
    import scipy.io

    scipy.io.savemat(isolated / "other.mat", {"faces": np.zeros((560, 2), np.uint8)})
    with pytest.raises(ValueError, match="other.mat.*'ff'"):
        datasets.frey_faces(isolated / "other.mat")


def test_corrupt_cached_frey_file_says_to_delete_it(isolated):
    cached = isolated / "cache" / "frey" / "frey_rawface.mat"
    cached.parent.mkdir(parents=True)
    write_frey(cached)
    cached.write_bytes(cached.read_bytes()[:-100])
    with pytest.raises(ValueError, match="frey_rawface.mat: not a readable MATLAB file") as info:
        datasets.frey_faces()
    assert str(info.value).endswith(f"; delete {cached} and load again to download a fresh copy")
    with pytest.raises(ValueError, match=f"; replace {cached} with an intact copy$"):
        datasets.frey_faces(download=False)


# ---- digits and the S-curve --------------------------------------------------------------------

def test_digits():
    pytest.importorskip("sklearn")
    images, labels = datasets.digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.shape == (1797,) and set(np.unique(labels)) == set(range(10))


def test_s_curve_is_deterministic_per_seed():
    x, t = datasets.s_curve(200, seed=3)
    assert x.shape == (200, 2) and t.shape == (200,) and x.dtype == np.float32
    np.testing.assert_array_equal(x, datasets.s_curve(200, seed=3)[0])
    assert not np.array_equal(x, datasets.s_curve(200, seed=4)[0])
    assert np.all(np.abs(t) <= 1.5 * np.pi)


def test_s_curve_without_noise_lies_on_the_curve():
    x, t = datasets.s_curve(50, noise=0.0)
    np.testing.assert_allclose(x[:, 0], np.sin(t), atol=1e-6)
    np.testing.assert_allclose(x[:, 1], np.sign(t) * (np.cos(t) - 1), atol=1e-6)


# ---- the real data sets, where present ---------------------------------------------------------

def test_real_fashion_mnist_from_debian(isolated, monkeypatch):
    if not (DEBIAN_FASHION / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not found at {DEBIAN_FASHION}")
    monkeypatch.setitem(datasets._FASHION_MNIST, "system_dirs", (DEBIAN_FASHION,))
    x, y = datasets.fashion_mnist(split="test", download=False)
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert np.bincount(y).tolist() == [1000] * 10


def test_real_mnist_test_set_and_its_checksums(isolated):
    folder = SHARED_DATA / "mnist"
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST test set not found at {folder}")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert digest == datasets._MNIST["sha256"][name]
    x, y = datasets.mnist(path=folder, split="test", normalize=True)
    assert x.shape == (10000, 28, 28) and 0.0 <= x.min() and x.max() == 1.0
    assert y[:5].tolist() == [7, 2, 1, 0, 4]


def test_real_frey_faces(isolated):
    path = SHARED_DATA / "frey_rawface.mat"
    if not path.is_file():
        pytest.skip(f"Frey faces not found at {path}")
    assert datasets.sha256_of(path) == datasets._FREY["sha256"]
    faces = datasets.frey_faces(path)
    assert faces.shape == (1965, 28, 20) and faces.dtype == np.float32
    assert 0.0 <= faces.min() and faces.max() <= 1.0
