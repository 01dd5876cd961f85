"""Loading a folder of JPEG/PNG images as RGB float32 arrays, at once or streamed."""

import os
import pathlib
import queue
import threading
import warnings

import numpy as np

from . import _limits
from .sources import check_shard, share_range

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("image_folder needs Pillow: pip install pillow") from None
    return Image, ImageOps


def _crop_box(width, height, size, crop):
    """The (left, top, right, bottom) box to cut before resizing to ``size`` (h, w)."""
    if crop is None:
        return (0, 0, width, height)
    if crop == "center":
        # The largest centred box with the aspect ratio of ``size``.
        target = size[1] / size[0]
        if width / height > target:
            h, w = height, max(1, round(height * target))
        else:
            h, w = max(1, round(width / target)), width
    else:
        h, w = crop
        h, w = min(h, height), min(w, width)
    left, top = (width - w) // 2, (height - h) // 2
    return (left, top, left + w, top + h)


class _TooLarge(Exception):
    pass


def _bomb_message(limit, size=None):
    got = "" if size is None else f"{size[0]} x {size[1]} = {size[0] * size[1]} pixels, "
    return (f"image too large ({got}more than PIL.Image.MAX_IMAGE_PIXELS = {limit}, Pillow's "
            f"guard against decompression bombs); to read it, raise that limit or set it to "
            f"None: PIL.Image.MAX_IMAGE_PIXELS = None")


def _check_pixels(img, limit):
    """Pillow only warns between MAX_IMAGE_PIXELS and twice that; an error here, before the
    pixels are decoded (``Image.open`` reads only the header)."""
    if limit is not None and img.width * img.height > limit:
        raise _TooLarge(_bomb_message(limit, img.size))


# A decoded image is float32 RGB: 12 bytes a pixel. Decoding one also holds Pillow's resized image
# (4 bytes a pixel), its uint8 copy (3) and float32 temporaries (12 each): at most 32 more.
_IMAGE_BYTES_PER_PIXEL = 3 * 4
_DECODING_BYTES_PER_PIXEL = 32


def check_memory(count, size, what):
    """ValueError (``_limits.check_memory``) when ``count`` decoded images of ``size`` (h, w), and
    the temporaries of decoding one more, need more memory than this process can have now: a
    size such as 100000 x 100000 is refused before anything is decoded, not met by the
    out-of-memory killer half way."""
    pixels = size[0] * size[1]
    _limits.check_memory(pixels * (count * _IMAGE_BYTES_PER_PIXEL + _DECODING_BYTES_PER_PIXEL),
                         f"{what} ({count} image{'s' * (count != 1)} of {size[0]} x {size[1]} "
                         f"pixels)")


def load_image(file, size=(64, 64), crop="center", background=(255, 255, 255)):
    """Decodes one image to an RGB ``float32`` array ``(h, w, 3)`` in [0, 1].

    See :func:`image_folder` for the parameters.  Raises ``ValueError``
    naming the file if it cannot be decoded.
    """
    Image, ImageOps = _pil()
    try:
        with Image.open(file) as img:
            _check_pixels(img, Image.MAX_IMAGE_PIXELS)
            img = ImageOps.exif_transpose(img)
            box = _crop_box(img.width, img.height, size, crop)
            resample = Image.Resampling.BILINEAR
            if img.mode in _SIXTEEN_BIT:
                grey = np.asarray(img, dtype=np.float32) / 65535.0
                grey = Image.fromarray(np.clip(grey, 0, 1)).crop(box)
                grey = grey.resize((size[1], size[0]), resample)
                return np.repeat(np.asarray(grey, np.float32)[..., None], 3, axis=2)
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                img = Image.new("RGB", rgba.size, tuple(background))
                img.paste(rgba, mask=rgba.getchannel("A"))
            else:
                img = img.convert("RGB")
            img = img.crop(box).resize((size[1], size[0]), resample)
            return np.asarray(img, dtype=np.float32) / np.float32(255)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own check, before ours (a warning when warnings are errors)
        raise ValueError(f"{os.fspath(file)}: {_bomb_message(Image.MAX_IMAGE_PIXELS)}") from None
    except _TooLarge as e:
        raise ValueError(f"{os.fspath(file)}: {e}") from None
    except MemoryError:  # its message is usually empty: say what ran out
        raise ValueError(f"{os.fspath(file)}: cannot read image (out of memory decoding it at "
                         f"{size[0]} x {size[1]} pixels)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{os.fspath(file)}: cannot read image ({e})") from None


def _walk(root, recursive):
    """The files under ``root`` (paths), walked with an explicit stack: no recursion limit on
    deeply nested folders, symbolic links to folders not followed (no cycles), unreadable
    subfolders skipped."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            if folder is root:
                raise
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append(pathlib.Path(entry.path))
                elif entry.is_file():
                    yield pathlib.Path(entry.path)
            except OSError:
                continue


def list_images(path, recursive=True, extensions=EXTENSIONS):
    """The image files under ``path``, sorted by relative path."""
    root = pathlib.Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    files = sorted(
        (p for p in _walk(root, recursive) if p.suffix.lower() in extensions),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ValueError(f"no image files ({', '.join(extensions)}) found in {root}")
    return files


class ImageFolderSource:
    """A folder of images decoded on demand, batch by batch.

    Returned by ``image_folder(..., stream=True)``; see :func:`image_folder`.

    Attributes
    ----------
    files : list of pathlib.Path
        The image files, sorted.
    input_shape : tuple
        ``(height, width, 3)`` of each decoded image.
    """

    def __init__(self, files, size, crop, on_error, background):
        self.files = list(files)
        self.size = tuple(size)
        check_memory(1, self.size, "image_folder")
        self.crop = crop
        self.on_error = on_error
        self.background = background
        self.input_shape = (self.size[0], self.size[1], 3)

    def __len__(self):
        return len(self.files)

    def __repr__(self):
        return f"ImageFolderSource({len(self)} images, input_shape={self.input_shape})"

    def _decode(self, indices):
        """Decodes ``files[indices]`` into one array allocated first (no second copy of the
        images, which the memory checks count once); returns (batch, messages about skipped
        files)."""
        batch = np.empty((len(indices), *self.input_shape), np.float32)
        kept, skipped = 0, []
        for i in indices:
            try:
                batch[kept] = load_image(self.files[i], self.size, self.crop, self.background)
                kept += 1
            except ValueError as e:
                if self.on_error != "skip":
                    raise
                skipped.append(f"skipped {e}")
        return batch[:kept], skipped

    def load(self):
        """Decodes every image; returns ``float32`` ``(n, h, w, 3)``. ValueError before decoding
        anything if they would not fit in memory (:func:`check_memory`)."""
        check_memory(len(self), self.size, "image_folder")
        batch, skipped = self._decode(range(len(self)))
        for message in skipped:
            warnings.warn(message, UserWarning, stacklevel=2)
        return batch

    def batches(self, batch_size, shuffle=True, seed=0, epoch=0, drop_last=False, prefetch=4,
                rank=0, size=1):
        """Yields ``float32`` batches ``(b, h, w, 3)`` covering the folder once.

        Batches are decoded ahead in a background thread, at most
        ``prefetch`` of them, and the thread stops when the generator is
        exhausted, closed or garbage-collected.

        Parameters
        ----------
        batch_size : int
            Images per batch; the last batch may be smaller.
        shuffle : bool
            Whether to visit the images in a random order.
        seed, epoch : int
            The order is a permutation drawn from ``(seed, epoch)``: the same
            pair gives the same order; pass the epoch number to get a new
            order each epoch.
        drop_last : bool
            Whether to leave out a last batch smaller than ``batch_size``.
        prefetch : int
            How many decoded batches may wait in the queue.
        rank, size : int
            For data-parallel training (``fit(..., distributed=comm)``): yield
            only rank ``rank``'s contiguous share of each batch (of ``size``
            ranks; ``vaecpp.sources.share_range``), decoding only its files;
            an empty array where that share is empty.

        Raises
        ------
        ValueError
            At once, if ``prefetch + 2`` batches (those waiting, the one being
            decoded and the one the consumer holds) would not fit in memory.
            From the consumer's side, naming the file, if an image cannot be
            decoded and ``on_error="raise"``.  With ``on_error="skip"`` such
            images are left out (the batch is smaller, or not yielded at all
            where none of its images could be read) with a warning.
        """
        if batch_size < 1 or prefetch < 1:
            raise ValueError("batch_size and prefetch must be positive")
        check_memory(batch_size * (prefetch + 2), self.size, "image_folder batches")
        rank, size = check_shard(rank, size)
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(len(self))
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        chunks = [order[i : i + batch_size] for i in range(0, stop, batch_size)]
        shares = [c[slice(*share_range(len(c), rank, size))] for c in chunks]
        return self._generate(shares, prefetch, keep_empty=size > 1)

    def _generate(self, chunks, prefetch, keep_empty):
        """Decodes ``chunks`` in a thread, ``prefetch`` ahead. A batch whose every image was
        skipped (``on_error="skip"``) is left out, unless ``keep_empty``: a rank's share of a
        batch is yielded empty or not, so that the ranks stay at the same batch."""
        slots = queue.Queue(maxsize=prefetch)
        done = threading.Event()

        def put(item):
            while not done.is_set():
                try:
                    slots.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for chunk in chunks:
                    if not put(("batch", self._decode(chunk))):
                        return
            except BaseException as e:  # handed to the consumer, re-raised there
                put(("error", e))
                return
            put(("end", None))

        worker = threading.Thread(target=produce, name="vaecpp-image-folder", daemon=True)
        worker.start()
        try:
            while True:
                kind, item = slots.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                batch, skipped = item
                for message in skipped:
                    warnings.warn(message, UserWarning, stacklevel=2)
                if len(batch) or keep_empty:
                    yield batch
        finally:
            done.set()
            worker.join()


def image_folder(path, size=(64, 64), crop="center", stream=False, recursive=True,
                 on_error="raise", background=(255, 255, 255), extensions=EXTENSIONS):
    """Loads the images in a folder as RGB ``float32`` arrays in [0, 1], NHWC.

    Each image is decoded with Pillow (EXIF orientation applied), cropped
    about its centre, resized (bilinear, antialiased) to ``size`` and made
    RGB: greyscale images get three equal channels (16-bit ones are scaled
    by 1/65535), and images with transparency (RGBA, LA, palette with a
    transparent colour) are composited onto ``background``.

    Parameters
    ----------
    path : str or os.PathLike
        The folder.  Files are taken in sorted order of their relative path.
    size : (int, int)
        ``(height, width)`` of the output images.
    crop : "center", (int, int) or None
        ``"center"``: cut the largest centred region with the aspect ratio of
        ``size`` (no distortion).  ``(h, w)``: cut a centred ``h x w`` box
        (clipped to the image) first, e.g. ``(108, 108)`` for CelebA faces.
        None: resize the whole image, distorting it if the aspect differs.
    stream : bool
        If False, decode everything now and return an array.  If True,
        return an :class:`ImageFolderSource` that decodes batch by batch.
    recursive : bool
        Whether to include images in subfolders.
    on_error : {"raise", "skip"}
        For a file that cannot be decoded: ``"raise"`` a ``ValueError``
        naming it, or ``"skip"`` it with a ``UserWarning`` naming it.
    background : (int, int, int)
        RGB colour (0-255) under transparent pixels.
    extensions : tuple of str
        Lower-case file name suffixes to include.

    Returns
    -------
    numpy.ndarray or ImageFolderSource
        ``(n, height, width, 3)`` ``float32`` in [0, 1], or the source.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a directory.
    ValueError
        If no image files are found, or (``on_error="raise"``) one cannot be
        decoded.  An image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels
        (about 89 million, Pillow's guard against decompression bombs) is such
        a file, found from its header before any pixel is decoded; set
        ``PIL.Image.MAX_IMAGE_PIXELS = None`` (or a larger number) to read it.
        Also, before anything is decoded, if the result (``n * height * width
        * 3`` float32 values; with ``stream=True``, one image) would need more
        memory than this process can have now (``vaecpp._limits.memory_limit``).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width), not {size!r}")
    if crop == "centre":
        crop = "center"
    if isinstance(crop, str) and crop != "center":
        raise ValueError(f"crop must be 'center', (height, width) or None, not {crop!r}")
    if crop is not None and crop != "center":
        crop = tuple(int(c) for c in crop)
        if len(crop) != 2 or min(crop) < 1:
            raise ValueError(f"crop must be 'center', (height, width) or None, not {crop!r}")
    source = ImageFolderSource(list_images(path, recursive, extensions), size, crop, on_error,
                               background)
    return source if stream else source.load()
