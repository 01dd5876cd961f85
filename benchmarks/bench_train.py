"""vaecpp vs PyTorch on the CPU, side by side: training speed, GEMM efficiency, memory, losses and
inference speed of the same Bernoulli VAE on Fashion-MNIST.

    python benchmarks/bench_train.py            # full run (~60 min on 2 cores), writes RESULTS.md
    python benchmarks/bench_train.py --quick    # smoke run: 1 timed epoch on 6000 rows
    python benchmarks/bench_train.py --threads 2 --configs wide-deep --epochs 5

Each (framework, configuration, thread count) trains in its own subprocess so that the peak
resident memory of one framework is not mixed with the other's. PyTorch runs twice: as users run it
(IEEE denormals) and with `torch.set_flush_denormal(True)`, which is what vaecpp does inside its
calls. A breakdown of vaecpp's training step (products, activations, likelihood, optimizer, other)
comes from timing the engine's own kernels on the step's shapes (`_testing.step_profile`). Both sides see the same data,
model, initialisation scheme (Glorot uniform, zero biases), batch size, Adam(1e-3), loss (BCE with
logits summed over pixels + analytic KL, mean over samples) and thread count. PyTorch is only a
benchmark dependency here, never one of vaecpp.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import resource
import statistics
import struct
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = "/usr/share/datasets/fashion-mnist"

# name -> (encoder hidden widths, latent dim, batch size); decoders mirror the encoder.
CONFIGS = {
    "seed-intuition": ((512,), 2, 50),
    "seed-flexible": ((200,), 2, 100),
    "pytorch-example": ((400,), 20, 128),
    "wide-deep": ((1024, 1024), 64, 256),
}
D = 784


# ---- data ----------------------------------------------------------------------------------------
def read_idx(path):
    """Reads an IDX file (optionally gzipped): magic 2051 = uint8 images, 2049 = uint8 labels."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic, n = struct.unpack(">II", f.read(8))
        if magic == 2051:
            rows, cols = struct.unpack(">II", f.read(8))
            shape = (n, rows, cols)
        elif magic == 2049:
            shape = (n,)
        else:
            raise ValueError(f"{path}: not an IDX image/label file (magic {magic})")
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {np.prod(shape)} values, found {data.size}")
    return data.reshape(shape)


def load_data(subset=None, synthetic=False):
    """(train, test) as float32 (n, 784) arrays in [0, 1]; `subset` keeps the first rows."""
    if synthetic:  # for smoke tests on machines without the data set
        rng = np.random.default_rng(0)
        n_train, n_test = subset or 60000, max(1, (subset or 60000) // 6)
        return (rng.random((n_train, D), dtype=np.float32),
                rng.random((n_test, D), dtype=np.float32))
    out = []
    for split in ("train", "t10k"):
        x = read_idx(os.path.join(DATA_DIR, f"{split}-images-idx3-ubyte.gz"))
        x = x.reshape(len(x), -1)
        if subset:
            x = x[: subset if split == "train" else max(1, subset // 6)]
        out.append((x.astype(np.float32) / np.float32(255.0)))
    return tuple(out)


# ---- cost model ------------------------------------------------------------------------------------
def layer_dims(hidden, latent):
    """(in, out) of every Dense GEMM: encoder, the two heads (counted as one in x 2L GEMM), decoder."""
    widths = [D, *hidden]
    dims = list(zip(widths[:-1], widths[1:]))
    dims.append((hidden[-1], 2 * latent))
    dec = [latent, *reversed(hidden), D]
    dims += list(zip(dec[:-1], dec[1:]))
    return dims


def train_flops_per_sample(hidden, latent):
    """Multiply-adds x 2 of the forward and backward GEMMs for one sample: 2 in out forward,
    2 in out for dW and 2 in out for dinp, except the first layer, whose dinp is not needed."""
    dims = layer_dims(hidden, latent)
    total = sum(3 * 2 * i * o for i, o in dims)
    return total - 2 * dims[0][0] * dims[0][1]


# ---- the PyTorch model -------------------------------------------------------------------------------
def torch_model(hidden, latent):
    import torch
    from torch import nn

    class TorchVAE(nn.Module):
        def __init__(self):
            super().__init__()
            enc, w = [], D
            for h in hidden:
                enc += [nn.Linear(w, h), nn.ReLU()]
                w = h
            self.encoder = nn.Sequential(*enc)
            self.z_mean = nn.Linear(w, latent)
            self.z_log_var = nn.Linear(w, latent)
            dec, w = [], latent
            for h in reversed(hidden):
                dec += [nn.Linear(w, h), nn.ReLU()]
                w = h
            dec.append(nn.Linear(w, D))
            self.decoder = nn.Sequential(*dec)
            for m in self.modules():
                if isinstance(m, nn.Linear):  # Keras's defaults, as vaecpp
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

        def encode(self, x):
            h = self.encoder(x)
            return self.z_mean(h), self.z_log_var(h)

        def forward(self, x):
            mu, lv = self.encode(x)
            z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
            return self.decoder(z), mu, lv

    return TorchVAE()


def torch_loss(model, x):
    """Per-sample sums of BCE-with-logits and KL(q || N(0, I)); returns (loss, rec, kl) tensors."""
    import torch
    import torch.nn.functional as F

    logits, mu, lv = model(x)
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + lv - mu * mu - torch.exp(lv))
    return (rec + kl) / x.shape[0], rec, kl


# ---- workers (one subprocess each) ---------------------------------------------------------------
def peak_rss_mib():
    """Peak resident set size of this process (VmHWM, falling back to ru_maxrss), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_median(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_vaecpp(args, x, x_test):
    import vaecpp
    import vaecpp._testing  # the step profile (a test and benchmark entry point)

    hidden, latent, batch = CONFIGS[args.config]
    vae = vaecpp.VAE(D, latent_dim=latent, hidden=hidden, likelihood="bernoulli", seed=0,
                     threads=args.threads, dtype="float32")
    vae.compile(optimizer=vaecpp.optimizers.Adam(learning_rate=1e-3))

    class Timer(vaecpp.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    times = []
    h = vae.fit(x, batch_size=batch, epochs=args.epochs, verbose=0, shuffle=True,
                callbacks=[Timer()])
    train_loss = h.history["loss"][-1]
    test_loss = vae.evaluate(x_test, batch_size=1000)
    profile = vaecpp._testing.step_profile(batch, D, list(hidden), latent, args.threads,
                                           args.profile_steps)
    return inference(args, vae, x_test, dict(epoch_times=times, train_loss=train_loss,
                                             test_loss=test_loss, profile=profile))


def inference(args, vae, x_test, result):
    n_inf = min(10000, len(x_test))
    xi = np.ascontiguousarray(x_test[:n_inf])
    zi = np.ascontiguousarray(vae.encode(xi))
    z1 = zi[:1].copy()
    vae.decode(z1)
    return dict(
        result,
        encode_s=timed_median(lambda: vae.encode(xi), args.inference_reps) / n_inf,
        decode_s=timed_median(lambda: vae.decode(zi), args.inference_reps) / n_inf,
        decode1_s=timed_median(lambda: vae.decode(z1), args.latency_calls))


def run_torch(args, x, x_test):
    import torch

    torch.set_num_threads(args.threads)
    if args.worker == "torch-ftz":  # FTZ/DAZ on this (the only compute) thread and torch's pool
        if not torch.set_flush_denormal(True):
            raise RuntimeError("torch.set_flush_denormal(True) is not supported on this CPU")
    torch.manual_seed(0)
    hidden, latent, batch = CONFIGS[args.config]
    model = torch_model(hidden, latent)
    # Keras's epsilon (vaecpp follows Keras). fused=True is PyTorch's fastest CPU Adam here (about
    # 10% faster per epoch than its default multi-tensor update on the 784-512-2 model).
    try:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, fused=True)
    except (RuntimeError, TypeError):  # older PyTorch: no fused CPU Adam
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    X = torch.from_numpy(x)
    n = X.shape[0]
    times = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        perm = torch.randperm(n)
        for k in range(0, n, batch):
            xb = X[perm[k:k + batch]]
            loss, _, _ = torch_loss(model, xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
        times.append(time.perf_counter() - t0)
        train_loss = total / n
    model.eval()
    with torch.no_grad():
        Xt = torch.from_numpy(x_test)
        test_loss = sum(torch_loss(model, Xt[k:k + 1000])[0].item() * len(Xt[k:k + 1000])
                        for k in range(0, len(Xt), 1000)) / len(Xt)

        n_inf = min(10000, len(x_test))
        xi = np.ascontiguousarray(x_test[:n_inf])
        zi = model.encode(torch.from_numpy(xi))[0].numpy()
        z1 = zi[:1].copy()

        # numpy in, numpy out, as vaecpp's API
        def encode():
            return model.encode(torch.from_numpy(xi))[0].numpy()

        def decode(z):
            return torch.sigmoid(model.decoder(torch.from_numpy(z))).numpy()

        decode(z1)
        return dict(
            epoch_times=times, train_loss=train_loss, test_loss=test_loss,
            encode_s=timed_median(encode, args.inference_reps) / n_inf,
            decode_s=timed_median(lambda: decode(zi), args.inference_reps) / n_inf,
            decode1_s=timed_median(lambda: decode(z1), args.latency_calls))


def worker(args):
    x, x_test = load_data(args.subset, args.synthetic)
    result = (run_vaecpp if args.worker == "vaecpp" else run_torch)(args, x, x_test)
    result["peak_rss_mib"] = peak_rss_mib()
    print("RESULT " + json.dumps(result))


def cpu_idle(seconds):
    """Fraction of the machine's CPU time that was idle over the next `seconds` (Linux)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    try:
        i0, t0 = snap()
        time.sleep(seconds)
        i1, t1 = snap()
    except (OSError, ValueError, IndexError):
        return 1.0
    return (i1 - i0) / max(1, t1 - t0)


def wait_quiet(max_wait, threshold=0.9):
    """Waits (up to max_wait s) until the cores have been >= 90% idle for 2 s: the machine may
    be shared, and a measurement taken while other work runs says little. Returns the idle
    fraction seen last."""
    start = time.time()
    while True:
        idle = cpu_idle(2.0)
        if idle >= threshold or time.time() - start >= max_wait:
            return idle


def busy_cpu_seconds():
    """CPU seconds the whole machine has spent busy since boot (all cores; steal included)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def epoch_time(r):
    """Seconds per epoch of a worker's result: the median of the epochs after the warm-up."""
    return statistics.median(r["epoch_times"][1:])


def best_of(a, b):
    """Two rounds of the same measurement: each timing from the faster round (the slower one
    was disturbed by something else on the machine), memory from the larger, losses from the
    first (the runs are deterministic)."""
    out = dict(a if epoch_time(a) <= epoch_time(b) else b)
    for k in ("encode_s", "decode_s", "decode1_s"):
        out[k] = min(a[k], b[k])
    out["peak_rss_mib"] = max(a["peak_rss_mib"], b["peak_rss_mib"])
    out["foreign"] = min(a["foreign"], b["foreign"])
    for k in ("train_loss", "test_loss"):
        out[k] = a[k]
    return out


def spawn_checked(framework, config, threads, args):
    """Runs one worker; on a shared machine, runs it again (up to --retries times) when other
    work took more than a tenth of a core on average while it ran, and keeps the least disturbed
    attempt. The result records that foreign load ("foreign", in cores)."""
    best = None
    for attempt in range(1 + args.retries):
        idle = wait_quiet(args.max_wait) if args.max_wait > 0 else 1.0
        print(f"  {framework:9s} {config:16s} {threads} thread(s) (idle before: {100 * idle:.0f}%"
              f"{', retry ' + str(attempt) if attempt else ''}) ...", file=sys.stderr, flush=True)
        b0, c0, t0 = busy_cpu_seconds(), children_cpu_seconds(), time.time()
        r = spawn(framework, config, threads, args)
        wall = time.time() - t0
        r["foreign"] = max(0.0, (busy_cpu_seconds() - b0) - (children_cpu_seconds() - c0)) / wall
        print(f"    other work while it ran: {r['foreign']:.2f} cores", file=sys.stderr, flush=True)
        if best is None or r["foreign"] < best["foreign"]:
            best = r
        if best["foreign"] <= 0.1:
            break
    return best


def spawn(framework, config, threads, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--config", config,
           "--threads", str(threads), "--epochs", str(args.epochs),
           "--inference-reps", str(args.inference_reps), "--latency-calls", str(args.latency_calls),
           "--profile-steps", str(args.profile_steps)]
    if args.subset:
        cmd += ["--subset", str(args.subset)]
    if args.synthetic:
        cmd.append("--synthetic")
    # NumPy's own BLAS threads stay idle (neither side uses them while timed).
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{framework} worker failed ({config}, {threads} threads):\n"
                           f"{proc.stdout}\n{proc.stderr}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


# ---- reference GEMM rates ----------------------------------------------------------------------
def gemm_rates(threads, n):
    """GFLOP/s of a large float32 (n, n) @ (n, n) product through vaecpp's own product (the one
    its dense layers use), through Eigen, through torch.matmul and through NumPy's BLAS (OpenBLAS
    in NumPy's wheels), each with `threads` threads: best of five."""
    from threadpoolctl import threadpool_limits
    from vaecpp import _testing
    import torch

    engine = _testing.gemm_bench(n, 5, threads, "engine")
    eigen = _testing.gemm_bench(n, 5, threads, "eigen")
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    best = min(timed_median(lambda: a @ b, 1) for _ in range(5))
    an, bn = a.numpy(), b.numpy()
    with threadpool_limits(limits=threads, user_api="blas"):
        an @ bn
        best_np = min(timed_median(lambda: an @ bn, 1) for _ in range(5))
    flops = 2.0 * n ** 3 * 1e-9
    return {"engine": engine, "eigen": eigen, "torch": flops / best, "numpy": flops / best_np}


# ---- report ----------------------------------------------------------------------------------------
def machine_info():
    import torch
    import vaecpp
    from vaecpp import _core

    cpu, flags = cpu_model_and_flags()
    info = _core.build_info()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cpu_flags": ", ".join(flags) or "unknown",
        "caches": cache_sizes(),
        "cores": os.cpu_count(),
        "vaecpp": getattr(vaecpp, "__version__", "?"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "compiler": f"GCC {info['compiler']}" if info["compiler"][:1].isdigit() else info["compiler"],
        "eigen": info["eigen"],
        "simd": ", ".join(info["simd"]),
        "gemm_kernels": info.get("gemm_kernels", "?"),
    }


# The CPU flags that say which vector instructions a kernel can use (Linux names).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
              "asimd", "sve", "sve2")


def cpu_model_and_flags():
    """The CPU's model name and its SIMD flags from /proc/cpuinfo (Linux; elsewhere the platform's
    processor name and no flags)."""
    cpu, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                key, _, value = ln.partition(":")
                key = key.strip()
                if key == "model name" and cpu == (platform.processor() or "unknown CPU"):
                    cpu = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return cpu, [f for f in SIMD_FLAGS if f in flags]


def cache_sizes():
    """'L1d 48K, L2 2048K, L3 ...' of cpu0 from sysfs, or '' where it cannot be read."""
    out = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in sorted(os.listdir(base)):
            try:
                with open(os.path.join(base, idx, "level")) as f:
                    level = f.read().strip()
                with open(os.path.join(base, idx, "type")) as f:
                    kind = f.read().strip()
                with open(os.path.join(base, idx, "size")) as f:
                    size = f.read().strip()
            except OSError:
                continue
            if kind != "Instruction":
                out.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
    except OSError:
        pass
    return ", ".join(out)


def machine_rate(g):
    return max(g.values())


def fmt_time(s):
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


# Options left unset: (value with --quick, value otherwise).
DEFAULTS = {"epochs": (2, 4), "rounds": (1, 3), "max_wait": (0.0, 180.0), "retries": (0, 2),
            "inference_reps": (3, 7), "latency_calls": (100, 1000), "profile_steps": (5, 50)}
FRAMEWORKS = ("vaecpp", "torch", "torch-ftz")  # torch-ftz: PyTorch with torch.set_flush_denormal(True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 6000 training rows, 1 warm-up + 1 timed epoch, small GEMM")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per run including the warm-up epoch (default 4; --quick 2)")
    p.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default 1 2)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations")
    p.add_argument("--subset", type=int, default=None, help="use only the first N training rows")
    p.add_argument("--synthetic", action="store_true", help="random data instead of Fashion-MNIST")
    p.add_argument("--gemm-n", type=int, default=None, help="size of the reference GEMM (2048)")
    p.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"), help="Markdown report")
    p.add_argument("--no-write", action="store_true", help="print the tables only")
    p.add_argument("--rounds", type=int, default=None,
                   help="measure everything this many times, keeping each framework's fastest "
                        "round (default 3; --quick 1)")
    p.add_argument("--retries", type=int, default=None,
                   help="runs again a measurement that other work disturbed (default 2; --quick 0)")
    p.add_argument("--max-wait", type=float, default=None,
                   help="before each run wait up to this many seconds for the cores to be idle "
                        "(default 180; --quick 0)")
    p.add_argument("--inference-reps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--latency-calls", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--profile-steps", type=int, default=None,
                   help="training steps timed for the breakdown of a vaecpp step (default 50; "
                        "--quick 5)")
    p.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    for name, (quick, full) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.worker:
        args.threads = args.threads[0]
        return worker(args)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (one warm-up epoch, then timed ones)")
    if args.quick and args.subset is None:
        args.subset = 6000
    threads = args.threads or [1, 2]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            p.error(f"unknown configuration {c!r}; expected some of {', '.join(CONFIGS)}")
    gemm_n = args.gemm_n or (512 if args.quick else 2048)

    info = machine_info()
    print(f"CPU: {info['cpu']}, {info['cores']} cores; SIMD flags: {info['cpu_flags']}; "
          f"caches: {info['caches'] or 'unknown'}; vaecpp's product kernels: {info['gemm_kernels']}",
          flush=True)
    info["load_before"] = os.getloadavg()
    n_train = len(load_data(args.subset, args.synthetic)[0])
    def measure_gemm():
        if args.max_wait > 0:
            wait_quiet(args.max_wait)
        return {t: gemm_rates(t, gemm_n) for t in threads}

    gemm = measure_gemm()

    rows = {}
    for rnd in range(args.rounds):
        if args.rounds > 1:
            print(f"round {rnd + 1} of {args.rounds}", file=sys.stderr, flush=True)
        for cfg in configs:
            for t in threads:
                for fw in FRAMEWORKS:
                    r = spawn_checked(fw, cfg, t, args)
                    rows[cfg, t, fw] = r if rnd == 0 else best_of(rows[cfg, t, fw], r)

    # The machine's rate is what it can do: the better of a measurement before and after.
    again = measure_gemm()
    gemm = {t: {k: max(gemm[t][k], again[t][k]) for k in gemm[t]} for t in threads}
    info["load_after"] = os.getloadavg()
    publish(report(info, args, threads, configs, gemm, gemm_n, rows, n_train), args)


def publish(text, args):
    """Prints a benchmark's report and, unless --no-write, writes it to --output."""
    print(text)
    if not args.no_write:
        with open(args.output, "w") as f:
            f.write(text)
        print(f"wrote {args.output}", file=sys.stderr)


BREAKDOWN = ("products", "activations", "likelihood", "optimizer")


def breakdown_table(args, threads, configs, rows, n_train):
    """Where a vaecpp training step goes: the measured step time (epoch / batches) split by
    _testing.step_profile's timings of the engine's kernels on the same shapes; 'other' is the rest."""
    out = ["## Where a vaecpp training step goes", ""]
    out.append(
        "Measured, not modelled: `vaecpp._testing.step_profile` (cpp/bindings/step_profile.hpp) runs the "
        "engine's own kernels on the shapes of one training step of the configuration, with the "
        f"same thread count, and times each kind of work separately over {args.profile_steps} "
        "steps after a warm-up: products (every Dense layer's forward, dW and dX products, bias "
        "and db sums included), activations (the ReLU forward and backward passes, run here as "
        "separate passes where the engine fuses them into the products' output: an upper bound), "
        "likelihood (the fused Bernoulli loss and gradient) and optimizer (the Adam update of all "
        "parameters as the engine runs it: each hidden and output layer's inside its weight-"
        "gradient product, timed as that fused backward's extra time over the same backward "
        "without the step, the two run on alternate steps; the latent heads' as separate passes). 'step' is the measured training time per batch (seconds per epoch / "
        "batches per epoch); 'other' is step minus those four: batch gathering, noise, "
        "reparameterisation, KL, the denormal scope, callbacks. The profile runs on random data, "
        "so where the real run's Adam moments decay into denormals (IEEE mode only) it does not "
        "show that cost.")
    out.append("")
    out.append("| config | threads | step ms | " + " | ".join(BREAKDOWN) + " | other |")
    out.append("|---|---:|---:|" + "---:|" * (len(BREAKDOWN) + 1))
    for cfg in configs:
        hidden, latent, batch = CONFIGS[cfg]
        arch = "-".join(map(str, (D, *hidden, latent)))
        steps = -(-n_train // batch)
        for t in threads:
            v = rows[cfg, t, "vaecpp"]
            step = epoch_time(v) / steps
            prof = v["profile"]
            parts = [prof[k] for k in BREAKDOWN] + [step - sum(prof[k] for k in BREAKDOWN)]
            cells = " | ".join(f"{1e3 * p:.3f} ({100 * p / step:.0f}%)" for p in parts)
            out.append(f"| {cfg} {arch} | {t} | {1e3 * step:.3f} | {cells} |")
    out.append("")
    return out


def report(info, args, threads, configs, gemm, gemm_n, rows, n_train):
    timed = args.epochs - 1
    out = ["# vaecpp vs PyTorch on the CPU", ""]
    out.append(f"Generated by `benchmarks/bench_train.py{' --quick' if args.quick else ''}` on "
               f"{info['date']}. **Machine: {info['cpu']}, {info['cores']} cores** (a small "
               f"shared VM: absolute numbers are those of a 2-core machine; ratios are what "
               f"carry over).")
    out.append("")
    out.append(f"1-minute load average before / after the run: {info['load_before'][0]:.2f} / "
               f"{info['load_after'][0]:.2f}. Each measurement waited (up to "
               f"{args.max_wait:.0f} s) for the cores to be at least 90% idle, and was run again "
               f"(up to {args.retries} times, keeping the least disturbed run) when other work "
               f"used more than a tenth of a core while it ran; a row marked (busy) is one where "
               f"that never happened, and its timings are pessimistic. The machine's GEMM rate is "
               f"the better of a measurement before and one after the runs.")
    out.append("")
    out.append(f"CPU SIMD flags: {info['cpu_flags']}. Caches (per core unless shared): "
               f"{info['caches'] or 'unknown'}.")
    out.append("")
    out.append(f"vaecpp {info['vaecpp']} ({info['compiler']}, Eigen {info['eigen']}, "
               f"SIMD: {info['simd']}; product kernels: {info['gemm_kernels']}), PyTorch {info['torch']}, NumPy {info['numpy']}, "
               f"Python {info['python']}.")
    out.append("")
    out.append(f"Data: Fashion-MNIST{' (synthetic stand-in)' if args.synthetic else ''}, "
               f"{n_train} x 784 float32 in [0, 1]; test loss on the "
               f"{'first ' + str(max(1, n_train // 6)) + ' rows of the ' if args.subset else ''}"
               f"test set. Both frameworks: same model, Glorot-uniform init, Adam(1e-3), Bernoulli "
               f"likelihood (BCE with logits summed over pixels + analytic KL, mean over samples), "
               f"same batch size and thread count, each in its own process. vaecpp through its "
               f"public API (`VAE.fit`, one call for all epochs, timed per epoch by a callback); "
               f"PyTorch in eager mode with `Adam(fused=True)` and minibatches gathered by "
               f"`X[randperm(n)[k:k+B]]` (no DataLoader overhead). PyTorch runs twice: as users run "
               f"it (IEEE denormals, the default) and, as 'PyTorch FTZ', after "
               f"`torch.set_flush_denormal(True)`; vaecpp flushes denormals inside its calls by "
               f"default (`vaecpp.set_flush_denormal`).")
    out.append("")
    out.append(f"## Machine GEMM rate (float32, {gemm_n}^3)")
    out.append("")
    out.append("The machine's large-GEMM rate at each thread count is the fastest of four "
               "implementations of one large product; '% GEMM' below divides by it. NumPy's is "
               "its BLAS (OpenBLAS in its wheels), its threads pinned with threadpoolctl.")
    out.append("")
    out.append("| threads | vaecpp's product GFLOP/s | Eigen GFLOP/s | torch.matmul GFLOP/s | "
               "NumPy GFLOP/s | machine rate | vaecpp % of best library |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|")
    for t in threads:
        g = gemm[t]
        best_lib = max(v for k, v in g.items() if k != "engine")
        out.append(f"| {t} | {g['engine']:.1f} | {g['eigen']:.1f} | {g['torch']:.1f} | "
                   f"{g['numpy']:.1f} | {machine_rate(g):.1f} | {100 * g['engine'] / best_lib:.0f}% |")
    out.append("")
    out.append("## Training")
    out.append("")
    rounds = (f" Everything ran {args.rounds} times, round after round; each framework's "
              f"timings are from its faster round (a slower one was disturbed: a 2-core VM "
              f"shares its host, and not all of that shows in its own CPU counters)."
              if args.rounds > 1 else "")
    out.append(f"Seconds per epoch: median of {timed} epoch(s) after one warm-up epoch.{rounds} GFLOP/s "
               f"counts the forward and backward GEMMs (2 B in out each, the first layer's unused "
               f"input gradient left out); '% GEMM' is that rate over the machine's large-GEMM "
               f"rate at the same thread count. Losses are per-sample means after {args.epochs} "
               f"epochs (train: mean over the last epoch; test: evaluated once).")
    out.append("")
    out.append("| config | batch | threads | vaecpp s/epoch | PyTorch s/epoch | speed-up | "
               "PyTorch FTZ s/epoch | speed-up vs FTZ | "
               "vaecpp GFLOP/s | % GEMM | PyTorch GFLOP/s | peak RSS MiB vaecpp / PyTorch | "
               "train loss vaecpp / PyTorch / FTZ | test loss vaecpp / PyTorch / FTZ |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cfg in configs:
        hidden, latent, batch = CONFIGS[cfg]
        arch = "-".join(map(str, (D, *hidden, latent)))
        flops = train_flops_per_sample(hidden, latent) * n_train
        for t in threads:
            v, r, f = rows[cfg, t, "vaecpp"], rows[cfg, t, "torch"], rows[cfg, t, "torch-ftz"]
            tv, tr, tf = epoch_time(v), epoch_time(r), epoch_time(f)
            gv, gr = flops / tv * 1e-9, flops / tr * 1e-9
            busy = "" if max(v["foreign"], r["foreign"], f["foreign"]) <= 0.1 else " (busy)"
            out.append(
                f"| {cfg} {arch} | {batch} | {t}{busy} | {tv:.3f} | {tr:.3f} | **{tr / tv:.2f}x** | "
                f"{tf:.3f} | **{tf / tv:.2f}x** | "
                f"{gv:.1f} | {100 * gv / machine_rate(gemm[t]):.0f}% | {gr:.1f} | "
                f"{v['peak_rss_mib']:.0f} / {r['peak_rss_mib']:.0f} | "
                f"{v['train_loss']:.2f} / {r['train_loss']:.2f} / {f['train_loss']:.2f} | "
                f"{v['test_loss']:.2f} / {r['test_loss']:.2f} / {f['test_loss']:.2f} |")
    out.append("")
    out += breakdown_table(args, threads, configs, rows, n_train)
    out.append("")
    out.append("## Inference")
    out.append("")
    out.append("Throughput of `encode` (posterior means) and `decode` (Bernoulli means) on "
               f"{min(10000, max(1, n_train // 6))} rows, NumPy in and out (PyTorch under "
               "`torch.no_grad()`, `from_numpy`/`.numpy()` included); latency: median of "
               f"{args.latency_calls} one-point `decode` calls from Python (vaecpp: the public "
               "`VAE.decode`, argument checks included).")
    out.append("")
    out.append("| config | threads | encode rows/s vaecpp | PyTorch | speed-up | "
               "decode rows/s vaecpp | PyTorch | speed-up | 1-point decode vaecpp | PyTorch | speed-up |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cfg in configs:
        hidden, latent, _ = CONFIGS[cfg]
        arch = "-".join(map(str, (D, *hidden, latent)))
        for t in threads:
            v, r = rows[cfg, t, "vaecpp"], rows[cfg, t, "torch"]
            out.append(
                f"| {cfg} {arch} | {t} | {1 / v['encode_s']:,.0f} | {1 / r['encode_s']:,.0f} | "
                f"**{r['encode_s'] / v['encode_s']:.1f}x** | {1 / v['decode_s']:,.0f} | "
                f"{1 / r['decode_s']:,.0f} | **{r['decode_s'] / v['decode_s']:.1f}x** | "
                f"{fmt_time(v['decode1_s'])} | {fmt_time(r['decode1_s'])} | "
                f"**{r['decode1_s'] / v['decode1_s']:.1f}x** |")
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
