"""Checksum-verified downloads into the vaecpp cache directory.

A download is written to a temporary file beside its destination, its
SHA-256 and length are checked, and only then is it renamed into place
(atomically), so an interrupted or corrupt download never leaves a file
under the final name.
"""

import hashlib
import http.client
import os
import pathlib
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

CACHE_ENV = "VAECPP_CACHE"
_CHUNK = 1 << 16


class DownloadError(OSError):
    """A file could not be downloaded from any of its URLs, or none matched its SHA-256."""


def default_cache_dir():
    """Returns the cache directory: ``$VAECPP_CACHE``, else ``~/.cache/vaecpp``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "vaecpp"


def sha256_of(path):
    """Returns the hex SHA-256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


DEFAULT_DEADLINE = 600.0
"""Seconds one download may take in all (``fetch``'s ``deadline``)."""
DEFAULT_MAX_BYTES = 1 << 30
"""The most bytes ``fetch`` accepts from a URL when the caller gives no ``max_bytes``."""


def _download_to(url, out, timeout, deadline, max_bytes):
    """Streams ``url`` into the open binary file ``out``; returns (sha256, size).

    Gives up with DownloadError when the server announces or sends more than ``max_bytes``, or
    when the download has taken ``deadline`` seconds (checked after every read; each read waits
    at most ``timeout`` seconds for the server)."""
    digest = hashlib.sha256()
    size = 0
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=min(timeout, deadline)) as response:
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise DownloadError(f"the server announces {length} bytes, more than the "
                                f"{max_bytes} expected")
        while True:
            # read1: whatever has arrived (read(n) would wait for all n bytes, past the deadline)
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise DownloadError(f"the server sent more than the {max_bytes} bytes expected")
            if time.monotonic() - start > deadline:
                raise DownloadError(f"the download took more than {deadline:g} s "
                                    f"({size} bytes received); giving up")
    if length is not None and length.isdigit() and size != int(length):
        raise DownloadError(f"connection closed after {size} of {length} bytes")
    return digest.hexdigest(), size


def fetch(urls, sha256, cache_dir=None, filename=None, timeout=30.0, quiet=False,
          max_bytes=None, deadline=DEFAULT_DEADLINE):
    """Returns the path of a cached copy of a file, downloading it if needed.

    Parameters
    ----------
    urls : str or sequence of str
        Where the file can be downloaded, tried in order until one gives a
        file with the right checksum.
    sha256 : str
        The expected hex SHA-256 of the file.
    cache_dir : str or os.PathLike, optional
        The directory to keep the file in (created if needed); default
        :func:`default_cache_dir`.
    filename : str, optional
        The file's name in ``cache_dir``; default the last component of the
        first URL.
    timeout : float
        Seconds to wait for the server (to connect, and for each read) before giving up on a URL.
    quiet : bool
        If False, prints one line to stderr for each download attempted.
    max_bytes : int, optional
        The file's size, or a bound on it: a URL that announces or sends more is abandoned
        (default :data:`DEFAULT_MAX_BYTES`, 1 GiB).
    deadline : float
        Seconds a download from one URL may take in all (default 600), however slowly the server
        sends; then the next URL is tried.

    Returns
    -------
    pathlib.Path
        ``cache_dir / filename``, whose SHA-256 is ``sha256``.

    Raises
    ------
    DownloadError
        If no URL gave the file with that checksum; the message lists what
        went wrong with each.  No file is left under the final name then.
    """
    if isinstance(urls, (str, bytes, os.PathLike)):
        urls = [urls]
    urls = [os.fspath(u) for u in urls]
    if not urls:
        raise ValueError("fetch needs at least one URL")
    sha256 = sha256.lower()
    max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    timeout, deadline = float(timeout), float(deadline)
    if max_bytes < 0 or not timeout > 0 or not deadline > 0:
        raise ValueError(f"max_bytes must be >= 0 and timeout, deadline > 0, got {max_bytes}, "
                         f"{timeout}, {deadline}")
    cache_dir = pathlib.Path(default_cache_dir() if cache_dir is None else cache_dir)
    if filename is None:
        filename = pathlib.PurePosixPath(urllib.parse.urlsplit(urls[0]).path).name
    dest = cache_dir / filename
    if dest.is_file():
        if sha256_of(dest) == sha256:
            return dest
        if not quiet:
            print(f"vaecpp: {dest} has the wrong SHA-256; downloading it again", file=sys.stderr)
    cache_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        if not quiet:
            print(f"vaecpp: downloading {url} -> {dest}", file=sys.stderr)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{filename}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                got, size = _download_to(url, out, timeout, deadline, max_bytes)
            if got != sha256:
                raise DownloadError(
                    f"SHA-256 mismatch: got {got} ({size} bytes), expected {sha256}"
                )
            os.replace(tmp, dest)
            return dest
        except (OSError, http.client.HTTPException, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError):
                e.close()  # it holds the open response
            reason = e.reason if type(e) is urllib.error.URLError else e
            errors.append(f"  {url}: {reason}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DownloadError(f"could not download {filename}:\n" + "\n".join(errors))
