"""The element-wise loops (activations, the Bernoulli likelihood, bias sums, the optimizer rules)
run in an instruction set picked at run time, like the matrix product (elementwise_dispatch.hpp):
x86-64-v4 (AVX-512) or x86-64-v3 (AVX2 + FMA) where the CPU has it, else the generic set (the
build's own flags: SSE2 in a portable build). VAECPP_ELEMENTWISE_KERNELS forces one; each set the
CPU runs must agree with NumPy and be deterministic; sets may differ from each other in the last
bits (FMA contraction)."""

import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

from vaecpp import _core

# The CPU's x86-64 levels as Linux reports them, and whether this build dispatches at all, as
# for the matrix product's sets.
from test_gemm_dispatch import (DISPATCH, HAS_V3, HAS_V4, V3, V4, V4_ON_AVX2,  # noqa: E402
                                needs_avx2, not_forced)

INFO = _core.build_info()
needs_dispatch = pytest.mark.skipif(
    not DISPATCH, reason="run-time kernel dispatch is built with GCC on x86-64 (and checked "
    f"against Linux's CPU flags); this build uses {INFO['elementwise_kernels']!r}")

# The child computes every dispatched loop on inputs that cover their branches (large |x|, tiny
# |x|, exact zeros, lengths off the vector width), compares with NumPy in float64, and runs each
# twice and on 1 and 2 threads to see the same bits.
CHILD = r"""
import json
import numpy as np
from vaecpp import _core, _testing
K = _testing.kernels

def sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))

FWD = {"relu": lambda x: np.maximum(x, 0), "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
       "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), "tanh": np.tanh,
       "sigmoid": sigmoid, "softplus": lambda x: np.logaddexp(0, x)}
GRAD = {"relu": lambda y: (y > 0) * 1.0, "leaky_relu": lambda y: np.where(y > 0, 1, 0.2),
        "elu": lambda y: np.where(y > 0, 1, y + 1), "tanh": lambda y: 1 - y * y,
        "sigmoid": lambda y: y * (1 - y), "softplus": lambda y: -np.expm1(-y)}

def err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float((np.abs(got - ref) / np.maximum(1, np.abs(ref))).max(initial=0))

def bits(r):
    return [np.asarray(a).tobytes() for a in (r if isinstance(r, tuple) else (r,))]

def same(f):  # f(threads): the same bits twice on one thread and on two
    return bits(f(1)) == bits(f(1)) == bits(f(2))

out = {"kernels": _core.build_info()["elementwise_kernels"], "errors": {}, "deterministic": True}
rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    name = np.dtype(dt).name
    x = np.concatenate([np.linspace(-100, 100, 2001), rng.uniform(-6, 6, 70001),
                        [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 700, -700]]).astype(dt)
    for act in FWD:
        y = K.act_forward(x, act, True, 1)
        out["errors"][f"{name} {act}"] = err(y, FWD[act](x.astype(np.float64)))
        dout = rng.uniform(-1, 1, x.size).astype(dt)
        g = K.act_backward(dout, y, act, True, 1)
        out["errors"][f"{name} {act} grad"] = err(g, dout * GRAD[act](y.astype(np.float64)))
        out["deterministic"] &= same(lambda t: K.act_forward(x, act, True, t))
        out["deterministic"] &= same(lambda t: K.act_backward(dout, y, act, True, t))
    for B, D in ((3, 5), (7, 257), (50, 784), (1, 100003)):
        l = rng.uniform(-40, 40, (B, D)).astype(dt)
        l[:, ::5] = rng.uniform(-1e-3, 1e-3, l[:, ::5].shape)
        xb = (rng.uniform(size=(B, D)) < 0.4).astype(dt)
        nll, dp = K.bernoulli_nll_grad(xb, l, 0.02, True, 1)
        l64 = l.astype(np.float64)
        ref = (np.logaddexp(0, l64) - xb * l64).sum(axis=1)
        key = f"{name} bernoulli nll"
        out["errors"][key] = max(out["errors"].get(key, 0), float((np.abs(nll - ref) / ref).max()))
        key = f"{name} bernoulli grad"
        out["errors"][key] = max(out["errors"].get(key, 0), err(dp / 0.02, sigmoid(l64) - xb))
        key = f"{name} bernoulli mean"
        mean = K.bernoulli_mean(l, True, 1)
        out["errors"][key] = max(out["errors"].get(key, 0), err(mean, sigmoid(l64)))
        out["deterministic"] &= same(lambda t: K.bernoulli_nll_grad(xb, l, 0.02, True, t))
    # the bias gradient's column sums, through a linear dense layer's backward
    B, C, OC = 50, 33, 517
    xi, W = rng.uniform(-1, 1, (B, C)).astype(dt), rng.uniform(-1, 1, (C, OC)).astype(dt)
    b, d = rng.uniform(-1, 1, OC).astype(dt), rng.uniform(-1, 1, (B, OC)).astype(dt)
    z = [np.zeros((C, OC), dt), np.zeros(OC, dt), np.zeros((B, C), dt)]
    _, _, db = K.dense_backward(xi, W, b, d, "linear", *z, False, True, 1, False)
    out["errors"][f"{name} bias sums"] = err(db, d.astype(np.float64).sum(axis=0))
    # Adam over 4 steps, a length off every vector width
    n = 100003
    p0, gs = rng.uniform(-1, 1, n).astype(dt), rng.uniform(-1, 1, (4, n)).astype(dt)
    p, m, v = p0.astype(np.float64), np.zeros(n), np.zeros(n)
    for t, g in enumerate(gs.astype(np.float64), 1):
        m += (g - m) * 0.1
        v += (g * g - v) * 0.001
        p -= 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
    spec = dict(name="adam", learning_rate=0.01)
    out["errors"][f"{name} adam"] = err(K.optimizer_run(spec, p0, gs, threads=1), p)
    out["deterministic"] &= same(lambda t: K.optimizer_run(spec, p0, gs, threads=t))
print(json.dumps(out))
"""

# Worst error relative to max(1, |reference|): the element-wise results are accurate to a few
# units in the last place (exp, expm1 and log1p to 1-2; seen: 1.5e-7 in float32, 4e-16 in
# float64); sums (the Bernoulli loss over up to 1e5 values, 50-row bias sums in float32) and
# Adam's four steps may lose a few more.
TOL = {"float32": 1e-6, "float64": 1e-13}
TOL_SUMS = {"float32": 1e-5, "float64": 1e-13}
SUMS = ("nll", "sums", "adam")


def run_with(kernels):
    env = dict(os.environ, VAECPP_ELEMENTWISE_KERNELS=kernels)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def check(result):
    assert result["deterministic"]
    for key, e in result["errors"].items():
        dtype = key.split()[0]
        tol = TOL_SUMS[dtype] if any(w in key for w in SUMS) else TOL[dtype]
        assert e <= tol, f"{result['kernels']}: {key} off by {e:.3g} (> {tol:.0e})"


@needs_dispatch
@not_forced
def test_the_best_set_this_cpu_runs_is_picked():
    expected = V4 if HAS_V4 else V3 if HAS_V3 else None
    if expected:
        assert INFO["elementwise_kernels"] == expected
    else:
        assert INFO["elementwise_kernels"].startswith("generic")
    # the matrix product picks by the same rule
    assert INFO["gemm_kernels"] == (expected or "eigen")


@pytest.mark.skipif(INFO["native"], reason="a native build's generic set has the build's flags")
def test_portable_build_generic_set_is_baseline_x86_64():
    r = run_with("generic")
    assert r["kernels"] == ("generic (x86-64: SSE2)" if platform.machine() == "x86_64"
                            else "generic")


def test_generic_set_matches_numpy_and_is_deterministic():
    r = run_with("generic")
    assert r["kernels"].startswith("generic")
    check(r)


@needs_dispatch
@pytest.mark.skipif(not HAS_V3, reason="this CPU has no AVX2 + FMA: the x86-64-v3 set cannot run")
def test_v3_set_matches_numpy_and_is_deterministic():
    r = run_with("v3")
    assert r["kernels"] == V3
    check(r)


@needs_dispatch
@pytest.mark.skipif(not HAS_V4, reason="this CPU has no AVX-512 (x86-64-v4: avx512f/vl/bw/dq): "
                    "the v4 set is compiled in but cannot be executed here")
def test_v4_set_matches_numpy_and_is_deterministic():
    r = run_with("v4")
    assert r["kernels"] == V4
    check(r)


@needs_dispatch
@needs_avx2
def test_v4_source_on_avx2_matches_numpy_and_is_deterministic():
    """The v4 set's loops (64-byte vectors: 16 floats, 8 doubles) compiled for AVX2, each vector
    two AVX2 registers: their lane counts, remainders and Bernoulli lanes checked on a CPU
    without AVX-512."""
    r = run_with("v4-on-avx2")
    assert r["kernels"] == V4_ON_AVX2
    check(r)


def test_unknown_request_falls_back_to_the_best_set():
    assert run_with("avx9000")["kernels"] == run_with("auto")["kernels"]


def test_vaecpp_info_names_both_kernel_sets():
    out = subprocess.run([sys.executable, "-m", "vaecpp", "info"], capture_output=True, text=True,
                         check=True).stdout
    assert f"element-wise kernels: {INFO['elementwise_kernels']}" in out
    assert f"matrix product kernels: {INFO['gemm_kernels']}" in out


@pytest.mark.skipif(INFO["native"] or not DISPATCH or shutil.which("objdump") is None,
                    reason="checks the machine code of a portable GCC x86-64 build with objdump")
def test_portable_build_keeps_avx_inside_the_dispatched_sets():
    """A portable module must run on any x86-64: AVX registers may appear only in the functions of
    the kernel sets picked by cpuid (EwV3 / EwV4, gemm_v3 / gemm_v4), never in code every CPU
    runs (an AVX2 copy of a shared inline function picked by the linker would crash there)."""
    import vaecpp

    folder = os.path.dirname(vaecpp.__file__)
    for lib in sorted(f for f in os.listdir(folder) if f.endswith(".so")):
        cmd = ["objdump", "-d", "--no-show-raw-insn", "-C", os.path.join(folder, lib)]
        asm = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        leaks, name = set(), ""
        for line in asm.splitlines():
            if line.endswith(">:"):
                name = line
            elif ("%ymm" in line or "%zmm" in line) and not any(
                    s in name for s in ("EwV3", "EwV4", "gemm_v3", "gemm_v4")):
                leaks.add(name)
        assert not leaks, f"{lib}: AVX code outside the dispatched sets: {sorted(leaks)[:5]}"
