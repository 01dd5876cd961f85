"""The matrix product's kernel set is picked at run time from the CPU (gemm.hpp): x86-64-v4
(AVX-512) where the CPU has it, else x86-64-v3 (AVX2 + FMA), else Eigen; VAECPP_GEMM_KERNELS
forces one for tests; build_info() and `vaecpp info` name the set in use."""

import json
import os
import platform
import subprocess
import sys

import pytest

from vaecpp import _core

INFO = _core.build_info()
TESTS = os.path.dirname(os.path.abspath(__file__))
V3, V4 = "x86-64-v3 (AVX2+FMA)", "x86-64-v4 (AVX-512)"


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


def test_eigen_forced_is_the_reference_itself():
    r = run_with("eigen")
    assert r["kernels"] == "eigen" and not r["fast"] and r["blocking"] == {}
    assert r["repeatable"] and r["worst"] == 0


def test_unknown_request_falls_back_to_the_best_set():
    assert run_with("avx9000")["kernels"] == INFO["gemm_kernels"]


def test_vaecpp_info_names_the_kernel_set():
    out = subprocess.run([sys.executable, "-m", "vaecpp", "info"], capture_output=True, text=True,
                         check=True).stdout
    assert f"matrix product kernels: {INFO['gemm_kernels']}" in out
