"""Data-parallel training with MPI on this machine, and what it projects to many machines.

    python benchmarks/bench_distributed.py          # full run, writes benchmarks/RESULTS_distributed.md
                                                    # (24 min on the project's 2-core VM at load 10;
                                                    # about 10 CPU-minutes)
    python benchmarks/bench_distributed.py --quick  # smoke run: 1000 rows, small buffers

Three measurements, each in processes of its own:

1. Each model trained on the same data and global batch as 1 process x 2 threads and as 2 MPI
   ranks x 1 thread (``mpiexec -n 2``, ``fit(..., distributed=MPI.COMM_WORLD)``): seconds per
   epoch; in the ranks, the time of the all-reduce the engine calls once per step (gradients, loss
   sums and flag word in one buffer), per step and as a share of the step. The benchmark times it
   by wrapping ``vaecpp.distributed.Distributed.allreduce`` (the callback the engine calls) with a
   timer; the library itself is not instrumented. That time includes waiting for the slower rank.
2. ``comm.Allreduce`` of float32 buffers of 8 B ... 16 MB between 2 ranks on this machine (MPI's
   intra-node channel: shared memory, not a network): latency and bandwidth.
3. 1 process x 2 threads on batches of ceil(B / N) rows: a step's compute time on one of N
   machines that share a global batch of B rows.

The projection to N machines (each like this one, one rank of 2 threads) adds to 3's compute
time the ring all-reduce cost ``2 (N-1)/N * bytes / bandwidth + 2 (N-1) * latency`` per step, for
networks whose bandwidth and latency are stated as assumptions (``NETWORKS``) and for the numbers
measured in 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_train  # noqa: E402  (the models, data loading and CPU counters of the main benchmark)

CONFIGS = {k: bench_train.CONFIGS[k] for k in ("seed-intuition", "seed-flexible", "pytorch-example")}
D = bench_train.D
DATA_FILE = os.path.join(bench_train.DATA_DIR, "train-images-idx3-ubyte.gz")

# Assumed networks: (name, bandwidth in bytes/s that one MPI message stream reaches, latency in s
# of one small message between two hosts). Round figures for common hardware, not measurements.
NETWORKS = [
    ("10 GbE (TCP)", 1.1e9, 30e-6),
    ("100 Gb/s InfiniBand (RDMA)", 11e9, 2e-6),
]
MACHINES = (1, 2, 4, 8, 16, 32)

# Options left unset: (value with --quick, value otherwise).
DEFAULTS = {"epochs": (2, 3), "subset": (1000, None), "reps": (5, 30),
            "max_bytes": (256 << 10, 16 << 20), "compute_steps": (5, 50)}


def arch(cfg):
    hidden, latent, _ = CONFIGS[cfg]
    return "-".join(map(str, (D, *hidden, latent)))


# ---- workers ---------------------------------------------------------------------------------------
def comm_world():
    from mpi4py import MPI
    return MPI, MPI.COMM_WORLD


def make_vae(cfg, threads):
    import vaecpp

    hidden, latent, _ = CONFIGS[cfg]
    vae = vaecpp.VAE(D, latent_dim=latent, hidden=hidden, likelihood="bernoulli", seed=0,
                     threads=threads, dtype="float32")
    vae.compile(optimizer=vaecpp.optimizers.Adam(learning_rate=1e-3))
    return vae


def timed_allreduce_calls():
    """Wraps Distributed.allreduce (what the engine calls each step) with a timer; returns the
    list it appends (buffer length, seconds) to."""
    from vaecpp.distributed import Distributed

    calls, inner = [], Distributed.allreduce

    def allreduce(self, a):
        t0 = time.perf_counter()
        inner(self, a)
        calls.append((a.size, time.perf_counter() - t0))

    Distributed.allreduce = allreduce
    return calls


def worker_train(args):
    """Trains one model; under mpiexec (--mpi) over COMM_WORLD. Prints RESULT on rank 0."""
    import vaecpp

    comm = comm_world()[1] if args.mpi else None
    rank = comm.Get_rank() if comm is not None else 0
    x, _ = bench_train.load_data(args.subset, args.synthetic)
    vae = make_vae(args.config, args.threads)
    n_params = vae.count_params()  # the step buffer holds the gradients and a few words more
    calls = timed_allreduce_calls()
    epochs = []

    class Timer(vaecpp.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.c0 = time.perf_counter(), len(calls)

        def on_epoch_end(self, epoch, logs=None):
            step = [t for n, t in calls[self.c0:] if n > n_params]
            epochs.append({"s": time.perf_counter() - self.t0, "steps": len(step),
                           "allreduce_s": sum(step), "loss": logs["loss"]})

    batch = CONFIGS[args.config][2]
    vae.fit(x, batch_size=batch, epochs=args.epochs, verbose=0, callbacks=[Timer()],
            distributed=comm)
    result = {"epochs": epochs, "params": n_params, "rows": len(x)}
    if comm is not None:
        # The same buffer alone, the ranks in step (a barrier before each): the all-reduce
        # without the waiting for a slower rank and without the engine's call into Python.
        MPI = comm_world()[0]
        result["step_len"] = max(n for n, _ in calls)
        buf = np.zeros(result["step_len"], np.float32)
        result["bare_allreduce_s"] = allreduce_time(comm, MPI, buf, args.reps)
        result["ranks"] = comm.gather(epochs, root=0)
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def allreduce_time(comm, MPI, buf, reps):
    """Median seconds of an in-place sum Allreduce of buf, the ranks aligned by a barrier."""
    times = []
    for _ in range(reps + 2):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def worker_allreduce(args):
    """Allreduce times of float32 buffers of 8 B ... max_bytes, doubling."""
    MPI, comm = comm_world()
    library = MPI.Get_library_version().splitlines()[0].strip()
    out, nbytes = [], 8
    while nbytes <= args.max_bytes:
        buf = np.ones(nbytes // 4, np.float32)
        t = allreduce_time(comm, MPI, buf, args.reps)
        t = comm.allreduce(t, op=MPI.MAX)  # the slower rank's view
        out.append((nbytes, t))
        nbytes *= 4 if nbytes < 4096 else 2
    if comm.Get_rank() == 0:
        print("RESULT " + json.dumps({"times": out, "library": library}), flush=True)


def worker_compute(args):
    """Seconds per step of one process on batches of each size in --batches (the compute of a
    step on one of N machines sharing a global batch): the fastest of 3 epochs of --compute-steps
    steps, after a few warm-up steps."""
    x, _ = bench_train.load_data(None, args.synthetic)
    out = {}
    for b in args.batches:
        vae = make_vae(args.config, args.threads)
        rows = x[: b * args.compute_steps]
        vae.fit(rows[: b * 5], batch_size=b, epochs=1, verbose=0)  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            vae.fit(rows, batch_size=b, epochs=1, verbose=0)
            times.append(time.perf_counter() - t0)
        out[b] = min(times) / args.compute_steps
    print("RESULT " + json.dumps(out), flush=True)


# ---- driver ----------------------------------------------------------------------------------------
def find_mpiexec():
    """mpiexec beside this Python (a venv with the mpich wheel) or on PATH."""
    here = shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    return here or shutil.which("mpiexec")


def spawn(args, worker, ranks=1, threads=2, extra=()):
    """Runs a worker (under mpiexec when ranks > 1); returns its RESULT and the other work the
    machine did meanwhile (cores, on average)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--threads", str(threads),
           "--epochs", str(args.epochs), "--reps", str(args.reps),
           "--max-bytes", str(args.max_bytes), "--compute-steps", str(args.compute_steps), *extra]
    if args.subset:
        cmd += ["--subset", str(args.subset)]
    if args.synthetic:
        cmd.append("--synthetic")
    if ranks > 1:
        cmd = [args.mpiexec, "-n", str(ranks), *cmd, "--mpi"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    b0, c0, t0 = bench_train.busy_cpu_seconds(), bench_train.children_cpu_seconds(), time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    wall = time.time() - t0
    foreign = max(0.0, (bench_train.busy_cpu_seconds() - b0)
                  - (bench_train.children_cpu_seconds() - c0)) / wall
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):]), foreign


def fastest(epochs):
    """Index of the fastest epoch after the warm-up epoch (on a shared machine the slower ones
    were disturbed by other work)."""
    return min(range(1, len(epochs)), key=lambda i: epochs[i]["s"])


def train_row(single, multi):
    """One model's line: s/epoch both ways and the ranks' all-reduce per step, from each run's
    fastest timed epoch (rank 0's)."""
    e1 = single["epochs"][fastest(single["epochs"])]
    i = fastest(multi["epochs"])
    e2 = multi["epochs"][i]
    return {"s1": e1["s"], "s2": e2["s"], "step2": e2["s"] / e2["steps"],
            "allreduce": [eps[i]["allreduce_s"] / eps[i]["steps"] for eps in multi["ranks"]],
            "bare": multi["bare_allreduce_s"], "params": multi["params"],
            "step_bytes": 4 * multi["step_len"],
            "loss1": single["epochs"][-1]["loss"], "loss2": multi["epochs"][-1]["loss"]}


def fit_link(times):
    """(latency, bandwidth) of the 2-rank measurements under the ring model t = bytes / bw +
    2 latency (N = 2): latency from the smallest buffer, bandwidth from a least-squares line
    through the buffers of 1 MB and more; with fewer than three of those (or a line that does not
    rise), the largest buffer's bytes / time."""
    nbytes = np.array([b for b, _ in times], float)
    t = np.array([s for _, s in times], float)
    latency = t[0] / 2
    big = nbytes >= (1 << 20)
    slope = np.polyfit(nbytes[big], t[big], 1)[0] if big.sum() >= 3 else 0.0
    return latency, (1.0 / slope if slope > 0 else nbytes[-1] / t[-1])


def ring_time(nbytes, machines, bandwidth, latency):
    """Seconds of a ring all-reduce of nbytes over `machines` ranks (0 for one)."""
    n = machines
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency


def projection(cfg, compute, step_bytes, n_train, bandwidth, latency):
    """{N: (s/epoch, speed-up)} at a fixed global batch B (exactly the updates of one process),
    each machine computing its ceil(B / N) rows in compute[rows] s."""
    batch = CONFIGS[cfg][2]
    steps = math.ceil(n_train / batch)
    base = steps * compute[batch]
    out = {}
    for n in MACHINES:
        if n > batch:
            continue
        s = steps * (compute[math.ceil(batch / n)] + ring_time(step_bytes, n, bandwidth, latency))
        out[n] = (s, base / s)
    return out


def fmt_bytes(b):
    return f"{b >> 20} MB" if b >= 1 << 20 else f"{b >> 10} KB" if b >= 1 << 10 else f"{b} B"


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for ln in out.splitlines():
            if ln.startswith("Model name:"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1000 rows, 1 warm-up + 1 timed epoch, buffers up to 256 KB")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per training run including the warm-up epoch (default 3; --quick 2)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations")
    p.add_argument("--subset", type=int, default=None, help="use only the first N training rows")
    p.add_argument("--synthetic", action="store_true",
                   help="random data instead of Fashion-MNIST (the default where it is absent)")
    p.add_argument("--reps", type=int, default=None, help="Allreduce repetitions per buffer size")
    p.add_argument("--max-bytes", type=int, default=None,
                   help="largest Allreduce buffer (default 16 MB; --quick 256 KB)")
    p.add_argument("--compute-steps", type=int, default=None,
                   help="steps per timed epoch for each batch size of the projection "
                        "(default 50; --quick 5)")
    p.add_argument("--mpiexec", default=None, help="the mpiexec to launch ranks with")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per worker")
    p.add_argument("--output", default=os.path.join(HERE, "RESULTS_distributed.md"),
                   help="Markdown report")
    p.add_argument("--no-write", action="store_true", help="print the tables only")
    p.add_argument("--worker", choices=("train", "allreduce", "compute"), help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--batches", type=int, nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, (quick, full) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.worker:
        return {"train": worker_train, "allreduce": worker_allreduce,
                "compute": worker_compute}[args.worker](args)

    if args.epochs < 2:
        p.error("--epochs must be >= 2 (one warm-up epoch, then timed ones)")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            p.error(f"unknown configuration {c!r}; expected some of {', '.join(CONFIGS)}")
    args.mpiexec = args.mpiexec or find_mpiexec()
    if args.mpiexec is None:
        p.error("no mpiexec found: pip install 'vaecpp[mpi]' (mpi4py and the mpich wheel)")
    if not args.synthetic and not os.path.exists(DATA_FILE):
        print(f"{DATA_FILE} not found: synthetic data of the same shape", file=sys.stderr)
        args.synthetic = True

    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu_name(), "cores": os.cpu_count(), "load_before": os.getloadavg()}
    n_train = len(bench_train.load_data(args.subset, args.synthetic)[0])
    n_full = len(bench_train.load_data(None, args.synthetic)[0])
    foreign = []

    def run(*a, **k):
        r, f = spawn(args, *a, **k)
        foreign.append(f)
        return r

    print("all-reduce of 8 B ...", fmt_bytes(args.max_bytes), "on 2 ranks", file=sys.stderr)
    link = run("allreduce", ranks=2, threads=1)
    rows, compute = {}, {}
    for cfg in configs:
        print(f"{cfg}: 1 process x 2 threads, 2 ranks x 1 thread, steps on ceil(B/N) rows",
              file=sys.stderr, flush=True)
        single = run("train", threads=2, extra=("--config", cfg))
        multi = run("train", ranks=2, threads=1, extra=("--config", cfg))
        rows[cfg] = train_row(single, multi)
        batch = CONFIGS[cfg][2]
        sizes = sorted({math.ceil(batch / n) for n in MACHINES if n <= batch})
        got = run("compute", threads=2, extra=("--config", cfg, "--batches", *map(str, sizes)))
        compute[cfg] = {int(b): s for b, s in got.items()}
    info["load_after"] = os.getloadavg()
    info["foreign"] = max(foreign)
    bench_train.publish(report(info, args, configs, rows, link, compute, n_train, n_full), args)


def report(info, args, configs, rows, link, compute, n_train, n_full):
    latency, bandwidth = fit_link(link["times"])
    timed_epochs = args.epochs - 1
    data = "synthetic data of Fashion-MNIST's shape" if args.synthetic else "Fashion-MNIST"
    shared = (f"**The 2-core machine was shared with other work while this ran** (1-minute load "
              f"average {info['load_before'][0]:.1f} before, {info['load_after'][0]:.1f} after; "
              f"other processes used up to {info['foreign']:.1f} cores on average during one "
              f"measurement), so the timings are pessimistic and noisy: read the ratios and "
              f"shares, not the absolute seconds."
              if info["foreign"] > 0.5 else  # (the load average lags: it counts the last run's
              # work, and after the run the benchmark's own processes)
              f"The machine was otherwise idle: other processes used at most "
              f"{info['foreign']:.1f} cores on average during any measurement (1-minute load "
              f"average {info['load_before'][0]:.1f} before, {info['load_after'][0]:.1f} after, "
              f"the benchmark's own runs included).")
    out = ["# Data-parallel training (MPI): measured on one machine, projected to many", ""]
    out.append(f"Generated by `benchmarks/bench_distributed.py{' --quick' if args.quick else ''}` "
               f"on {info['date']}. **CPU: {info['cpu']}, {info['cores']} cores.** {shared}")
    out.append("")
    out.append(f"Data: {data}, {n_train} x 784 float32 rows; Bernoulli VAE, Adam(1e-3), "
               f"float32, models and batch sizes of `bench_train.py`. MPI: "
               f"{link['library']} through mpi4py, launched by `mpiexec -n 2`.")
    out.append("")
    out.append("## 1 process x 2 threads vs 2 ranks x 1 thread")
    out.append("")
    out.append(f"Same data, model seed and global batch both ways (the 2 ranks compute the updates "
               f"of the single process, to float rounding). Seconds per epoch: the fastest of "
               f"{timed_epochs} epoch(s) after a warm-up epoch (on a shared machine the slower "
               f"ones were disturbed); the all-reduce figures are from that same epoch. "
               f"All-reduce: the engine's one call per step (the gradients, loss sums and flag "
               f"word in one float32 buffer), timed by wrapping `Distributed.allreduce` in the "
               f"benchmark; it includes the wait for the slower rank, so the 'alone' column "
               f"gives `comm.Allreduce` of the same buffer with the ranks aligned by a barrier. "
               f"Share: all-reduce time over the 2-rank step time (both ranks shown).")
    out.append("")
    out.append("| model, batch | gradient floats (bytes) | 1x2 s/epoch | 2x1 s/epoch | 2x1 / 1x2 | "
               "2x1 ms/step | all-reduce ms/step, rank 0 / 1 | share of step | "
               "alone ms | train loss 1x2 / 2x1 |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cfg in configs:
        r = rows[cfg]
        ar = " / ".join(f"{1e3 * a:.3f}" for a in r["allreduce"])
        share = " / ".join(f"{100 * a / r['step2']:.0f}%" for a in r["allreduce"])
        out.append(f"| {arch(cfg)}, {CONFIGS[cfg][2]} | {r['params']:,} ({4e-6 * r['params']:.2f} MB) "
                   f"| {r['s1']:.3f} | {r['s2']:.3f} | {r['s2'] / r['s1']:.2f} | "
                   f"{1e3 * r['step2']:.3f} | {ar} | {share} | {1e3 * r['bare']:.3f} | "
                   f"{r['loss1']:.2f} / {r['loss2']:.2f} |")
    out.append("")
    out.append("## All-reduce between 2 ranks on this machine")
    out.append("")
    out.append(f"`comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)` of float32 buffers, median of "
               f"{args.reps} calls after 2 warm-up calls, each after a barrier (the slower rank's "
               f"median). The 2 ranks talk through MPI's intra-node channel (shared memory), "
               f"not a network: these are the best a network could do, not a network's numbers. "
               f"Under the ring model with N = 2, t = bytes / bandwidth + 2 latency: latency = "
               f"half the 8 B time, bandwidth = the inverse slope of a least-squares line through "
               f"the buffers of 1 MB and more (with fewer than three of them, or a line that does "
               f"not rise: the largest buffer's bytes / time).")
    out.append("")
    out.append("| buffer | time (us) | bytes / time (GB/s) |")
    out.append("|---:|---:|---:|")
    for b, t in link["times"]:
        out.append(f"| {fmt_bytes(b)} | {1e6 * t:.1f} | {b / t * 1e-9:.2f} |")
    out.append("")
    out.append(f"**Measured: latency {1e6 * latency:.1f} us, bandwidth {bandwidth * 1e-9:.2f} GB/s.**")
    out.append("")
    out.append("## Projection to N machines")
    out.append("")
    nets = [("measured here (2 ranks, shared memory)", bandwidth, latency), *NETWORKS]
    out.append(f"N machines like this one, one rank of 2 threads each, the same global batch B "
               f"(so exactly the updates of one process), {n_full} rows per epoch. Each step costs "
               f"the compute of ceil(B / N) rows (measured: 1 process x 2 threads, the fastest of 3 "
               f"epochs of {args.compute_steps} steps) plus a ring all-reduce of the "
               f"step buffer, 2 (N-1)/N x bytes / bandwidth + 2 (N-1) x latency, with no overlap "
               f"of communication and compute (the engine reduces after backward, before the "
               f"update). Assumed networks (not measured): "
               + "; ".join(f"{n}: {bw * 1e-9:g} GB/s, {1e6 * lat:g} us per message"
                           for n, bw, lat in NETWORKS)
               + ". The model ignores stragglers, contention and MPI's choice of algorithm "
                 "(small buffers use recursive doubling, log2 N latencies rather than 2 (N-1)), "
                 "and the compute of a small share of a batch is measured on this (shared) "
                 "machine. Each cell: seconds per epoch (speed-up over 1 machine).")
    out.append("")
    out.append("| model, batch | network | " + " | ".join(f"N = {n}" for n in MACHINES) + " |")
    out.append("|---|---|" + "---:|" * len(MACHINES))
    for cfg in configs:
        for name, bw, lat in nets:
            proj = projection(cfg, compute[cfg], rows[cfg]["step_bytes"], n_full, bw, lat)
            cells = [f"{proj[n][0]:.2f} ({proj[n][1]:.1f}x)" if n in proj else "-"
                     for n in MACHINES]
            out.append(f"| {arch(cfg)}, {CONFIGS[cfg][2]} | {name} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Compute per step measured for the projection (ms, 1 process x 2 threads):")
    out.append("")
    for cfg in configs:
        c = compute[cfg]
        out.append(f"- {arch(cfg)}: " + ", ".join(f"{b} rows {1e3 * c[b]:.3f}" for b in sorted(c)))
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
