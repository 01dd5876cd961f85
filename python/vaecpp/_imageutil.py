"""Shaping model outputs into displayable images (shared by plot and widgets)."""

import math

import numpy as np


def image_shape_of(vae, image_shape=None):
    """The shape of one image the model decodes: ``image_shape`` if given, else
    ``vae.input_shape`` (a flat ``(d,)`` with ``d`` a perfect square becomes
    ``(sqrt d, sqrt d)``)."""
    if image_shape is not None:
        return tuple(int(s) for s in image_shape)
    shape = tuple(int(s) for s in vae.input_shape)
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side * side != shape[0]:
            raise ValueError(
                f"cannot show inputs of shape {shape} as images: pass image_shape=(h, w)"
            )
        shape = (side, side)
    return shape


def to_display(images, image_shape=None, value_range=(0.0, 1.0)):
    """Returns images as ``float`` ``(n, h, w)`` or ``(n, h, w, 3)`` in [0, 1].

    Parameters
    ----------
    images : array_like
        ``(n, h, w)``, ``(n, h, w, 1)``, ``(n, h, w, 3)``, or ``(n, d)`` with
        ``image_shape`` given.
    image_shape : tuple, optional
        The shape to give each image (of ``h * w`` or ``h * w * c`` values).
    value_range : (float, float)
        The values that map to black and white, e.g. ``(-1, 1)`` for tanh
        outputs.  Values outside are clipped.
    """
    x = np.asarray(images, dtype=np.float64)
    if image_shape is not None:
        x = x.reshape((x.shape[0], *image_shape))
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)):
        raise ValueError(
            f"expected images (n, h, w), (n, h, w, 1) or (n, h, w, 3), got shape {x.shape}"
        )
    lo, hi = check_value_range(value_range)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def check_value_range(value_range):
    """``(low, high)`` as floats, finite with ``high > low``, else ValueError."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be (low, high), not {value_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"value_range must be (low, high) with high > low, not {value_range}")
    return lo, hi


def decode_images(vae, z, image_shape=None, value_range=(0.0, 1.0)):
    """Decodes latent points ``z`` ``(n, latent_dim)`` into display images."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    return to_display(vae.decode(z), image_shape_of(vae, image_shape), value_range)
