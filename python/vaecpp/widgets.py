"""Jupyter widgets for exploring a VAE's latent space.

Needs ipywidgets and Pillow (imported when a widget is built).  The decoded
image is sent to the browser as PNG bytes in an ``ipywidgets.Image``, so it
needs no matplotlib backend and works headless; everything a test needs is
on the returned object.
"""

import io

import numpy as np

from . import _checks, _limits
from ._imageutil import decode_images, image_shape_of

__all__ = ["latent_sliders", "LatentSliders"]


def _png(image, zoom):
    """PNG bytes of a display image (values in [0, 1]), enlarged ``zoom`` times."""
    from PIL import Image

    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    picture = Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
    if zoom != 1:
        picture = picture.resize((picture.width * zoom, picture.height * zoom),
                                 Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class LatentSliders:
    """One slider per latent dimension and the image they decode to.

    Built by :func:`latent_sliders`.  Displaying the object in Jupyter
    shows the image beside (or below) the sliders, at a fixed size in pixels
    rather than stretched to the output's width, so both stay on one screen;
    moving a slider redraws it.

    Attributes
    ----------
    sliders : list of ipywidgets.FloatSlider
        One per latent dimension, in order.
    image : ipywidgets.Image
        The decoded image as PNG, shown at ``display_size``.
    display_size : (int, int)
        The image's width and height on screen, in CSS pixels.
    widget : ipywidgets.HBox or ipywidgets.VBox
        What is displayed: the sliders (in a VBox of their own) and the image,
        side by side (``layout="beside"``, an HBox) or stacked
        (``layout="below"``, a VBox); the box aligns its children to the start
        instead of stretching them.
    current_image : numpy.ndarray
        The image last drawn, ``(h, w)`` or ``(h, w, 3)`` in [0, 1] (before
        enlargement).
    current_z : numpy.ndarray
        The latent point it was decoded from (values times ``scale``).
    """

    def __init__(self, vae, ranges, step, names, scale, image_shape, value_range, zoom,
                 continuous_update, size=None, layout="beside"):
        try:
            import ipywidgets
        except ImportError:
            raise ImportError("the latent sliders need ipywidgets: "
                              "pip install 'vaecpp[notebook]'") from None

        self.vae = vae
        self.scale = float(scale)
        self.image_shape = image_shape
        self.value_range = value_range
        self.zoom = int(zoom)
        self.current_image = None
        self.current_z = None
        self._syncing = False
        self.sliders = []
        for i, ((lo, hi), name) in enumerate(zip(ranges, names)):
            slider = ipywidgets.FloatSlider(
                value=min(max(0.0, lo), hi), min=lo, max=hi, step=step, description=name,
                continuous_update=continuous_update, readout_format=".2f",
            )
            slider.observe(self._on_change, names="value")
            self.sliders.append(slider)
        self.image = ipywidgets.Image(format="png")
        self.update()
        if size is None:  # the picture's own size: the decoded image enlarged zoom times
            h, w = self.current_image.shape[:2]
            size = (w * self.zoom, h * self.zoom)
        self.display_size = (int(size[0]), int(size[1]))
        width, height = (f"{v}px" for v in self.display_size)
        # Explicit sizes, and flex "none": a flex box may neither stretch nor shrink the picture.
        self.image.width, self.image.height = self.display_size
        self.image.layout = ipywidgets.Layout(width=width, height=height, min_width=width,
                                              min_height=height, flex="none")
        box = ipywidgets.HBox if layout == "beside" else ipywidgets.VBox
        self.widget = box([ipywidgets.VBox(self.sliders), self.image],
                          layout=ipywidgets.Layout(align_items="flex-start"))

    def _on_change(self, change):
        if not self._syncing:
            self.update()

    @property
    def values(self):
        """The slider values, as a list of floats."""
        return [float(s.value) for s in self.sliders]

    def update(self, *values):
        """Decodes and shows ``values * scale`` (default: the sliders' values).

        Given values are also set on the sliders (which clip them to their
        ranges for display; the image uses the values as given).  They must be
        finite numbers: anything else is a TypeError or ValueError, and the
        sliders and the image are left as they were.

        Returns
        -------
        numpy.ndarray
            The image drawn (also ``self.current_image``).
        """
        if values:
            if len(values) == 1 and np.ndim(values[0]) == 1:
                values = tuple(values[0])
            if len(values) != len(self.sliders):
                raise ValueError(f"expected {len(self.sliders)} values, got {len(values)}")
            values = [_checks.number(v, f"values[{i}]") for i, v in enumerate(values)]
            self._syncing = True
            try:
                for slider, v in zip(self.sliders, values):
                    slider.value = float(v)
            finally:
                self._syncing = False
        else:
            values = self.values
        z = np.asarray(values, dtype=float)[None, :] * self.scale
        image = decode_images(self.vae, z, self.image_shape, self.value_range)[0]
        self.image.value = _png(image, self.zoom)
        self.current_z = z[0]
        self.current_image = image
        return image

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _check_ranges(ranges, latent_dim):
    """``ranges`` as ``latent_dim`` finite ``(low, high)`` rows with ``high > low``."""
    try:
        ranges = np.asarray(ranges, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"ranges must be (low, high) numbers or {latent_dim} such pairs, "
                        f"got {ranges!r}") from None
    if ranges.shape == (2,):
        ranges = np.tile(ranges, (latent_dim, 1))
    if ranges.shape != (latent_dim, 2):
        raise ValueError(f"ranges must be (low, high) or {latent_dim} such pairs")
    if not np.isfinite(ranges).all():
        raise ValueError(f"ranges must be finite, got {ranges.tolist()}")
    if np.any(ranges[:, 1] <= ranges[:, 0]):
        raise ValueError("each range must be (low, high) with high > low")
    return ranges


def _check_names(names, latent_dim):
    """Slider labels: ``z0, z1, ...`` for None, else ``latent_dim`` strings."""
    if names is None:
        return [f"z{i}" for i in range(latent_dim)]
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise TypeError(f"names must be a list of {latent_dim} strings, got {names!r}")
    names = list(names)
    if len(names) != latent_dim:
        raise ValueError(f"{len(names)} names for {latent_dim} latent dimensions")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"names must be strings, got {type(name).__name__} {name!r}")
    return names


def _check_picture_memory(vae, image_shape, zoom):
    """The enlarged picture (``zoom`` times each side, 8-bit, and its PNG) must fit in memory:
    a ValueError naming its size before anything is decoded or drawn."""
    shape = image_shape_of(vae, image_shape)
    h, w = shape[:2]
    channels = 3 if len(shape) == 3 and shape[2] == 3 else 1
    _limits.check_memory(2 * h * zoom * w * zoom * channels,
                         f"a {w * zoom} x {h * zoom} picture (zoom={zoom})")


def latent_sliders(vae, ranges=(-3.0, 3.0), step=0.05, names=None, scale=1.0,
                   image_shape=None, value_range=(0.0, 1.0), zoom=6, continuous_update=True,
                   size=None, layout="beside"):
    """Sliders for each latent dimension and the live decoded image.

    Parameters
    ----------
    vae : VAE
        Anything with ``decode``, ``latent_dim`` and ``input_shape``.
    ranges : (float, float) or list of (float, float)
        The slider range, for all dimensions or one pair per dimension.
    step : float
        Slider step.
    names : list of str, optional
        Slider labels, e.g. ``["humour", "pose"]``; default ``z0, z1, ...``.
    scale : float
        The decoded point is ``scale * values`` (e.g. the prior's standard
        deviation, so the sliders read in standard deviations).
    image_shape : tuple, optional
        Shape of one image if ``vae.input_shape`` is flat.
    value_range : (float, float)
        Decoder values shown as black and white, e.g. ``(-1, 1)``.
    zoom : int
        Integer enlargement of the image (nearest neighbour, so pixels stay
        sharp); a non-integer is a TypeError, not rounded.
    continuous_update : bool
        Redraw while a slider is dragged (True) or only on release.
    size : (int, int), optional
        Width and height of the image on screen, in CSS pixels; default the
        picture's own size (the decoded image's times ``zoom``).
    layout : "beside" or "below"
        The image to the right of the sliders or under them.

    Returns
    -------
    LatentSliders
        Display it (make it a cell's value); see its attributes for use
        without a browser.

    Examples
    --------
    >>> ui = latent_sliders(vae, names=["humour", "pose"])  # doctest: +SKIP
    >>> ui  # doctest: +SKIP
    """
    latent_dim = int(vae.latent_dim)
    ranges = _check_ranges(ranges, latent_dim)
    names = _check_names(names, latent_dim)
    step = _checks.number(step, "step", 0.0, open_minimum=True)
    scale = _checks.number(scale, "scale")
    zoom = _limits.integer(zoom, "zoom")
    _check_picture_memory(vae, image_shape, zoom)
    if size is not None:
        if np.shape(size) != (2,) or not all(float(v).is_integer() and v > 0 for v in size):
            raise ValueError(f"size must be (width, height) in whole pixels > 0, got {size!r}")
    if layout not in ("beside", "below"):
        raise ValueError(f"layout must be 'beside' or 'below', got {layout!r}")
    return LatentSliders(vae, [tuple(r) for r in ranges], step, names, scale, image_shape,
                         value_range, zoom, continuous_update, size, layout)
