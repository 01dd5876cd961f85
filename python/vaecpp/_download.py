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


def _download_to(url, out, timeout):
    """Streams ``url`` into the open binary file ``out``; returns (sha256, size)."""
    digest = hashlib.sha256()
    size = 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    if length is not None and length.isdigit() and size != int(length):
        raise DownloadError(f"connection closed after {size} of {length} bytes")
    return digest.hexdigest(), size


def fetch(urls, sha256, cache_dir=None, filename=None, timeout=30.0, quiet=False):
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
        Seconds to wait for the server before giving up on a URL.
    quiet : bool
        If False, prints one line to stderr for each download attempted.

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
                got, size = _download_to(url, out, timeout)
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
