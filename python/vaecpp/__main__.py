"""The ``vaecpp`` command: ``vaecpp train``, ``vaecpp info`` and ``vaecpp --version`` (also
``python -m vaecpp``).

``vaecpp train`` trains a VAE on a data set and writes, under ``--out``, the model file and PNG
figures: loss curves, the latent space, reconstructions, prior samples and (for a 2-D latent space)
the decoded manifold. The default data set, scikit-learn's 8 x 8 digits, ships with scikit-learn,
so the command works on a fresh machine without network.

Errors in the options, the data or the output folder (checked before training) end the command
with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

from . import _core

__all__ = ["main"]

DATASETS = ("digits", "mnist", "fashion_mnist", "frey")
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad options or unusable data: reported as one line, exit status 2."""


def _error(message):
    """The UsageError of ``vaecpp train`` saying ``message``."""
    return UsageError(f"vaecpp train: error: {message}")


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage block), exit status 2."""

    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _widths(text):
    """``"512"`` or ``"512,256"`` -> (512,) or (512, 256)."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive layer widths separated by commas (e.g. 512 or 512,256), got {text!r}")
    return widths


def _size(text):
    """``"64"`` or ``"64x48"`` -> (64, 64) or (64, 48)."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected a size such as 64 or 64x48, got {text!r}")
    return size


def build_parser():
    from . import __version__

    parser = _Parser(prog="vaecpp", description="Variational autoencoders with a C++ engine.")
    parser.add_argument("--version", action="version", version=f"vaecpp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{train,info}", parser_class=_Parser)

    train = commands.add_parser(
        "train", help="train a VAE and write the model file and figures",
        description="Train a VAE and write the model file and PNG figures to --out.")
    train.add_argument("--dataset", default="digits",
                       help="digits (scikit-learn's 8x8 digits, offline; default), mnist (falls "
                            "back to the MNIST test set if the training set is unavailable, and "
                            "stops if MNIST is not there at all), fashion_mnist, frey, or a "
                            "folder of images")
    train.add_argument("--latent-dim", type=_positive(int), default=2, metavar="N",
                       help="size of the latent space (default 2)")
    train.add_argument("--hidden", type=_widths, default=(512,), metavar="W[,W...]",
                       help="hidden layer widths of the encoder, mirrored in the decoder "
                            "(default 512)")
    train.add_argument("--likelihood", choices=_core.LIKELIHOODS, default="bernoulli",
                       help="p(x|z) (default bernoulli)")
    train.add_argument("--epochs", type=_positive(int), default=20, metavar="N",
                       help="training epochs (default 20)")
    train.add_argument("--batch-size", type=_positive(int), default=100, metavar="N",
                       help="samples per gradient step (default 100)")
    train.add_argument("--learning-rate", type=_positive(float), default=1e-3, metavar="LR",
                       help="Adam's learning rate (default 0.001)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--out", default="vaecpp-out", metavar="DIR",
                       help="output directory, created if needed (default ./vaecpp-out)")
    train.add_argument("--threads", type=_positive(int), default=None, metavar="N",
                       help="OpenMP threads (default $VAECPP_THREADS or all cores)")
    train.add_argument("--limit", type=_positive(int), default=None, metavar="N",
                       help="use only the first N training samples")
    train.add_argument("--image-size", type=_size, default=(64, 64), metavar="HxW",
                       help="size images from a folder are cropped and resized to (default 64)")
    train.add_argument("--no-download", action="store_true",
                       help="only use local copies of mnist, fashion_mnist and frey")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    commands.add_parser("info", help="print the version, build options and CPU features",
                        description="Print the version, build options and CPU features.")
    return parser


# ---- data ---------------------------------------------------------------------------------------
def _one_line(error):
    return " ".join(str(error).split())


def load_dataset(name, download=True, image_size=(64, 64)):
    """Returns ``(x_train, y_train, x_val, y_val, title)``; labels may be None."""
    from . import datasets

    if name == "digits":
        x, y = datasets.digits()
        return x[:1600], y[:1600], x[1600:], y[1600:], "scikit-learn digits"
    if name == "mnist":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", datasets.DatasetFallbackWarning)
            (x, y), (xv, yv) = datasets.load_mnist(normalize=True, fallback=True,
                                                   download=download)
        title = "MNIST"
        for w in caught:
            if "Fashion-MNIST" in str(w.message):  # asked for digits: never train on clothes
                how = ("run without --no-download to download it, or put" if not download
                       else "put")
                reason = _one_line(w.message).split("; using", 1)[0]  # "MNIST unavailable (...)"
                cache = os.path.join(datasets.default_cache_dir(), "mnist")
                raise _error(f"{reason}; {how} its four .gz files in $VAECPP_DATA/mnist or "
                             f"{cache}")
            warnings.warn(w.message)  # passed on; the title says which data the figures show
            title = "MNIST test set (training set unavailable)"
        return x, y, xv, yv, title
    if name == "fashion_mnist":
        x, y = datasets.fashion_mnist(split="train", normalize=True, download=download)
        xv, yv = datasets.fashion_mnist(split="test", normalize=True, download=download)
        return x, y, xv, yv, "Fashion-MNIST"
    if name == "frey":
        faces = datasets.frey_faces(download=download)
        return faces[:1800], None, faces[1800:], None, "Frey faces"
    if os.path.isdir(name):
        images = datasets.image_folder(name, size=image_size)
        n_val = max(1, len(images) // 10) if len(images) > 1 else 0
        if n_val == 0:
            return images, None, None, None, os.path.basename(os.path.abspath(name))
        return (images[:-n_val], None, images[-n_val:], None,
                os.path.basename(os.path.abspath(name)))
    raise _error(f"unknown dataset {name!r}: expected {', '.join(DATASETS)} or an existing "
                 f"folder of images")


# ---- commands -----------------------------------------------------------------------------------
def cmd_info(out=None):
    import numpy

    import vaecpp

    out = out or sys.stdout
    info = vaecpp.build_info()
    print(f"vaecpp {info['version']}", file=out)
    print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}", file=out)
    print(f"OpenMP: {'yes' if info.get('openmp') else 'no'}", file=out)
    env = os.environ.get("VAECPP_THREADS", "").strip()
    print(f"threads: {info.get('max_threads')} cores; a model uses "
          + (f"{env} (VAECPP_THREADS)" if env else "all of them (set VAECPP_THREADS to change)"),
          file=out)
    print(f"CUDA: {'yes' if info.get('cuda') else 'no'}", file=out)
    print(f"native build (-march=native): {'yes' if info.get('native') else 'no'}", file=out)
    print(f"CPU features used by this build: {' '.join(info.get('simd') or []) or 'none detected'}", file=out)
    print(f"matrix product kernels: {info.get('gemm_kernels', '?')}", file=out)
    print(f"element-wise kernels: {info.get('elementwise_kernels', '?')}", file=out)
    eigen = info.get("eigen", "?") + (f" ({info['eigen_from']})" if "eigen_from" in info else "")
    print(f"Eigen: {eigen}, compiler: {info.get('compiler', '?')}", file=out)
    return 0


MODEL_FILE = "model.vae"


def _figures(args, title, x, y, x_val, y_val):
    """The figures a run writes: ``[(file name, draw)]``, ``draw(vae, history)`` returning the
    figure. Known before training, so that ``--out`` can be checked for every file first."""
    from vaecpp import plot

    shown = x if x_val is None else x_val
    labels = y if x_val is None else y_val
    n_points = min(len(shown), 5000)
    value_range = (0.0, 1.0)
    figures = [("loss.png", lambda vae, history: plot.loss_curves(
        history, title=f"{title}: loss per sample (nats)"))]
    if args.latent_dim >= 2 or labels is not None:
        figures.append(("latent.png", lambda vae, history: plot.latent_scatter(
            vae.encode(shown[:n_points]), None if labels is None else labels[:n_points],
            title=f"{title}: posterior means")))
    figures.append(("reconstructions.png", lambda vae, history: plot.reconstructions(
        vae, shown, n=10, value_range=value_range,
        title=f"{title}: inputs (top) and their reconstructions")))
    figures.append(("samples.png", lambda vae, history: plot.image_grid(
        vae.sample(32, seed=args.seed), ncols=8, value_range=value_range,
        title=f"{title}: 32 draws from the prior, decoded (their means)")))
    if args.latent_dim == 2:
        h, w = x.shape[1:3]
        figures.append(("manifold.png", lambda vae, history: plot.manifold(
            vae, n=15, quantiles=(0.05, 0.95), value_range=value_range,
            figsize=(8 * min(1.0, w / h) + 0.6, 8 * min(1.0, h / w) + 0.6),
            title=f"{title}: decoded latent grid")))
    return figures


def prepare_out(directory, names):
    """Creates ``directory`` if needed and checks, before any training, that the run can write
    ``names`` there: a file can be created in it (a read-only folder, ``/proc``) and none of the
    names is taken by anything but a writable regular file (a folder named ``model.vae``).
    UsageError otherwise: training to the end and then failing with a traceback wasted the run."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise _error(f"cannot create --out {directory!r}: {e.strerror or e}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".vaecpp-probe-"):
            pass
    except OSError as e:
        raise _error(f"cannot write files in --out {directory!r}: {e.strerror or e}") from None
    for name in names:
        path = os.path.join(directory, name)
        if os.path.lexists(path) and not (os.path.isfile(path) and os.access(path, os.W_OK)):
            raise _error(f"cannot write {path!r}: it exists and is not a writable regular file")


def cmd_train(args, out=None, err=None):
    out, err = out or sys.stdout, err or sys.stderr
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; works without a display
    except ImportError:
        raise _error("the figures need matplotlib, a dependency of vaecpp that is missing "
                     "here: pip install matplotlib") from None
    import vaecpp
    from vaecpp import datasets

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", datasets.DatasetFallbackWarning)
        try:
            x, y, x_val, y_val, title = load_dataset(args.dataset, not args.no_download,
                                                     args.image_size)
        except UsageError:
            raise
        except (OSError, ValueError, ImportError) as e:
            raise _error(f"cannot load dataset {args.dataset!r}: {_one_line(e)}") from None
    for w in caught:
        if issubclass(w.category, datasets.DatasetFallbackWarning):
            print(f"vaecpp train: warning: {_one_line(w.message)}", file=err)
    if args.limit is not None:
        x = x[:args.limit]
        y = None if y is None else y[:args.limit]
    figures = _figures(args, title, x, y, x_val, y_val)
    prepare_out(args.out, [MODEL_FILE] + [name for name, _ in figures])  # before training

    try:
        vae = vaecpp.VAE(input_shape=x.shape[1:], latent_dim=args.latent_dim, hidden=args.hidden,
                         likelihood=args.likelihood, seed=args.seed, threads=args.threads)
        vae.compile(vaecpp.optimizers.Adam(learning_rate=args.learning_rate))
        print(f"{title}: {len(x)} training and {0 if x_val is None else len(x_val)} validation "
              f"samples of shape {x.shape[1:]}; {vae.count_params():,} parameters", file=out)
        out.flush()
        history = vae.fit(x, epochs=args.epochs, batch_size=args.batch_size,
                          validation_data=x_val, verbose=0 if args.quiet else 1)
    except (ValueError, TypeError) as e:
        raise _error(_one_line(e)) from None

    written = [os.path.join(args.out, MODEL_FILE)]
    vae.save(written[0])
    for name, draw in figures:
        path = os.path.join(args.out, name)
        draw(vae, history).savefig(path, dpi=80, bbox_inches="tight")
        written.append(path)

    final = {k: v[-1] for k, v in history.history.items()}
    summary = f"loss {final['loss']:.4f}"
    if "val_loss" in final:
        summary += f", val_loss {final['val_loss']:.4f}"
    print(f"after {len(history.epoch)} epochs: {summary} (nats per sample)", file=out)
    for path in written:
        print(f"wrote {path}", file=out)
    return 0


def main(argv=None):
    """Entry point of the ``vaecpp`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError("vaecpp: error: choose a command: train or info "
                             "(see vaecpp --help)")
        if args.command == "info":
            return cmd_info()
        return cmd_train(args)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except FloatingPointError as e:
        print(f"vaecpp train: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vaecpp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
