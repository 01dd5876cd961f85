"""Training speed of the convolutional VAEs against the same models in PyTorch (CPU).

Two models, each timed per optimizer step (forward, backward, Adam update) as the median over
``--steps`` steps after ``--warmup`` steps, at each thread count of ``--threads``:

* ``keras_mnist``: ``vaecpp.keras_mnist_conv_vae()`` (the Keras example, 28x28x1, Bernoulli
  logits summed over pixels, latent 2) on the first ``--mnist-images`` (10,000) Fashion-MNIST
  training images, batch 128, cycling through the batches.
* ``celeba128``: ``vaecpp.celeba_conv_vae()`` (128x128x3, 5x5 convolutions + BatchNorm,
  latent 64, mean squared error + 1e-4 KL, about 54 million weights) on generated images in
  [-1, 1], batch ``--celeba-batch`` (16), cycling through ``--celeba-batches`` (4) batches.

Each setting runs ``--rounds`` times, alternating a vaecpp and a PyTorch process, so that the
load of a shared machine weighs on both alike; the medians are over all rounds' steps.

The PyTorch models have the same layers, shapes, padding (TensorFlow's "same" as explicit
padding / output_padding), BatchNorm momentum and epsilon, losses and Adam settings, but
PyTorch's own initialisation. PyTorch gets its input in its NCHW layout, converted once before
timing (not timed); vaecpp reads NHWC as given. Both run float32 on the CPU with the same number
of threads (``torch.set_num_threads``, ``VAE(threads=)``). vaecpp is timed through
``vae.train_on_batch`` (one optimizer step, the input checked as ``fit`` checks each streamed
batch).

    python benchmarks/bench_conv.py                   # both models, 1 and 2 threads
    python benchmarks/bench_conv.py --models keras_mnist --threads 2 --steps 30

Prints a Markdown table (vaecpp / PyTorch: below 1 means vaecpp is faster) and appends it, with
the machine's description, to ``benchmarks/RESULTS_conv.md`` unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

import vaecpp
from vaecpp import datasets

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- data ----------------------------------------------------------------------------------

def fashion_images(n):
    x, _ = datasets.fashion_mnist(split="train", normalize=True, download=False)
    return np.ascontiguousarray(x[:n].reshape(-1, 28, 28, 1), np.float32)


def generated_faces(n, side=128, seed=0):
    """Smooth random colour images in [-1, 1] (low-frequency noise), NHWC float32."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (n, side // 16, side // 16, 3))
    img = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)
    return np.clip(img + rng.normal(0, 0.05, img.shape), -1, 1).astype(np.float32)


# ---- PyTorch models ------------------------------------------------------------------------

def torch_models():
    import torch
    from torch import nn

    class VAE(nn.Module):
        def __init__(self, encoder, feat, latent, decoder):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder
            self.mu, self.lv = nn.Linear(feat, latent), nn.Linear(feat, latent)

        def losses(self, x, rec_fn):
            h = self.encoder(x)
            mu, lv = self.mu(h), self.lv(h)
            z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
            rec = rec_fn(self.decoder(z), x)
            kl = 0.5 * torch.sum(mu ** 2 + lv.exp() - 1 - lv, dim=1)
            return rec, kl

    def convt_same(cin, cout, k, s):
        # TF "same" for ConvTranspose: output n * s; crop max(k - s, 0) with the extra row at the
        # end, which torch expresses as padding p and output_padding op: n*s = (n-1)s - 2p + k + op
        total = max(k - s, 0)
        p = (total + 1) // 2
        op = s - k + 2 * p
        return nn.ConvTranspose2d(cin, cout, k, s, padding=p, output_padding=op)

    def keras_mnist():
        # padding=1 gives the same output sizes as TensorFlow's "same" (which pads 0 above, 1 below)
        enc = nn.Sequential(nn.Conv2d(1, 32, 3, 2, padding=1), nn.ReLU(),
                            nn.Conv2d(32, 64, 3, 2, padding=1), nn.ReLU(),
                            nn.Flatten(), nn.Linear(64 * 7 * 7, 16), nn.ReLU())
        dec = nn.Sequential(nn.Linear(2, 7 * 7 * 64), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                            convt_same(64, 64, 3, 2), nn.ReLU(), convt_same(64, 32, 3, 2), nn.ReLU(),
                            convt_same(32, 1, 3, 1))
        model = VAE(enc, 16, 2, dec)

        def rec(logits, x):
            return nn.functional.binary_cross_entropy_with_logits(
                logits, x, reduction="none").sum(dim=(1, 2, 3))
        return model, rec, 1.0, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-7)

    def celeba(filters=(64, 128, 256, 512, 1024), k=5):
        def bn(c):
            return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # Keras momentum 0.99
        layers, cin = [], 3
        for f in filters:
            layers += [nn.Conv2d(cin, f, k, 2, padding=k // 2), bn(f), nn.ReLU()]
            cin = f
        enc = nn.Sequential(*layers, nn.Flatten())
        top = filters[-1]
        layers = [nn.Linear(64, top), nn.Unflatten(1, (top, 1, 1)),
                  nn.ConvTranspose2d(top, top, 4, 1), bn(top), nn.ReLU()]
        cin = top
        for f in reversed(filters[:-1]):
            layers += [convt_same(cin, f, k, 2), bn(f), nn.ReLU()]
            cin = f
        layers += [convt_same(cin, 3, 3, 2), nn.Tanh()]
        model = VAE(enc, top * 16, 64, nn.Sequential(*layers))

        def rec(y, x):
            return ((y - x) ** 2).mean(dim=(1, 2, 3))
        return model, rec, 1e-4, dict(lr=5e-4, betas=(0.5, 0.999), eps=1e-7)

    return {"keras_mnist": keras_mnist, "celeba128": celeba}


def time_torch(name, batches, threads, warmup, steps):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, rec_fn, beta, adam = torch_models()[name]()
    opt = torch.optim.Adam(model.parameters(), **adam)
    data = [torch.from_numpy(np.ascontiguousarray(b.transpose(0, 3, 1, 2))) for b in batches]
    times = []
    for i in range(warmup + steps):
        x = data[i % len(data)]
        t = time.perf_counter()
        rec, kl = model.losses(x, rec_fn)
        loss = (rec + beta * kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times, float(loss)


# ---- vaecpp --------------------------------------------------------------------------------

def vaecpp_model(name, threads):
    if name == "keras_mnist":
        vae = vaecpp.keras_mnist_conv_vae(seed=0, threads=threads)
        vae.compile(vaecpp.optimizers.Adam(1e-3))
    else:
        vae = vaecpp.celeba_conv_vae(seed=0, threads=threads)
        vae.compile(vaecpp.architectures.celeba_optimizer())
    return vae


def time_vaecpp(name, batches, threads, warmup, steps):
    vae = vaecpp_model(name, threads)
    rows = [b.reshape(len(b), -1) for b in batches]
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        loss = vae.train_on_batch(rows[i % len(rows)])
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times, loss


# ---- main ----------------------------------------------------------------------------------

def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch
    info = vaecpp.build_info()
    return (f"{cpu}, {os.cpu_count()} logical CPUs; vaecpp {info['version']} (Eigen "
            f"{info['eigen']}, {'+'.join(info['simd'])}), PyTorch {torch.__version__}")


def worker(args):
    """One library, one model, one thread count, in this process: prints the step times."""
    batches = data(args.worker_model, args)
    warmup = args.warmup if args.worker_model == "keras_mnist" else min(args.warmup, 2)
    steps = args.steps if args.worker_model == "keras_mnist" else args.celeba_steps
    fn = time_vaecpp if args.worker_lib == "vaecpp" else time_torch
    times, loss = fn(args.worker_model, batches, args.worker_threads, warmup, steps)
    print(json.dumps({"times": times, "loss": loss}))


def data(name, args):
    if name == "keras_mnist":
        x = fashion_images(args.mnist_images)
        bs = 128
    else:
        bs = args.celeba_batch
        x = generated_faces(bs * args.celeba_batches)
    return [x[i:i + bs] for i in range(0, len(x) - bs + 1, bs)]


def run_worker(lib, name, threads, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker-lib", lib, "--worker-model", name,
           "--worker-threads", str(threads)] + [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in (
               "warmup", "steps", "celeba_steps", "mnist_images", "celeba_batch", "celeba_batches")]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["keras_mnist", "celeba128"],
                    choices=["keras_mnist", "celeba128"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating vaecpp / PyTorch runs per setting (a shared machine's load "
                         "then weighs on both alike)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run (keras_mnist)")
    ap.add_argument("--celeba-steps", type=int, default=4)
    ap.add_argument("--mnist-images", type=int, default=10000)
    ap.add_argument("--celeba-batch", type=int, default=16)
    ap.add_argument("--celeba-batches", type=int, default=4)
    ap.add_argument("--note", default="", help="appended to the results heading")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--worker-lib", help=argparse.SUPPRESS)
    ap.add_argument("--worker-model", help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker_lib:
        return worker(args)

    rows = []
    for name in args.models:
        if name == "keras_mnist":
            what = (f"Keras example conv VAE, 28x28x1, Fashion-MNIST ({args.mnist_images:,} "
                    f"images), batch 128")
        else:
            what = f"CelebA conv VAE, 128x128x3 generated images, batch {args.celeba_batch}"
        for t in args.threads:
            ours, theirs = [], []
            for _ in range(args.rounds):
                a = run_worker("vaecpp", name, t, args)
                b = run_worker("torch", name, t, args)
                ours += a["times"]
                theirs += b["times"]
            o, p = statistics.median(ours), statistics.median(theirs)
            rows.append((what, t, o, p, min(ours), min(theirs)))
            print(f"{name} threads={t}: vaecpp {o * 1e3:.1f} ms/step (best {min(ours) * 1e3:.1f}, "
                  f"loss {a['loss']:.4g}), PyTorch {p * 1e3:.1f} ms/step (best "
                  f"{min(theirs) * 1e3:.1f}, loss {b['loss']:.4g})", flush=True)

    table = ["| model | threads | vaecpp ms/step | PyTorch ms/step | vaecpp / PyTorch | "
             "best: vaecpp / PyTorch ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for what, t, o, p, bo, bp in rows:
        table.append(f"| {what} | {t} | {o * 1e3:.1f} | {p * 1e3:.1f} | {o / p:.2f} | "
                     f"{bo * 1e3:.1f} / {bp * 1e3:.1f} |")
    text = "\n".join(table)
    print()
    print(text)
    if not args.no_save:
        path = os.path.join(HERE, "RESULTS_conv.md")
        new = not os.path.exists(path)
        with open(path, "a") as f:
            if new:
                f.write("# Convolutional VAEs: vaecpp against PyTorch (CPU)\n\n"
                        "Written by `benchmarks/bench_conv.py`: median (and best) time per "
                        "training step (forward, backward, Adam) after warm-up, over alternating "
                        "vaecpp and PyTorch runs. Below 1 in the ratio column: vaecpp is "
                        "faster.\n")
            stamp = datetime.date.today().isoformat()
            f.write(f"\n## {stamp}{' - ' + args.note if args.note else ''}\n\n{machine()}; "
                    f"{args.rounds} rounds per setting\n\n{text}\n")
        print(f"\nappended to {path}")


if __name__ == "__main__":
    main()
