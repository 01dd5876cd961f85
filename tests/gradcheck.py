"""Central finite differences in float64, shared by the gradient tests."""

import numpy as np


def numeric_grad(f, x, h=1e-6):
    """d f / d x for a scalar function f of the array x (perturbed in place, then restored)."""
    g = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return g


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-12)
    return float(np.abs(a - b).max() / scale)


def assert_close_grad(analytic, numeric, tol=1e-6, what="gradient"):
    err = rel_error(analytic, numeric)
    assert err < tol, f"{what}: relative error {err:.3g} >= {tol}"
