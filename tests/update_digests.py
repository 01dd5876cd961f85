"""Prints a SHA-256 digest of the weights and optimizer moments after a short training run of
each optimizer configuration (float32 and float64, 1 and 2 threads): run it on two builds (or
before and after a change) with the same thread counts, and the lines must be identical.

    python tests/update_digests.py > digests.txt
"""

import hashlib

import numpy as np

import vaecpp
from vaecpp import optimizers

OPTIMIZERS = {
    "adam": lambda: optimizers.Adam(learning_rate=3e-3),
    "adam-clipnorm-wd": lambda: optimizers.Adam(learning_rate=3e-3, clipnorm=0.05,
                                                weight_decay=0.05),
    "sgd-momentum": lambda: optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
    "rmsprop-clipvalue": lambda: optimizers.RMSprop(learning_rate=1e-3, clipvalue=0.01),
    "adagrad-clipnorm": lambda: optimizers.Adagrad(learning_rate=0.05, clipnorm=0.1),
}


def data(n=300, d=240, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(n, d)) < 0.3).astype(np.float64)


def train(opt, dtype, threads, dropout=0.2, hidden=(300, 19), epochs=2, batch_size=32):
    x = data()
    vae = vaecpp.VAE(x.shape[1], latent_dim=3, hidden=hidden, dropout=dropout, seed=5,
                     dtype=dtype, threads=threads)
    vae.compile(OPTIMIZERS[opt]())
    vae.fit(x.astype(dtype), epochs=epochs, batch_size=batch_size, verbose=0)
    return vae


def digest(vae):
    h = hashlib.sha256()
    for w in vae.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    state = vae.get_optimizer_state()
    for key in sorted(state):
        v = state[key]
        h.update(key.encode())
        h.update(np.ascontiguousarray(np.asarray(v)).tobytes() if not isinstance(v, list)
                 else b"".join(np.ascontiguousarray(a).tobytes() for a in v))
    return h.hexdigest()[:16]


if __name__ == "__main__":
    for opt in OPTIMIZERS:
        for dtype in ("float32", "float64"):
            for threads in (1, 2):
                print(opt, dtype, threads, digest(train(opt, dtype, threads)), flush=True)
