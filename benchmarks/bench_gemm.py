"""vaecpp's matrix product against Eigen, torch.matmul and NumPy's BLAS (OpenBLAS in NumPy's
wheels): one large square product, and the three products of a Dense layer at the VAE's own
shapes, each split between threads as the layer splits it.

    python benchmarks/bench_gemm.py                     # 2048^3 and the VAE grid, 1 and 2 threads
    python benchmarks/bench_gemm.py --threads 1 --batches 50 --widths 512

Layouts of a (B, C) -> (B, OC) layer: forward X @ W, dW = X^T @ dY (vaecpp: as a training step
forms it, gemm_then_rows split over W's rows, without the optimizer step), dX = dY @ W^T. The grid is
B in --batches by width in --widths, both as an encoder layer (C = 784, OC = width) and as a
decoder layer (C = width, OC = 784). Rates are GFLOP/s (2 B C OC per product), best of --reps.
torch is optional (its column is left out without it); NumPy's threads are pinned with
threadpoolctl. No number here is checked by a test: on a shared machine, run it when it is quiet
(see /proc/loadavg, printed with the results).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

D = 784
LAYOUTS = ("forward", "dW", "dX")


def best_time(fn, reps):
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def library_products(layout, B, C, OC):
    """The product of `layout` as a function of (X, W, dY), and those three arrays."""
    rng = np.random.default_rng(0)
    X = rng.random((B, C), np.float32)
    W = rng.random((C, OC), np.float32)
    dY = rng.random((B, OC), np.float32)
    ops = {"forward": lambda x, w, dy: x @ w, "dW": lambda x, w, dy: x.T @ dy,
           "dX": lambda x, w, dy: dy @ w.T}[layout]
    return ops, (X, W, dY)


def rates(layout, B, C, OC, threads, reps, torch):
    """GFLOP/s of vaecpp, Eigen, torch (None without it) and NumPy on one layer product."""
    from threadpoolctl import threadpool_limits
    from vaecpp import _testing

    flops = 2.0 * B * C * OC * 1e-9
    out = {k: _testing.gemm_layer_bench(layout, B, C, OC, reps, threads, k)
           for k in ("engine", "eigen")}
    op, arrays = library_products(layout, B, C, OC)
    if torch is not None:
        torch.set_num_threads(threads)
        t_arrays = [torch.from_numpy(a) for a in arrays]
        out["torch"] = flops / best_time(lambda: op(*t_arrays), reps)
    with threadpool_limits(limits=threads, user_api="blas"):
        out["numpy"] = flops / best_time(lambda: op(*arrays), reps)
    return out


def square_rates(n, threads, torch):
    from threadpoolctl import threadpool_limits
    from vaecpp import _testing

    flops = 2.0 * n ** 3 * 1e-9
    out = {k: _testing.gemm_bench(n, 5, threads, k) for k in ("engine", "eigen")}
    a = np.random.default_rng(0).random((n, n), np.float32)
    b = np.random.default_rng(1).random((n, n), np.float32)
    if torch is not None:
        torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["torch"] = flops / best_time(lambda: ta @ tb, 5)
    with threadpool_limits(limits=threads, user_api="blas"):
        out["numpy"] = flops / best_time(lambda: a @ b, 5)
    return out


def percent_of_best(r):
    return 100.0 * r["engine"] / max(v for k, v in r.items() if k != "engine")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, nargs="+", default=[50, 100, 128, 256])
    p.add_argument("--widths", type=int, nargs="+", default=[200, 400, 512, 784, 1024])
    p.add_argument("--n", type=int, default=2048, help="size of the square product (0: none)")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    from vaecpp import _core

    info = _core.build_info()
    libs = ["eigen"] + (["torch"] if torch is not None else []) + ["numpy"]
    print(f"CPU: {cpu_model()}; vaecpp kernels: {info['gemm_kernels']}, blocks "
          f"{info['gemm_blocking'].get('float32')}; torch {torch.__version__ if torch else 'absent'}"
          f", NumPy {np.__version__}; load average before: {os.getloadavg()}")
    print()
    print("| shape | threads | layout | vaecpp | " + " | ".join(libs) + " | % of best library |")
    print("|---|---:|---|---:|" + "---:|" * len(libs) + "---:|")
    summary = {t: [] for t in args.threads}

    def row(shape, t, layout, r):
        pct = percent_of_best(r)
        summary[t].append((pct, shape, layout))
        print(f"| {shape} | {t} | {layout} | {r['engine']:.1f} | "
              + " | ".join(f"{r[k]:.1f}" for k in libs) + f" | {pct:.0f}% |")

    for t in args.threads:
        if args.n:
            row(f"{args.n}^3", t, "square", square_rates(args.n, t, torch))
        for B in args.batches:
            for w in args.widths:
                for C, OC in ((D, w), (w, D)) if w != D else ((D, w),):
                    for layout in LAYOUTS:
                        row(f"{B} x {C} -> {OC}", t, layout, rates(layout, B, C, OC, t, args.reps, torch))
    print()
    for t, rows in summary.items():
        pcts = [r[0] for r in rows]
        worst = min(rows)
        print(f"{t} thread(s): vaecpp at {statistics.median(pcts):.0f}% of the best library "
              f"(median), {worst[0]:.0f}% at worst ({worst[1]}, {worst[2]}); "
              f"{sum(p >= 85 for p in pcts)} of {len(pcts)} at 85% or more")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
