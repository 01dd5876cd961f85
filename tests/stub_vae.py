"""A stand-in for vaecpp.VAE in the plot and widget tests: ``from stub_vae import StubVAE``."""

import numpy as np


class StubVAE:
    """A duck-typed stand-in for ``vaecpp.VAE`` with a known, deterministic decoder.

    ``decode(z)`` is ``sigmoid(z @ W)`` reshaped to ``input_shape`` (or
    ``tanh`` when ``tanh=True``, for [-1, 1] outputs); ``encode(x)`` is a
    fixed linear projection.  Every ``decode`` input is recorded.
    """

    def __init__(self, input_shape=(6, 5), latent_dim=2, seed=0, tanh=False):
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        size = int(np.prod(self.input_shape))
        rng = np.random.default_rng(seed)
        self.w_decode = rng.standard_normal((latent_dim, size))
        self.w_encode = rng.standard_normal((size, latent_dim)) / np.sqrt(size)
        self.tanh = tanh
        self.decoded = []

    def decode(self, z):
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        self.decoded.append(z.copy())
        h = z @ self.w_decode
        out = np.tanh(h) if self.tanh else 1.0 / (1.0 + np.exp(-h))
        return out.reshape((len(z),) + self.input_shape)

    def encode(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x.reshape(len(x), -1) @ self.w_encode
