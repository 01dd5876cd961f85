"""Matplotlib figures for VAEs: losses, latent spaces, manifolds, images.

Every function returns a :class:`matplotlib.figure.Figure` that is *not*
left open in pyplot: in Jupyter it is displayed once when it is the value of
a cell (or with ``display(fig)``), and in scripts it is saved with
``fig.savefig(path)``.  No figure piles up in pyplot's figure list.

Images may be ``(n, h, w)``, ``(n, h, w, 1)`` or ``(n, h, w, 3)`` (or flat,
with ``image_shape``); ``value_range`` says which values are black and white,
e.g. ``(-1, 1)`` for a tanh decoder.  Matplotlib is imported only when a
function is called.
"""

import math
import warnings
from statistics import NormalDist

import numpy as np

from . import _checks, _limits
from ._imageutil import decode_images, image_shape_of, to_display

__all__ = [
    "loss_curves",
    "latent_scatter",
    "manifold",
    "image_grid",
    "reconstructions",
    "interpolation",
    "nearest_neighbours",
    "nearest_neighbour_indices",
    "manifold_grid",
]


def _figure(figsize):
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("vaecpp.plot needs matplotlib: pip install matplotlib") from None
    fig = plt.figure(figsize=figsize)
    plt.close(fig)  # returned, not left for pyplot to show a second time
    return fig


def _show(ax, image, title=None):
    """Draws one display image (values in [0, 1]) on ``ax`` without ticks."""
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)


def _image_rows(rows, row_labels=None, titles=None, cell=1.2, title=None):
    """A figure with one axes per image; ``rows`` is a list of lists of images; ``title`` over
    them all."""
    nrows, ncols = len(rows), max(len(r) for r in rows)
    fig = _figure((max(2.0, cell * ncols), max(1.5, cell * nrows + 0.3 + 0.3 * bool(title))))
    if title:
        fig.suptitle(title)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            if j >= len(row):
                ax.set_axis_off()
                continue
            _show(ax, row[j], titles[i][j] if titles else None)
        if row_labels:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    return fig


def _batch(x, vae):
    """``x`` as a batch: one input shaped ``vae.input_shape`` gets a leading axis."""
    x = np.asarray(x)
    if x.shape == tuple(vae.input_shape):
        x = x[None]
    return x


def _loss_keys(keys):
    """``keys`` as a list of metric names; one string is one key (not its characters)."""
    if isinstance(keys, str):
        return [keys]
    if not hasattr(keys, "__iter__"):
        raise TypeError(f"keys must be a metric name or a sequence of them, got "
                        f"{type(keys).__name__}")
    keys = list(keys)
    for k in keys:
        if not isinstance(k, str):
            raise TypeError(f"keys must be metric names (str), got {type(k).__name__}")
    return keys


def _epochs_of(history, logs, key, count):
    """The 1-based epochs of ``key``'s ``count`` values: the epochs History recorded for that key
    (``val_*`` only at the validated ones), else ``history.epoch`` when every epoch logged it,
    else 1..count, with a warning where the values are fewer than the epochs and so their epochs
    are unknown (a History saved before ``key_epochs`` existed, or a dict)."""
    recorded = (getattr(history, "key_epochs", None) or {}).get(key)
    if recorded is not None and len(recorded) == count:
        return np.asarray(recorded) + 1
    epochs = list(getattr(history, "epoch", None) or [])
    if epochs and len(epochs) == count:
        return np.asarray(epochs) + 1
    n_epochs = len(epochs) or max(len(v) for v in logs.values())
    if count != n_epochs:
        warnings.warn(f"loss_curves: {key!r} has {count} values for {n_epochs} epochs and the "
                      f"history does not say which epochs they belong to; drawn at 1..{count}",
                      stacklevel=3)
    return np.arange(1, count + 1)


def _check_log_scale(logs, present):
    """A log y axis needs positive losses (a Gaussian model's are often negative)."""
    for key in present:
        values = np.asarray(logs[key], dtype=float)
        bad = values[np.isfinite(values) & (values <= 0)]
        if len(bad):
            raise ValueError(f"logy=True needs positive values, but {key!r} has {bad[0]:g} "
                             f"(a Gaussian or other continuous likelihood's loss may be "
                             f"negative); use logy=False")


def _inputs(x, vae, name):
    """``x`` as a batch (see :func:`_batch`) of at least one input, else a ValueError naming
    ``name``."""
    x = _batch(x, vae)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{name} holds no inputs: give inputs shaped {tuple(vae.input_shape)} "
                         f"(or a batch of them)")
    return x


def loss_curves(history, keys=("loss", "val_loss"), logy=False, title=None):
    """Plots training curves from a History (or its ``.history`` dict).

    Parameters
    ----------
    history : History or dict
        ``vae.fit(...)``'s return value (or ``vae.history``), or a dict of lists.
    keys : str or sequence of str
        The metric (one string) or metrics to draw; those absent from ``history`` are skipped
        (so ``val_loss`` may be asked for when there was no validation data).
    logy : bool
        Whether to use a logarithmic y axis (the values must then be positive).
    title : str, optional
        The axes title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes, one line per key, x = epoch number (1-based).  Each value is drawn at the
        epoch it was logged at: ``val_*`` values only at the validated epochs
        (``validation_freq``, or a later ``fit`` without validation data), as
        ``History.key_epochs`` records.  A dict has no epochs: values are drawn at 1, 2, ...

    Raises
    ------
    ValueError
        If none of ``keys`` is in ``history``, or ``logy`` with a value <= 0.
    TypeError
        If ``keys`` is not a string or a sequence of strings.
    """
    keys = _loss_keys(keys)
    logs = getattr(history, "history", history)
    present = [k for k in keys if k in logs and len(logs[k])]
    if not present:
        raise ValueError(f"none of {keys} in the history (it has {sorted(logs)})")
    if logy:
        _check_log_scale(logs, present)
    fig = _figure((6, 4))
    ax = fig.add_subplot()
    for key in present:
        values = np.asarray(logs[key], dtype=float)
        xs = _epochs_of(history, logs, key, len(values))
        ax.plot(xs, values, marker="o" if len(values) < 30 else None, label=key)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _check_dims(dims, latent_dim):
    """``dims`` as two different latent dimensions in ``0 .. latent_dim - 1``: TypeError for
    anything but a pair of integers, ValueError naming ``dims`` otherwise."""
    if isinstance(dims, (str, bytes)) or np.shape(dims) != (2,):
        raise TypeError(f"dims must be a pair of latent dimensions, e.g. (0, 1), got {dims!r}")
    pair = tuple(_limits.integer(d, "dims", 0, None) for d in dims)
    if max(pair) >= latent_dim:
        raise ValueError(f"dims must be latent dimensions in 0..{latent_dim - 1} (latent_dim="
                         f"{latent_dim}), got {dims!r}")
    if pair[0] == pair[1]:
        raise ValueError(f"dims must be two different latent dimensions, got {dims!r}")
    return pair


def _check_fixed(fixed, latent_dim):
    """The latent point's other coordinates: zeros for None, else ``latent_dim`` finite numbers
    (a ValueError or TypeError naming ``fixed``)."""
    if fixed is None:
        return np.zeros(latent_dim)
    try:
        base = np.array(fixed, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"fixed must be {latent_dim} numbers, got {fixed!r}") from None
    if base.shape != (latent_dim,):
        raise ValueError(f"fixed must hold one value per latent dimension ({latent_dim}), "
                         f"got shape {base.shape}")
    if not np.isfinite(base).all():
        raise ValueError(f"fixed must be finite, got {fixed!r}")
    return base


def _check_labels(labels, count):
    """``labels`` as a 1-D array of one label per point."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        hint = " (for one-hot labels pass labels.argmax(axis=1))" if labels.ndim == 2 else ""
        raise ValueError(f"labels must be 1-D, one per point, got shape {labels.shape}{hint}")
    if len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} points")
    return labels


def latent_scatter(z, labels=None, dims=(0, 1), s=4, cmap=None, title=None):
    """Scatter plot of latent codes, coloured by label.

    Parameters
    ----------
    z : array_like or (vae, x)
        Latent codes ``(n, latent_dim)``, or a pair ``(vae, x)`` whose
        ``vae.encode(x)`` (posterior means) gives them.
    labels : array_like, optional
        ``(n,)`` class labels (integers or strings: discrete colours and,
        up to 20 classes, a legend) or continuous values (a colour bar),
        e.g. ``t`` of :func:`vaecpp.datasets.s_curve`.
    dims : (int, int)
        The two latent dimensions to draw.  With a 1-D latent space the
        codes are drawn against the labels (or zero).
    s : float
        Marker size.
    cmap : str, optional
        Colour map; default ``"tab10"`` (``"tab20"`` beyond 10 classes) for
        integer labels, ``"viridis"`` otherwise.
    title : str, optional
        The axes title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(z, tuple) and len(z) == 2 and hasattr(z[0], "encode"):
        vae, x = z
        z = vae.encode(x)
    z = np.asarray(z, dtype=float)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2:
        raise ValueError(f"z must be (n, latent_dim) latent codes, got shape {z.shape}")
    if z.shape[1] > 1:
        dims = _check_dims(dims, z.shape[1])
    if labels is not None:
        labels = _check_labels(labels, len(z))
    fig = _figure((5.5, 5))
    ax = fig.add_subplot()
    if z.shape[1] == 1:
        xs = z[:, 0]
        ys = np.zeros(len(z)) if labels is None else np.asarray(labels, dtype=float)
        ax.set_xlabel("z[0]")
        ax.set_ylabel("label" if labels is not None else "")
    else:
        xs, ys = z[:, dims[0]], z[:, dims[1]]
        ax.set_xlabel(f"z[{dims[0]}]")
        ax.set_ylabel(f"z[{dims[1]}]")
    if labels is None:
        ax.scatter(xs, ys, s=s, color="tab:blue")
    else:
        discrete = labels.dtype.kind in "biuUSO"  # integers, booleans, strings
        classes = np.unique(labels) if discrete else None
        if discrete and (len(classes) <= 20 or labels.dtype.kind in "USO"):
            colours = _colormap(cmap or ("tab10" if len(classes) <= 10 else "tab20"))
            for k, c in enumerate(classes):
                mask = labels == c
                ax.scatter(xs[mask], ys[mask], s=s, color=colours(k % colours.N), label=str(c))
            if len(classes) <= 20:
                ax.legend(markerscale=max(1.0, 12.0 / s), fontsize=8, loc="best")
        else:
            points = ax.scatter(xs, ys, s=s, c=labels.astype(float), cmap=cmap or "viridis")
            fig.colorbar(points, ax=ax)
    if title:
        ax.set_title(title)
    return fig


def _colormap(name):
    import matplotlib

    return matplotlib.colormaps[name]


def _check_images(count, vae, what):
    """``count`` decoded images (the latent points, the means and three float64 display copies
    of each) must fit in memory: a ValueError naming the size before anything is made."""
    per_image = 8 * int(vae.latent_dim) + 4 * 8 * int(np.prod(vae.input_shape))
    _limits.check_memory(count * per_image, what)


def _axis_values(n, grid, quantiles, limits, scale):
    if isinstance(grid, str):
        if grid == "ppf":
            normal = NormalDist()
            values = [normal.inv_cdf(q) for q in np.linspace(quantiles[0], quantiles[1], n)]
        elif grid == "linear":
            values = np.linspace(limits[0], limits[1], n)
        else:
            raise ValueError(f"grid must be 'ppf', 'linear' or an array, not {grid!r}")
    else:
        values = grid
    return np.asarray(values, dtype=float).ravel() * scale


def manifold_grid(vae, n=15, grid="ppf", quantiles=(0.05, 0.95), limits=(-3.0, 3.0),
                  scale=1.0, dims=(0, 1), fixed=None, image_shape=None,
                  value_range=(0.0, 1.0), gap=0):
    """The decoded latent grid that :func:`manifold` draws, as arrays.

    ``gap`` pixels of white separate neighbouring tiles (0: none).

    Returns
    -------
    canvas : numpy.ndarray
        ``(rows * h, cols * w)`` (or ``(..., 3)``; with ``gap``, ``(rows * (h + gap) - gap,
        cols * (w + gap) - gap)``) in [0, 1]: column ``j``
        decodes ``z[dims[0]] = xs[j]``, row ``i`` decodes
        ``z[dims[1]] = ys[i]`` with ``ys`` decreasing downwards (so up is
        up, as in :func:`latent_scatter`).
    xs, ys : numpy.ndarray
        The coordinates of the columns and the rows (``ys`` is empty for a
        1-D latent space, drawn as one row).
    """
    if min(quantiles) <= 0 or max(quantiles) >= 1:
        raise ValueError(f"quantiles must lie strictly between 0 and 1, not {quantiles}")
    side = _limits.integer(n, "n") if isinstance(grid, str) else np.size(grid)
    _check_images(side if int(vae.latent_dim) == 1 else side * side, vae,
                  f"a manifold of {side} x {side} images")
    latent_dim = int(vae.latent_dim)
    if latent_dim > 1:
        dims = _check_dims(dims, latent_dim)
    base = _check_fixed(fixed, latent_dim)
    values = _axis_values(n, grid, quantiles, limits, scale)
    if latent_dim == 1:
        z = np.repeat(base[None], len(values), axis=0)
        z[:, 0] = values
        xs, ys = values, np.array([])
        images = decode_images(vae, z, image_shape, value_range)[None]
    else:
        xs, ys = values, values[::-1]
        z = np.repeat(base[None], len(xs) * len(ys), axis=0)
        z[:, dims[0]] = np.tile(xs, len(ys))
        z[:, dims[1]] = np.repeat(ys, len(xs))
        images = decode_images(vae, z, image_shape, value_range)
        images = images.reshape((len(ys), len(xs)) + images.shape[1:])
    rows, cols, h, w = images.shape[:4]
    gap = int(gap)
    if gap < 0:
        raise ValueError(f"gap must be >= 0, not {gap}")
    if gap:
        pad = [(0, 0), (0, 0), (0, gap), (0, gap)] + [(0, 0)] * (images.ndim - 4)
        images = np.pad(images, pad, constant_values=1.0)
        h, w = h + gap, w + gap
    canvas = images.swapaxes(1, 2).reshape((rows * h, cols * w) + images.shape[4:])
    if gap:
        canvas = canvas[:rows * h - gap, :cols * w - gap]
    return canvas, xs, ys


def _tick(v):
    """A short tick label; a rounding error's -1e-16 is shown as 0."""
    return "0" if abs(v) < 1e-9 else f"{v:.2g}"


def _percent(q):
    """A probability as a percentage with three significant digits of its distance to 0% or
    100%, trailing zeros dropped: 0.05 as 5%, 0.001 as 0.1%, 0.999 as 99.9%, 0.9999 as 99.99%."""
    p = 100.0 * float(q)
    edge = min(p, 100.0 - p)
    digits = max(0, 2 - math.floor(math.log10(edge))) if edge > 0 else 0
    text = f"{p:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "%"


def manifold(vae, n=15, grid="ppf", quantiles=(0.05, 0.95), limits=(-3.0, 3.0), scale=1.0,
             dims=(0, 1), fixed=None, image_shape=None, value_range=(0.0, 1.0), figsize=None,
             title=None, gap=None):
    """Decodes a grid of latent points into one image mosaic (the Keras VAE figure).

    Parameters
    ----------
    vae : VAE
        Anything with ``decode``, ``latent_dim`` and ``input_shape``.
    n : int
        Grid points per axis.
    grid : "ppf", "linear" or array_like
        ``"ppf"``: the standard normal quantiles ``norm.ppf(linspace(*quantiles, n))``
        (equal prior mass between points, as in the Keras example);
        ``"linear"``: ``linspace(*limits, n)``; an array: those coordinates.
    quantiles : (float, float)
        Range of probabilities for ``"ppf"``; default ``(0.05, 0.95)``.
    limits : (float, float)
        Range for ``"linear"``.
    scale : float
        Multiplies the coordinates (e.g. a prior standard deviation).
    dims : (int, int)
        The latent dimensions varied along x and y when ``latent_dim > 2``.
    fixed : array_like, optional
        Values of the other dimensions (default zeros).
    image_shape : tuple, optional
        Shape of one image if ``vae.input_shape`` is flat.
    value_range : (float, float)
        Decoder values shown as black and white.
    title : str, optional
        The axes title.
    gap : int, optional
        White pixels between tiles, so that neighbouring images do not merge
        into stripes; default about a tenth of a tile (at least 1).

    Returns
    -------
    matplotlib.figure.Figure
        One axes showing the mosaic (see :func:`manifold_grid` for its
        layout), ticks at the grid coordinates, axis labels saying what
        they are (the latent value of each column and row, and for
        ``"ppf"`` the prior quantiles they span).
    """
    h, w = image_shape_of(vae, image_shape)[:2]
    if gap is None:
        gap = max(1, min(h, w) // 10)
    canvas, xs, ys = manifold_grid(vae, n, grid, quantiles, limits, scale, dims, fixed,
                                   image_shape, value_range, gap)
    fig = _figure(figsize or (8, 8 if len(ys) else 2))
    ax = fig.add_subplot()
    cmap = "gray" if canvas.ndim == 2 else None
    ax.imshow(canvas, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    step = max(1, -(-len(xs) // 8))  # at most 8 labelled ticks per axis
    ax.set_xticks(np.arange(len(xs))[::step] * (w + gap) + w / 2 - 0.5)  # tile centres
    ax.set_xticklabels([_tick(v) for v in xs[::step]])
    spans = ""
    if isinstance(grid, str) and grid == "ppf":
        prior = "N(0, 1)" if scale == 1.0 else f"N(0, {_tick(scale)}²)"
        spans = (f"; the grid spans the {prior} prior's {_percent(quantiles[0])}–"
                 f"{_percent(quantiles[1])} quantiles")
    ax.set_xlabel(f"z[{dims[0]}] of each column{spans}")
    if len(ys):
        ax.set_yticks(np.arange(len(ys))[::step] * (h + gap) + h / 2 - 0.5)
        ax.set_yticklabels([_tick(v) for v in ys[::step]])
        ax.set_ylabel(f"z[{dims[1]}] of each row")
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig


def image_grid(images, ncols=8, titles=None, image_shape=None, value_range=(0.0, 1.0),
               title=None):
    """Shows images in a grid, one axes per image, row by row.

    Parameters
    ----------
    images : array_like
        ``(n, h, w)``, ``(n, h, w, 1)``, ``(n, h, w, 3)``, or flat with
        ``image_shape``.
    ncols : int
        Images per row (at least 1).
    titles : sequence of str, optional
        One per image (a ValueError otherwise).
    image_shape : tuple, optional
        Shape to give each flat image.
    value_range : (float, float)
        Values shown as black and white.
    title : str, optional
        A title over the grid.

    Returns
    -------
    matplotlib.figure.Figure
    """
    shown = to_display(images, image_shape, value_range)
    if len(shown) == 0:
        raise ValueError("no images to show")
    ncols = min(_limits.integer(ncols, "ncols"), len(shown))
    rows = [list(shown[i : i + ncols]) for i in range(0, len(shown), ncols)]
    row_titles = None
    if titles is not None:
        titles = list(titles)
        if len(titles) != len(shown):
            raise ValueError(f"titles must have one per image ({len(shown)}), got {len(titles)}")
        row_titles = [titles[i : i + ncols] for i in range(0, len(shown), ncols)]
    return _image_rows(rows, titles=row_titles, title=title)


def reconstructions(vae, x, n=10, image_shape=None, value_range=(0.0, 1.0), title=None):
    """The first ``n`` inputs (top row) and ``vae.decode(vae.encode(x))`` (bottom row).

    Reconstructions go through the posterior means, so they are
    deterministic.  ``title`` goes over both rows.  ``n`` is an integer >= 1 (fewer inputs:
    all of them).  Returns the Figure.
    """
    n = _limits.integer(n, "n")
    x = _inputs(x, vae, "x")[:n]
    shape = image_shape_of(vae, image_shape)
    originals = to_display(x, shape, value_range)
    decoded = to_display(vae.decode(vae.encode(x)), shape, value_range)
    return _image_rows([list(originals), list(decoded)], row_labels=["input", "reconstruction"],
                       title=title)


def interpolation(vae, x_a, x_b, steps=10, method="linear", include_inputs=True,
                  image_shape=None, value_range=(0.0, 1.0)):
    """Decodes points on the path between the latent codes of two inputs.

    Parameters
    ----------
    vae : VAE
    x_a, x_b : array_like
        One input each (shaped ``vae.input_shape``, or a batch of one).
    steps : int
        Number of decoded points, ``t = linspace(0, 1, steps)``.
    method : {"linear", "slerp"}
        Straight line, or spherical interpolation (keeps the norm of codes
        near that of the prior's typical set).
    include_inputs : bool
        Whether to show the two inputs at the ends of the row.

    Returns
    -------
    matplotlib.figure.Figure
        One row: [x_a,] decode(z(t)) for each t, [x_b].
    """
    if steps < 2:
        raise ValueError("steps must be at least 2")
    _check_images(_limits.integer(steps, "steps", 2), vae, f"an interpolation of {steps} steps")
    pair = np.concatenate([_inputs(x_a, vae, "x_a")[:1], _inputs(x_b, vae, "x_b")[:1]])
    z_a, z_b = np.asarray(vae.encode(pair), dtype=float)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if method == "linear":
        z = (1 - t) * z_a + t * z_b
    elif method == "slerp":
        cos = np.dot(z_a, z_b) / (np.linalg.norm(z_a) * np.linalg.norm(z_b) + 1e-12)
        omega = np.arccos(np.clip(cos, -1.0, 1.0))
        if omega < 1e-6:
            z = (1 - t) * z_a + t * z_b
        else:
            z = (np.sin((1 - t) * omega) * z_a + np.sin(t * omega) * z_b) / np.sin(omega)
    else:
        raise ValueError(f"method must be 'linear' or 'slerp', not {method!r}")
    decoded = list(decode_images(vae, z, image_shape, value_range))
    titles = [f"t={v:.2f}" for v in t[:, 0]]
    if include_inputs:
        ends = to_display(pair, image_shape_of(vae, image_shape), value_range)
        decoded = [ends[0]] + decoded + [ends[1]]
        titles = ["A"] + titles + ["B"]
    return _image_rows([decoded], titles=[titles])


def _image_rows_of(images, name, chunk=None):
    """``images`` as ``(n, values per image)`` rows, not copied: a ValueError naming ``name``
    for no images or a NaN or inf value, a TypeError for non-numbers.  With ``chunk``, the
    values are checked ``chunk`` rows at a time (a training set is not copied whole)."""
    images = np.asarray(images)
    if images.ndim == 0:
        raise ValueError(f"{name} must be a batch of images (n, ...), got a scalar")
    dtype = images.dtype if images.dtype.kind in "biuf" else np.float64
    if chunk is None:
        return _checks.as_rows(images, images.shape[1:], dtype, name)[0]
    rows = _checks.as_rows(images[:1], images.shape[1:], dtype, name)[0]  # its kind and shape
    rows = images.reshape(len(images), rows.shape[1])
    for start in range(0, len(rows), chunk):
        if not np.isfinite(rows[start : start + chunk]).all():
            raise ValueError(f"{name} contains NaN or inf values")
    return rows


def nearest_neighbour_indices(samples, train_images, k=3, chunk=4096, sample_chunk=256):
    """Indices and Euclidean distances of the ``k`` nearest training images to each sample.

    Distances are computed for blocks of ``sample_chunk`` samples against blocks of ``chunk``
    training images, keeping each sample's ``k`` best so far, so memory stays at a few blocks'
    worth whatever the number of samples and training images.

    Returns
    -------
    indices : numpy.ndarray
        ``(n_samples, k)`` int, nearest first.
    distances : numpy.ndarray
        ``(n_samples, k)`` float.

    Raises
    ------
    ValueError
        For no samples or no training images, a NaN or inf value in either, or a different
        number of values per image.
    """
    chunk = _limits.integer(chunk, "chunk")
    sample_chunk = _limits.integer(sample_chunk, "sample_chunk")
    a_all = _image_rows_of(samples, "samples")
    b_all = _image_rows_of(train_images, "train_images", chunk)
    if a_all.shape[1] != b_all.shape[1]:
        raise ValueError(
            f"samples have {a_all.shape[1]} values each, training images {b_all.shape[1]}"
        )
    k = min(_limits.integer(k, "k"), len(b_all))
    n = len(a_all)
    best_d = np.full((n, k), np.inf)
    best_i = np.zeros((n, k), dtype=np.int64)
    for s0 in range(0, n, sample_chunk):
        a = a_all[s0 : s0 + sample_chunk].astype(np.float64)
        a2 = (a * a).sum(axis=1)[:, None]
        d_keep, i_keep = best_d[s0 : s0 + sample_chunk], best_i[s0 : s0 + sample_chunk]
        for start in range(0, len(b_all), chunk):
            b = b_all[start : start + chunk].astype(np.float64)
            d2 = a2 - 2.0 * a @ b.T + (b * b).sum(axis=1)[None, :]
            idx = np.broadcast_to(np.arange(start, start + len(b)), d2.shape)
            # this block's candidates and the k kept so far: the k smallest (distance, index)
            d_cand = np.concatenate([d_keep, d2], axis=1)
            i_cand = np.concatenate([i_keep, idx], axis=1)
            part = np.argpartition(d_cand, k - 1, axis=1)[:, :k]
            d_keep = np.take_along_axis(d_cand, part, axis=1)
            i_keep = np.take_along_axis(i_cand, part, axis=1)
        order = np.lexsort((i_keep, d_keep), axis=1)  # nearest first, equal distances by index
        best_d[s0 : s0 + sample_chunk] = np.take_along_axis(d_keep, order, axis=1)
        best_i[s0 : s0 + sample_chunk] = np.take_along_axis(i_keep, order, axis=1)
    return best_i, np.sqrt(np.maximum(best_d, 0.0))


def nearest_neighbours(samples, train_images, k=3, image_shape=None, value_range=(0.0, 1.0)):
    """Each sample beside its ``k`` nearest training images (Euclidean, pixel space).

    A check for memorisation: generated samples that are copies of training
    images show a near-zero distance.

    Parameters
    ----------
    samples : array_like
        ``(n, ...)`` generated images, e.g. ``vae.sample(8)``.
    train_images : array_like
        ``(N, ...)`` training images, same size per image as ``samples``.
    k : int
        Neighbours per sample.

    Returns
    -------
    matplotlib.figure.Figure
        One row per sample: the sample, then its neighbours titled with
        their index and distance.
    """
    idx, dist = nearest_neighbour_indices(samples, train_images, k)
    shown = to_display(samples, image_shape, value_range)
    train = np.asarray(train_images)
    rows, titles = [], []
    for i in range(len(shown)):
        neighbours = to_display(train[idx[i]], image_shape, value_range)
        rows.append([shown[i]] + list(neighbours))
        titles.append(["sample"] + [f"#{j} d={d:.2f}" for j, d in zip(idx[i], dist[i])])
    return _image_rows(rows, titles=titles)
