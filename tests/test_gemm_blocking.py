"""The matrix product's cache blocks come from the CPU it runs on (cpp/cpu_caches.hpp, gemm.hpp):
the sizes reported by build_info follow the documented rules, VAECPP_CPU_CACHES changes them, and
the product stays equal to the reference (Eigen) and repeatable under any of them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vaecpp import _core, _testing

INFO = _core.build_info()
pytestmark = pytest.mark.skipif(not INFO["fast_gemm"], reason="this build has no register-blocked "
                                "product (Eigen's is used): no cache blocks to check")


def rule(l1d, l2, mr, nr, elem):
    """The documented rules (gemm.hpp, blocking_for): B's micro-panel (kc x nr) in half of L1d, kc
    a multiple of 16 in [64, 1024]; A's packed block (mc x kc) in half of L2, mc a multiple of mr
    in [mr, 4096]; B's panel 4096 columns wide (a multiple of nr)."""
    kc = min(1024, max(64, l1d // 2 // (nr * elem) // 16 * 16))
    mc = min(4096 // mr * mr, max(mr, l2 // 2 // (kc * elem) // mr * mr))
    return kc, mc, 4096 // nr * nr


def read_sysfs():
    sizes = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    for idx in sorted(n for n in os.listdir(base) if n.startswith("index")):
        with open(os.path.join(base, idx, "level")) as f:
            level = f.read().strip()
        with open(os.path.join(base, idx, "type")) as f:
            kind = f.read().strip()
        with open(os.path.join(base, idx, "size")) as f:
            size = f.read().strip()
        mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
        value = int(size.rstrip("KM")) * mult
        if (level, kind) == ("1", "Data"):
            sizes["l1d"] = value
        elif level == "2" and kind in ("Unified", "Data"):
            sizes["l2"] = value
    return sizes


def check_rules(info):
    caches = info["cpu_caches"]
    for dtype, elem in (("float32", 4), ("float64", 8)):
        b = info["gemm_blocking"][dtype]
        assert (b["kc_max"], b["mc_max"], b["nc_max"]) == rule(caches["l1d"], caches["l2"], b["mr"],
                                                               b["nr"], elem)


def test_blocks_follow_the_rules_for_this_cpu():
    check_rules(INFO)
    if INFO["cpu_caches_source"] == "sysfs":
        sizes = read_sysfs()
        assert INFO["cpu_caches"]["l1d"] == sizes["l1d"] and INFO["cpu_caches"]["l2"] == sizes["l2"]


def shapes_around(kc, mc):
    """K around one, two and three blocks of kc, M around one and two blocks of mc, with ragged
    rows and columns."""
    return [(9, 49, kc - 1), (13, 100, kc + 1), (50, 784, 2 * kc + 3), (7, 17, 3 * kc - 5),
            (mc + 1, 40, 33), (2 * mc - 5, 24, kc + 7)]


def compare_to_reference(shapes):
    """Max relative difference of the product and the reference over the shapes, both layouts of
    B, and whether repeating a product gave the same bits."""
    rng = np.random.default_rng(3)
    worst, repeatable = 0.0, True
    for M, N, K in shapes:
        for trans_b in (False, True):
            a = rng.standard_normal((M, K)).astype(np.float32)
            b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
            c0 = np.zeros((M, N), np.float32)
            ref = _testing.kernels.gemm(a, b, c0, False, trans_b, False, False).astype(np.float64)
            fast = _testing.kernels.gemm(a, b, c0, False, trans_b, False, True)
            again = _testing.kernels.gemm(a, b, c0, False, trans_b, False, True)
            repeatable &= bool(np.array_equal(fast, again))
            worst = max(worst, float(np.max(np.abs(fast - ref)) / np.sqrt(K)))
    return worst, repeatable


def blocks(info):
    b = info["gemm_blocking"]["float32"]
    return b["kc_max"], b["mc_max"]


def test_product_matches_the_reference_around_this_cpus_blocks():
    worst, repeatable = compare_to_reference(shapes_around(*blocks(INFO)))
    assert repeatable
    assert worst < 1e-5


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from vaecpp import _core
import test_gemm_blocking as t
info = _core.build_info()
worst, repeatable = t.compare_to_reference(t.shapes_around(*t.blocks(info)))
print(json.dumps(dict(info=dict(cpu_caches=info["cpu_caches"], gemm_blocking=info["gemm_blocking"],
                                cpu_caches_source=info["cpu_caches_source"]),
                      worst=worst, repeatable=repeatable)))
"""


@pytest.mark.parametrize("caches, l1d, l2", [("48K,2M", 48 << 10, 2 << 20),
                                             ("8K,64K", 8 << 10, 64 << 10),
                                             ("1M,64M", 1 << 20, 64 << 20)])
def test_other_cpus_caches_give_their_own_blocks(caches, l1d, l2):
    """VAECPP_CPU_CACHES stands in for another CPU: its blocks follow the same rules (including the
    clamps) and the product still matches the reference."""
    env = dict(os.environ, VAECPP_CPU_CACHES=caches)
    code = CHILD.format(tests=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["info"]["cpu_caches_source"] == "VAECPP_CPU_CACHES"
    assert r["info"]["cpu_caches"] == {"l1d": l1d, "l2": l2}
    check_rules(r["info"])
    assert r["repeatable"] and r["worst"] < 1e-5


def test_bad_cache_override_is_ignored():
    env = dict(os.environ, VAECPP_CPU_CACHES="lots")
    out = subprocess.run([sys.executable, "-c", "from vaecpp import _core; "
                          "print(_core.build_info()['cpu_caches_source'])"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() != "VAECPP_CPU_CACHES"
