"""A portable build of vaecpp against a native one: seconds per training epoch of the same models
on the same data, each build in its own interpreter (a virtual environment per build), run in
turns (which goes first alternates between rounds) so that both see the same machine.

    # one venv per build, e.g.
    #   python -m venv /tmp/native   && /tmp/native/bin/pip install .
    #   python -m venv /tmp/portable && /tmp/portable/bin/pip install . -C cmake.define.VAECPP_NATIVE=OFF
    python benchmarks/bench_portable.py --native /tmp/native/bin/python \
        --portable /tmp/portable/bin/python

A native build (VAECPP_NATIVE=ON, the default) compiles everything with -march=native; a portable
one (what a published wheel is) compiles for the baseline x86-64 and picks its matrix-product and
element-wise kernels at run time from cpuid (`build_info()["gemm_kernels"]`,
`["elementwise_kernels"]`). The models and batches are bench_train.py's; the data Fashion-MNIST
(bench_train.load_data). Prints a Markdown table; nothing here is checked by a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = r"""
import json, sys, time
sys.path.insert(0, {here!r})
import bench_train, vaecpp
config, threads, epochs, subset, synthetic = {config!r}, {threads}, {epochs}, {subset}, {synthetic}
hidden, latent, batch = bench_train.CONFIGS[config]
x, _ = bench_train.load_data(subset=subset, synthetic=synthetic)
vae = vaecpp.VAE(bench_train.D, latent_dim=latent, hidden=hidden, seed=0, threads=threads)
vae.compile(optimizer=vaecpp.optimizers.Adam(learning_rate=1e-3))
times = []
class Timer(vaecpp.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None): self.t0 = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): times.append(time.perf_counter() - self.t0)
h = vae.fit(x, batch_size=batch, epochs=epochs, verbose=0, callbacks=[Timer()])
info = vaecpp.build_info()
print(json.dumps(dict(times=times[1:], loss=h.history["loss"][-1], native=info["native"],
                      gemm=info["gemm_kernels"], elementwise=info["elementwise_kernels"])))
"""


def run(python, config, threads, epochs, subset, synthetic):
    code = WORKER.format(here=HERE, config=config, threads=threads, epochs=epochs, subset=subset,
                         synthetic=synthetic)
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--native", required=True, help="python of the venv with the native build")
    p.add_argument("--portable", required=True, help="python of the venv with the portable build")
    p.add_argument("--configs", default="seed-intuition,pytorch-example")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=3, help="epochs per run, the first not timed")
    p.add_argument("--rounds", type=int, default=3, help="runs per build, the fastest kept")
    p.add_argument("--subset", type=int, default=None, help="first N training rows only")
    p.add_argument("--synthetic", action="store_true", help="random data instead of Fashion-MNIST")
    args = p.parse_args(argv)
    sys.path.insert(0, HERE)
    import bench_train
    cpu, flags = bench_train.cpu_model_and_flags()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; SIMD flags: {', '.join(flags)}; caches: "
          f"{bench_train.cache_sizes()}")
    builds = {"native": args.native, "portable": args.portable}
    rows = []
    for config in args.configs.split(","):
        for threads in args.threads:
            best, meta = {}, {}
            for rnd in range(args.rounds):
                # in turns, the first build alternating: the run after a pause was sometimes
                # the slower one on a shared VM
                order = list(builds.items())[:: 1 if rnd % 2 == 0 else -1]
                for name, python in order:
                    r = run(python, config, threads, args.epochs, args.subset, args.synthetic)
                    t = min(r["times"])
                    best[name] = min(best.get(name, t), t)
                    meta[name] = r
            rows.append((config, threads, best, meta))
            print(f"{config} x{threads}: native {best['native']:.3f} s, "
                  f"portable {best['portable']:.3f} s", file=sys.stderr, flush=True)
    m = rows[0][3]
    print(f"\nnative build: gemm {m['native']['gemm']}, element-wise {m['native']['elementwise']}; "
          f"portable build: gemm {m['portable']['gemm']}, element-wise "
          f"{m['portable']['elementwise']}\n")
    print("| config | batch | threads | native s/epoch | portable s/epoch | portable / native |"
          " loss native / portable |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for config, threads, best, meta in rows:
        hidden, latent, batch = bench_train.CONFIGS[config]
        dims = "-".join(str(d) for d in (bench_train.D, *hidden, latent))
        print(f"| {config} {dims} | {batch} | {threads} | {best['native']:.3f} | "
              f"{best['portable']:.3f} | {best['portable'] / best['native']:.3f} | "
              f"{meta['native']['loss']:.2f} / {meta['portable']['loss']:.2f} |")


if __name__ == "__main__":
    main()
