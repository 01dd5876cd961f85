"""The matrix product's kernel set is picked at run time from the CPU (gemm.hpp): x86-64-v4
(AVX-512) where the CPU has it, else x86-64-v3 (AVX2 + FMA), else Eigen; VAECPP_GEMM_KERNELS
forces one for tests; build_info() and `vaecpp info` name the set in use."""

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from vaecpp import _core, _testing

INFO = _core.build_info()
TESTS = os.path.dirname(os.path.abspath(__file__))
V3, V4 = "x86-64-v3 (AVX2+FMA)", "x86-64-v4 (AVX-512)"
V4_ON_AVX2 = "x86-64-v4 source on AVX2+FMA (tests)"  # the v4 sets' source compiled for AVX2


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = cpu_flags()
HAS_V3 = {"avx2", "fma"} <= FLAGS
HAS_V4 = HAS_V3 and {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= FLAGS
# The dispatch is compiled by GCC on x86-64 (clang's __VERSION__ names clang); the flags are Linux's.
DISPATCH = (platform.machine() == "x86_64" and "clang" not in INFO["compiler"].lower()
            and bool(FLAGS))
needs_dispatch = pytest.mark.skipif(
    not DISPATCH, reason="run-time kernel dispatch is built with GCC on x86-64 (and checked "
                         f"against Linux's CPU flags); this build uses {INFO['gemm_kernels']!r}")
needs_avx2 = pytest.mark.skipif(not HAS_V3, reason="this CPU has no AVX2 + FMA: the v4 sets' "
                                "source compiled for AVX2 cannot run here")

# A run may force the sets for the whole suite (.ci/run runs one through the v4 source on AVX2);
# then the set the CPU would pick is not the one in use.
FORCED = {k: os.environ[k] for k in ("VAECPP_GEMM_KERNELS", "VAECPP_ELEMENTWISE_KERNELS")
          if os.environ.get(k, "auto") != "auto"}
not_forced = pytest.mark.skipif(bool(FORCED), reason=f"this run forces the kernel sets ({FORCED}): "
                                "the set the CPU would pick is not the one in use")

CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from vaecpp import _core
import test_gemm_blocking as t
info = _core.build_info()
b = info["gemm_blocking"].get("float32", dict(kc_max=256, mc_max=48))
worst, repeatable = t.compare_to_reference(t.shapes_around(b["kc_max"], b["mc_max"]))
print(json.dumps(dict(kernels=info["gemm_kernels"], fast=info["fast_gemm"],
                      blocking=info["gemm_blocking"], worst=worst, repeatable=repeatable)))
"""


def run_with(kernels):
    env = dict(os.environ, VAECPP_GEMM_KERNELS=kernels)
    out = subprocess.run([sys.executable, "-c", CHILD.format(tests=TESTS)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@needs_dispatch
@not_forced
def test_the_best_set_this_cpu_runs_is_picked():
    assert INFO["gemm_kernels"] == (V4 if HAS_V4 else V3 if HAS_V3 else "eigen")
    assert INFO["fast_gemm"] == HAS_V3


@needs_dispatch
@pytest.mark.skipif(not HAS_V3, reason="this CPU has no AVX2 + FMA: the x86-64-v3 set cannot run")
def test_v3_set_forced_matches_the_reference():
    r = run_with("v3")
    assert r["kernels"] == V3 and r["fast"]
    assert (r["blocking"]["float32"]["mr"], r["blocking"]["float32"]["nr"]) == (6, 16)
    assert r["repeatable"] and r["worst"] < 1e-5


@needs_dispatch
@pytest.mark.skipif(not HAS_V4, reason="this CPU has no AVX-512 (x86-64-v4: avx512f/vl/bw/dq): "
                    "the v4 kernel set is compiled in but cannot be executed here")
def test_v4_set_matches_the_reference():
    r = run_with("v4")
    assert r["kernels"] == V4 and r["fast"]
    assert (r["blocking"]["float32"]["mr"], r["blocking"]["float32"]["nr"]) == (12, 32)
    assert r["repeatable"] and r["worst"] < 1e-5


@needs_dispatch
@needs_avx2
def test_v4_source_on_avx2_matches_the_reference():
    """The v4 set's source compiled for AVX2 (VAECPP_GEMM_KERNELS=v4-on-avx2: its 12 x 32 tile,
    16-lane vectors and blocking, each vector two AVX2 registers) runs wherever AVX2 does: the
    v4 kernels' logic checked on a CPU without AVX-512 (the v4 instructions themselves need one)."""
    r = run_with("v4-on-avx2")
    assert r["kernels"] == V4_ON_AVX2 and r["fast"]
    assert (r["blocking"]["float32"]["mr"], r["blocking"]["float32"]["nr"]) == (12, 32)
    assert (r["blocking"]["float64"]["mr"], r["blocking"]["float64"]["nr"]) == (12, 16)
    assert r["repeatable"] and r["worst"] < 1e-5


def test_eigen_forced_is_the_reference_itself():
    r = run_with("eigen")
    assert r["kernels"] == "eigen" and not r["fast"] and r["blocking"] == {}
    assert r["repeatable"] and r["worst"] == 0


def test_unknown_request_falls_back_to_the_best_set():
    assert run_with("avx9000")["kernels"] == run_with("auto")["kernels"]



@needs_dispatch
@needs_avx2
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_v4_source_on_avx2_tiles_match_the_reference(dtype):
    """The AVX-512 set's source compiled for AVX2 (12-row tile, 16-lane float / 8-lane double
    vectors, each two AVX2 registers), in-process on any AVX2 CPU (the v4 set itself needs
    AVX-512): every tile height 1..12, merged remainders, blocks of rows and of k, ragged strips
    and both transposes match the reference, and cutting C into row and column blocks changes no
    bit."""
    K_ = _testing.kernels
    rng = np.random.default_rng(5)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for M, N, K in [(1, 3, 1), (5, 40, 70), (11, 17, 300), (12, 32, 129), (13, 100, 257),
                    (25, 48, 33), (50, 200, 784), (131, 24, 40), (300, 9, 600)]:
        for trans_a, trans_b in [(False, False), (True, False), (False, True), (True, True)]:
            a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
            b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
            c0 = rng.standard_normal((M, N)).astype(dtype)
            ref = K_.gemm(a, b, c0, trans_a, trans_b, True, False)
            got = K_.gemm_v4_on_avx2(a, b, c0, trans_a, trans_b, True)
            assert np.max(np.abs(got - ref)) <= tol * np.sqrt(K) * max(1.0, np.abs(ref).max())
            r, j = M // 3, min(N, 16)
            cut = np.empty_like(got)
            for r0, r1 in ((0, r), (r, M)):
                for j0, j1 in ((0, j), (j, N)):
                    if r0 == r1 or j0 == j1:
                        continue
                    ap = a[:, r0:r1] if trans_a else a[r0:r1]
                    bp = b[j0:j1] if trans_b else b[:, j0:j1]
                    cut[r0:r1, j0:j1] = K_.gemm_v4_on_avx2(np.ascontiguousarray(ap),
                                                            np.ascontiguousarray(bp),
                                                            np.ascontiguousarray(c0[r0:r1, j0:j1]),
                                                            trans_a, trans_b, True)
            np.testing.assert_array_equal(cut, got)


TRAIN_CHILD = """
import json, numpy as np, vaecpp
x = (np.random.default_rng(0).uniform(size=(600, 784)) < 0.3).astype(np.float32)
out = {"kernels": [vaecpp.build_info()[k] for k in ("gemm_kernels", "elementwise_kernels")]}
for threads in (1, 2):
    vae = vaecpp.VAE(784, latent_dim=2, hidden=[96], seed=3, threads=threads)
    vae.compile(vaecpp.optimizers.Adam(1e-3))
    h = vae.fit(x, epochs=3, batch_size=50, verbose=0)
    out[threads] = dict(loss=h.history["loss"], w=float(np.abs(vae.get_weights()[0]).sum()))
print(json.dumps(out))
"""


def train_with(kernels):
    env = dict(os.environ, VAECPP_GEMM_KERNELS=kernels, VAECPP_ELEMENTWISE_KERNELS=kernels)
    out = subprocess.run([sys.executable, "-c", TRAIN_CHILD], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@needs_dispatch
@needs_avx2
def test_v4_source_on_avx2_trains_as_the_v3_set_does():
    """The whole engine (products, the Dense step fused into the weight-gradient product, the
    element-wise loops, Adam) through the v4 sets' source: repeatable, and the same training as
    the v3 sets' to float32 rounding (the sets sum k in blocks of different length)."""
    a, again, v3 = train_with("v4-on-avx2"), train_with("v4-on-avx2"), train_with("v3")
    assert a["kernels"] == [V4_ON_AVX2] * 2
    assert v3["kernels"] == [V3] * 2
    assert a == again
    for threads in ("1", "2"):
        np.testing.assert_allclose(a[threads]["loss"], v3[threads]["loss"], rtol=1e-4)
        np.testing.assert_allclose(a[threads]["w"], v3[threads]["w"], rtol=1e-3)
