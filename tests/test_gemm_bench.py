"""The products of a Dense layer timed alone (vaecpp._testing.gemm_layer_bench, what
benchmarks/bench_gemm.py compares with other libraries) run every layout with both kernels and
refuse bad arguments; the benchmark script runs end to end on a tiny grid. No timing is checked."""

import os
import subprocess
import sys

import pytest

from vaecpp import _testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("layout", ["forward", "dW", "dX"])
@pytest.mark.parametrize("kernel", ["engine", "eigen"])
@pytest.mark.parametrize("shape", [(8, 40, 24), (40, 24, 8)])  # more rows than columns too
def test_layer_bench_runs_every_layout(layout, kernel, shape):
    B, C, OC = shape
    assert _testing.gemm_layer_bench(layout, B, C, OC, 2, 2, kernel) > 0


@pytest.mark.parametrize("args", [("sideways", 8, 8, 8, 1, 1, "engine"),
                                  ("forward", 0, 8, 8, 1, 1, "engine"),
                                  ("forward", 8, 8, 8, 0, 1, "engine"),
                                  ("forward", 8, 8, 8, 1, 0, "engine"),
                                  ("forward", 8, 8, 8, 1, 1, "mkl")])
def test_layer_bench_refuses_bad_arguments(args):
    with pytest.raises(ValueError):
        _testing.gemm_layer_bench(*args)


def test_bench_gemm_script_runs():
    pytest.importorskip("threadpoolctl")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_gemm.py"),
                          "--threads", "1", "--batches", "8", "--widths", "16", "--n", "64",
                          "--reps", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| 64^3 | 1 | square |" in out.stdout and "| 8 x 784 -> 16 | 1 | dW |" in out.stdout
    assert "of the best library" in out.stdout
