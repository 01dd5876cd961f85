"""Data sets for the examples: MNIST, Fashion-MNIST, Frey faces, digits, toy data, image folders.

Where files are looked for
--------------------------
MNIST, Fashion-MNIST and the Frey faces are read from the first of:

1. the ``path`` argument (a directory holding the files; for
   :func:`frey_faces` also the ``.mat`` file itself).  When ``path`` is
   given nothing else is searched;
2. ``$VAECPP_DATA`` (a directory, or several separated by ``os.pathsep``),
   in a subdirectory per data set: ``mnist/``, ``fashion-mnist/``, ``frey/``
   (``frey_rawface.mat`` may also lie directly in ``$VAECPP_DATA``);
3. the cache directory (``cache_dir`` argument, else ``$VAECPP_CACHE``,
   else ``~/.cache/vaecpp``), in the same subdirectories;
4. for Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist``
   (package ``dataset-fashion-mnist``);
5. else, if ``download=True``, the files are downloaded into the cache
   directory from the public mirrors, or from ``mirror`` (a base URL holding
   the files) or ``$VAECPP_MIRROR`` (a base URL laid out like the
   subdirectories above), and verified against known SHA-256 checksums.

IDX files may be gzip-compressed (``*.gz``) or not (also under the
``train-images.idx3-ubyte`` spelling).  Local copies are checked by parsing
(magic numbers, dimensions and sizes), since repackaged copies such as
Debian's are recompressed and differ byte-wise from the originals; downloads
are checked by SHA-256.
"""

import os
import pathlib
import warnings

import numpy as np

from . import _idx, _limits, _matfile
from ._download import DownloadError, default_cache_dir, fetch, sha256_of
from ._image_folder import ImageFolderSource, image_folder

__all__ = [
    "mnist",
    "load_mnist",
    "fashion_mnist",
    "frey_faces",
    "digits",
    "s_curve",
    "image_folder",
    "ImageFolderSource",
    "DatasetFallbackWarning",
    "DownloadError",
    "default_cache_dir",
    "fetch",
    "sha256_of",
]

DATA_ENV = "VAECPP_DATA"
MIRROR_ENV = "VAECPP_MIRROR"

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SPLIT_SIZES = {"train": 60000, "test": 10000}

# SHA-256 of the original gzip files.  MNIST: as listed by TensorFlow
# Datasets (url_checksums/mnist.txt); the two test-set values also match the
# original files kept in this project's shared test data.  Fashion-MNIST: as
# listed by TensorFlow Datasets (url_checksums/fashion_mnist.txt) for the
# files on Zalando's own server.  Whether Keras' copy of Fashion-MNIST is
# byte-identical is not known; a copy that differs fails verification and
# the next mirror is tried.
_MNIST = {
    "title": "MNIST",
    "subdir": "mnist",
    "mirrors": (
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    "sha256": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "system_dirs": (),
}
_FASHION_MNIST = {
    "title": "Fashion-MNIST",
    "subdir": "fashion-mnist",
    "mirrors": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    "sha256": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "system_dirs": (pathlib.Path("/usr/share/datasets/fashion-mnist"),),
}
# Sam Roweis' page publishes no checksum for the Frey faces.  This SHA-256
# is that of the copy kept in this project's shared test data (a MATLAB v5
# file with one uint8 variable ``ff`` of 560 x 1965); it has not been
# checked against the file the URL serves today.
_FREY = {
    "title": "Frey faces",
    "subdir": "frey",
    "filename": "frey_rawface.mat",
    "mirrors": ("https://cs.nyu.edu/~roweis/data/",),
    "sha256": "fb157ca5b704a636022d4b8b51799b01107bf65310f1a81242fac7f8da892158",
    "size": 1100584,  # bytes of that copy
}


MAX_IMAGES = 1_000_000
"""The most images (and labels) an MNIST-style IDX file may declare; the real ones hold 60,000
and 10,000.  The images file may declare no more images than its labels file."""
MAX_FREY_FRAMES = 100_000
"""The most frames a Frey faces file may declare (the real one holds 1965)."""


def _idx_size(stem, n):
    """Bytes of the uncompressed IDX file ``stem`` holding ``n`` items (28 x 28 images or labels)."""
    return 16 + 784 * n if "images" in stem else 8 + n


def _gz_bound(size):
    """A bound on the gzip file of ``size`` bytes of data: deflate's stored blocks add 5 bytes per
    64 KiB, the gzip header and trailer a few dozen."""
    return size + size // 1000 + 1024


class DatasetFallbackWarning(UserWarning):
    """Issued when a loader returns a substitute for the data set asked for."""


def _search_dirs(spec, path, cache_dir, root_too=False):
    """The directories to look in, in order (see the module docstring)."""
    if path is not None:
        return [pathlib.Path(path)]
    dirs = []
    for root in filter(None, os.environ.get(DATA_ENV, "").split(os.pathsep)):
        root = pathlib.Path(root).expanduser()
        dirs.append(root / spec["subdir"])
        if root_too:
            dirs.append(root)
    cache = pathlib.Path(default_cache_dir() if cache_dir is None else cache_dir)
    dirs.append(cache / spec["subdir"])
    dirs.extend(spec.get("system_dirs", ()))
    return dirs


def _mirror_urls(spec, filename, mirror):
    """The URLs to download ``filename`` from, best first."""
    if mirror is not None:
        bases = [mirror]
    elif os.environ.get(MIRROR_ENV):
        bases = [os.environ[MIRROR_ENV].rstrip("/") + "/" + spec["subdir"]]
    else:
        bases = spec["mirrors"]
    return [base.rstrip("/") + "/" + filename for base in bases]


def _idx_candidates(stem):
    """File names an IDX file goes by: gzip or not, ``-idx`` or ``.idx``."""
    dotted = stem.replace("-idx", ".idx")
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def _find_pair(dirs, stems):
    """The first directory holding all of ``stems``, as a list of paths, or None."""
    for d in dirs:
        found = []
        for stem in stems:
            hit = next((d / n for n in _idx_candidates(stem) if (d / n).is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return found
    return None


def _read_found(can_download, read, file, *args, **kwargs):
    """``read(file, *args, **kwargs)`` for a data file found on disk or downloaded. Its
    ValueError (a corrupt, truncated or foreign file, which every later call would meet again)
    ends with what to do: delete the file, and the loader downloads a fresh copy
    (``can_download``: ``download=True`` and no explicit ``path``), or replace it."""
    try:
        return read(file, *args, **kwargs)
    except ValueError as e:
        fix = (f"delete {file} and load again to download a fresh copy" if can_download
               else f"replace {file} with an intact copy")
        raise ValueError(f"{e}; {fix}") from None


def _load_idx_split(spec, split, path, normalize, download, mirror, cache_dir):
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    stems = _SPLIT_FILES[split]
    dirs = _search_dirs(spec, path, cache_dir)
    files = _find_pair(dirs, stems)
    if files is None:
        where = "\n".join(f"  {d}" for d in dirs)
        if path is not None or not download:
            raise FileNotFoundError(
                f"{spec['title']} {split} files ({', '.join(stems)}, optionally .gz) "
                f"not found in:\n{where}"
            )
        target = pathlib.Path(default_cache_dir() if cache_dir is None else cache_dir)
        target = target / spec["subdir"]
        files = [
            fetch(_mirror_urls(spec, s + ".gz", mirror), spec["sha256"][s + ".gz"], target,
                  max_bytes=_gz_bound(_idx_size(s, _SPLIT_SIZES[split])))
            for s in stems
        ]
    can_download = download and path is None
    labels = _read_found(can_download, _idx.read_idx, files[1], _idx.LABELS_MAGIC,
                         max_bytes=MAX_IMAGES)
    images = _read_found(can_download, _idx.read_idx, files[0], _idx.IMAGES_MAGIC,
                         item_shape=(28, 28), max_bytes=28 * 28 * max(len(labels), 1))
    if len(images) != len(labels):
        raise ValueError(
            f"{files[0]} holds {len(images)} images but {files[1]} holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{files[1]}: label {labels.max()} out of range 0-9")
    if normalize:
        images = images.astype(np.float32) / np.float32(255)
    return images, labels


def fashion_mnist(path=None, split="train", normalize=False, download=True, mirror=None,
                  cache_dir=None):
    """Loads Fashion-MNIST (Zalando's 28 x 28 clothing images, 10 classes).

    Parameters
    ----------
    path : str or os.PathLike, optional
        A directory holding the IDX files (``train-images-idx3-ubyte.gz``,
        ``train-labels-idx1-ubyte.gz``, ``t10k-...``; gzip or not).  If
        given, only this directory is used.  Otherwise the places listed in
        the module docstring are searched, Debian's
        ``/usr/share/datasets/fashion-mnist`` among them.
    split : {"train", "test"}
        The 60,000 training or the 10,000 test images.
    normalize : bool
        If False, images are ``uint8`` in 0-255 (as in Keras); if True,
        ``float32`` in [0, 1] (divided by 255).
    download : bool
        Whether to download missing files into the cache directory.
    mirror : str, optional
        A base URL holding the four ``.gz`` files, used instead of the
        public mirrors (default ``$VAECPP_MIRROR/fashion-mnist``, if set).
        Downloads are always checked against the known SHA-256.
    cache_dir : str or os.PathLike, optional
        Default ``$VAECPP_CACHE`` or ``~/.cache/vaecpp``; files go in its
        ``fashion-mnist/`` subdirectory.

    Returns
    -------
    images : numpy.ndarray
        ``(n, 28, 28)``, ``uint8`` or ``float32`` (see ``normalize``).
    labels : numpy.ndarray
        ``(n,)`` ``uint8`` class indices: 0 T-shirt/top, 1 trouser,
        2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag,
        9 ankle boot.

    Raises
    ------
    FileNotFoundError
        If the files are not found and ``download`` is False (or ``path``
        was given).
    DownloadError
        If downloading failed or gave a file with the wrong checksum.
    ValueError
        Naming the file, if a file is truncated or corrupt, and saying what to
        do: delete it to download a fresh copy (``download=True``, no
        ``path``), or replace it.
    """
    return _load_idx_split(_FASHION_MNIST, split, path, normalize, download, mirror, cache_dir)


def mnist(path=None, split="train", normalize=False, download=True, mirror=None,
          cache_dir=None, fallback=False):
    """Loads MNIST (28 x 28 handwritten digits).

    Parameters are as for :func:`fashion_mnist` (the subdirectory is
    ``mnist/``; no system directory is searched), plus:

    Parameters
    ----------
    fallback : bool
        If True and the requested split cannot be loaded (not found, the
        download failed, or a file is corrupt), return a substitute and say
        so with a :class:`DatasetFallbackWarning`: for ``split="train"`` the
        MNIST test set (10,000 digits), else Fashion-MNIST's same split
        (which has clothing classes, not digits).  If no substitute can be
        loaded either, the original error is raised.

    Returns
    -------
    images : numpy.ndarray
        ``(n, 28, 28)``, ``uint8`` or ``float32`` (see ``normalize``).
    labels : numpy.ndarray
        ``(n,)`` ``uint8`` digits 0-9.

    Examples
    --------
    >>> x, y = mnist(normalize=True, fallback=True)  # doctest: +SKIP
    """
    args = (normalize, download, mirror, cache_dir)
    try:
        return _load_idx_split(_MNIST, split, path, *args)
    except (OSError, ValueError) as error:
        if not fallback or (isinstance(error, ValueError) and split not in _SPLIT_FILES):
            raise
        reason = " ".join(str(error).split())
        substitutes = [(_FASHION_MNIST, split)]
        if split == "train":
            substitutes.insert(0, (_MNIST, "test"))
        for spec, sub_split in substitutes:
            try:
                data = _load_idx_split(spec, sub_split, None if spec is not _MNIST else path, *args)
            except (OSError, ValueError):
                continue
            warnings.warn(
                f"MNIST {split} set unavailable ({reason}); using the {spec['title']} "
                f"{sub_split} set instead ({len(data[0])} images)",
                DatasetFallbackWarning,
                stacklevel=2,
            )
            return data
        raise


def load_mnist(normalize=True, fallback=True, holdout=1000, **kwargs):
    """MNIST as Keras's ``mnist.load_data()`` gives it: ``((x_train, y_train), (x_test, y_test))``.

    Parameters
    ----------
    normalize : bool
        ``float32`` in [0, 1] (default) or ``uint8`` in 0-255.
    fallback : bool
        What to do where the 60,000 training digits cannot be loaded (not
        found, no network): if True, say so with a
        :class:`DatasetFallbackWarning` and use the MNIST test set split in
        two, its first ``10000 - holdout`` digits for training and its last
        ``holdout`` for testing; if MNIST cannot be loaded at all,
        Fashion-MNIST's training and test sets.  If False, raise.
    holdout : int
        Test-set size when the MNIST test set stands in for both sets.
    **kwargs
        ``path``, ``download``, ``mirror``, ``cache_dir`` as for :func:`mnist`.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        Images ``(n, 28, 28)`` and labels ``(n,)``.
    """
    holdout = int(holdout)
    if not 0 < holdout < _SPLIT_SIZES["test"]:
        raise ValueError(f"holdout must be between 1 and {_SPLIT_SIZES['test'] - 1}, got {holdout}")
    args = (kwargs.pop("path", None), normalize, kwargs.pop("download", True),
            kwargs.pop("mirror", None), kwargs.pop("cache_dir", None))
    if kwargs:
        raise TypeError(f"load_mnist() got unexpected keyword arguments {sorted(kwargs)}")
    path, rest = args[0], args[1:]
    try:
        train = _load_idx_split(_MNIST, "train", path, *rest)
    except (OSError, ValueError) as error:
        if not fallback:
            raise
        reason = " ".join(str(error).split())
        try:
            x, y = _load_idx_split(_MNIST, "test", path, *rest)
        except (OSError, ValueError):
            try:
                train = _load_idx_split(_FASHION_MNIST, "train", None, *rest)
                test = _load_idx_split(_FASHION_MNIST, "test", None, *rest)
            except (OSError, ValueError):
                raise error from None
            warnings.warn(f"MNIST unavailable ({reason}); using Fashion-MNIST's training and test "
                          f"sets instead ({len(train[0])} + {len(test[0])} clothing images)",
                          DatasetFallbackWarning, stacklevel=2)
            return train, test
        if holdout >= len(x):
            raise ValueError(f"holdout={holdout} leaves none of the {len(x)} MNIST test images "
                             f"for training") from None
        cut = len(x) - holdout
        warnings.warn(f"MNIST training set unavailable ({reason}); using the MNIST test set "
                      f"instead: its first {cut} digits for training, its last {holdout} for "
                      f"testing", DatasetFallbackWarning, stacklevel=2)
        return (x[:cut], y[:cut]), (x[cut:], y[cut:])
    return train, _load_idx_split(_MNIST, "test", path, *rest)


def frey_faces(path=None, download=True, mirror=None, cache_dir=None):
    """Loads Brendan Frey's face images (1965 greyscale frames of 28 x 20).

    Parameters
    ----------
    path : str or os.PathLike, optional
        ``frey_rawface.mat`` itself or a directory holding it.  If given,
        only this is used; else ``$VAECPP_DATA`` (directly or in ``frey/``),
        the cache directory's ``frey/`` and finally a download are tried.
    download, mirror, cache_dir
        As for :func:`fashion_mnist`.  The download is checked against the
        SHA-256 of a known copy (the source publishes no checksum).

    Returns
    -------
    numpy.ndarray
        ``(1965, 28, 20)`` ``float32`` in [0, 1].

    Raises
    ------
    FileNotFoundError, DownloadError
        If the file is not found and cannot be downloaded.
    ValueError
        Naming the file, if it is not a MATLAB 5 / 7 file with a 560-row uint8
        variable ``ff`` of at most ``MAX_FREY_FRAMES`` columns, checked before
        its data are read (see docs/reliability.md); the message ends with what
        to do: delete it to download a fresh copy, or replace it.
    """
    name = _FREY["filename"]
    file = None
    if path is not None and pathlib.Path(path).is_file():
        file = pathlib.Path(path)
    else:
        dirs = _search_dirs(_FREY, path, cache_dir, root_too=True)
        file = next((d / name for d in dirs if (d / name).is_file()), None)
        if file is None:
            if path is not None or not download:
                where = "\n".join(f"  {d}" for d in dirs)
                raise FileNotFoundError(f"{name} not found in:\n{where}")
            target = pathlib.Path(default_cache_dir() if cache_dir is None else cache_dir)
            file = fetch(_mirror_urls(_FREY, name, mirror), _FREY["sha256"], target / "frey",
                         max_bytes=_FREY["size"])
    return _read_found(download and path is None, _read_frey, file)


def _read_frey(file):
    # the file is walked by hand (vaecpp._matfile): the variable's class, dimensions and the
    # byte count of its data are checked before any data is read or inflated
    frames = _matfile.read_uint8_matrix(file, "ff", 28 * 20, MAX_FREY_FRAMES)  # (n, 560)
    return (frames.reshape(-1, 28, 20) / np.float32(255)).astype(np.float32, copy=False)


def digits():
    """Loads scikit-learn's 8 x 8 handwritten digits (1797 images; no download).

    Returns
    -------
    images : numpy.ndarray
        ``(1797, 8, 8)`` ``float32`` in [0, 1] (the 0-16 counts divided by 16).
    labels : numpy.ndarray
        ``(1797,)`` ``int64`` digits 0-9.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("digits() needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def s_curve(n=300, seed=0, noise=0.05):
    """A 1-D S-shaped curve embedded in 2-D, with Gaussian noise.

    ``t`` is drawn uniformly from [-3 pi / 2, 3 pi / 2] and the point is
    ``(sin t, sign(t) (cos t - 1))`` plus ``noise`` times standard normal
    noise: the S-curve of :func:`sklearn.datasets.make_s_curve` seen face-on.

    Parameters
    ----------
    n : int
        Number of points.
    seed : int
        Seed of the NumPy generator; the same seed gives the same data.
    noise : float
        Standard deviation of the noise added to each coordinate.

    Returns
    -------
    x : numpy.ndarray
        ``(n, 2)`` ``float32`` points, within about [-1, 1] x [-2, 2].
    t : numpy.ndarray
        ``(n,)`` ``float32`` position of each point along the curve.
    """
    if n < 0 or noise < 0:
        raise ValueError("n and noise must be non-negative")
    _limits.check_memory(8 * 8 * n, f"s_curve({n})")  # t, x and their float64 temporaries
    rng = np.random.default_rng(seed)
    t = 3 * np.pi * (rng.random(n) - 0.5)
    x = np.stack([np.sin(t), np.sign(t) * (np.cos(t) - 1)], axis=1)
    x += noise * rng.standard_normal((n, 2))
    return x.astype(np.float32), t.astype(np.float32)
