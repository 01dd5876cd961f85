"""Runs every notebook in notebooks/ top to bottom, headless, in smoke-run mode (VAECPP_FAST=1).

A notebook that raises fails its test. The kernel is the Python running pytest (a kernel spec
written to a temporary directory points at ``sys.executable``), so a ``python3`` kernel spec
installed elsewhere on the machine cannot substitute another interpreter. The kernel works
offline: downloads go to a closed local port and fail at once, so the MNIST loader falls back to
the test set in ``../shared/data`` as it would on a machine without network.
"""

import importlib.util
import json
import os
import pathlib
import sys
import warnings

import pytest

os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's migration warning
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("ipywidgets")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

from vaecpp import datasets  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SHARED_DATA = ROOT.parent / "shared" / "data"
KERNEL = "vaecpp-test-python"
CELL_TIMEOUT = 300  # seconds per cell; a smoke run takes a few seconds per notebook

# What each notebook reads besides what it generates itself (and the optional packages it needs).
NEEDS = {
    "01_frey_faces": ("frey",),
    "02_flexible_vae": ("mnist", "frey"),
    "03_make_vae_experiments": ("mnist",),
    "04_conv_vae_faces": (),
    "05_vae_intuition": ("mnist",),
    "06_sweep": ("optuna",),
}


def test_all_notebooks_are_listed():
    assert sorted(NEEDS) == [p.stem for p in NOTEBOOKS]


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    """A kernel spec directory whose only kernel runs this interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})",
        "language": "python",
    }))
    return KernelSpecManager(kernel_dirs=[str(root)], ensure_native_kernel=False)


@pytest.fixture
def notebook_env(monkeypatch, tmp_path):
    """The environment the kernel inherits: smoke-run mode, Agg, offline, shared data."""
    monkeypatch.setenv("VAECPP_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("VAECPP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VAECPP_MIRROR", "http://127.0.0.1:9")  # the discard port: refused at once
    if "VAECPP_THREADS" not in os.environ:
        # On a shared 2-core machine, OpenMP threads waiting for each other made the smoke runs
        # up to 5x slower than one thread.
        monkeypatch.setenv("VAECPP_THREADS", "1")
    if SHARED_DATA.is_dir():
        monkeypatch.setenv("VAECPP_DATA", str(SHARED_DATA))


def _missing(needs):
    """Why the data a notebook needs cannot be loaded, or None."""
    for name in needs:
        if name == "optuna":
            if importlib.util.find_spec("optuna") is None:
                return 'optuna is not installed (pip install "vaecpp[sweep]")'
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if name == "frey":
                    datasets.frey_faces(download=False)
                else:
                    datasets.load_mnist(download=False, fallback=True)
        except (OSError, ValueError) as e:
            first = str(e).splitlines()[0]
            return (f"{name} data not found (looked in $VAECPP_DATA={os.environ.get('VAECPP_DATA')}"
                    f" and the cache): {first}")
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_specs, notebook_env):
    reason = _missing(NEEDS.get(path.stem, ()))
    if reason:
        pytest.skip(reason)
    nb = nbformat.read(path, as_version=4)
    km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
                                     resources={"metadata": {"path": str(path.parent)}})
    # Raises CellExecutionError, naming the cell, if a cell fails. cleanup_kc: shut the kernel
    # down and close its sockets afterwards (by default nbclient leaves a given km running).
    client.execute(cleanup_kc=True)

    text = "\n".join(
        out.get("text", "") if out.get("output_type") == "stream"
        else out.get("data", {}).get("text/plain", "")
        for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))
    assert "FAST mode" in text, "the notebook did not see VAECPP_FAST"
    assert "val_loss:" in text, "the notebook printed no final losses"
    assert "nan" not in text.lower().split(), "a loss is NaN"
    images = sum("image/png" in out.get("data", {})
                 for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))
    assert images >= 3, f"expected figures in the outputs, found {images}"
