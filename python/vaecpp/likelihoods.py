"""Likelihoods p(x | decoder output): user-defined ones and sampling from the built-in ones.

A custom likelihood is a subclass of :class:`Likelihood` written with NumPy. The engine calls it
once per batch (from C++, with the GIL taken) and does everything else itself::

    from scipy.special import expit

    class MyBernoulli(vaecpp.Likelihood):
        params_per_dim = 1                      # decoder outputs per data dimension

        def nll(self, x, logits):               # (n, D), (n, P*D) -> (n,)
            return np.sum(np.logaddexp(0, logits) - x * logits, axis=1)

        def grad(self, x, logits):              # d nll / d params, (n, P*D)
            return expit(logits) - x

        def mean(self, logits):                 # decoded mean, (n, D)
            return expit(logits)

    vae = vaecpp.VAE(784, likelihood=MyBernoulli())

The decoder's outputs for one sample are laid out as ``params_per_dim`` blocks of D values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Likelihood", "sample_builtin"]


class Likelihood:
    """Base class of user-defined likelihoods (see the module docstring)."""

    params_per_dim = 1

    def nll(self, x, params):
        """Negative log-likelihood of each sample, summed over its dimensions: shape (n,)."""
        raise NotImplementedError

    def grad(self, x, params):
        """Gradient of ``nll`` with respect to ``params``: shape (n, params_per_dim * D)."""
        raise NotImplementedError

    def mean(self, params):
        """The distribution's mean (what ``decode`` returns): shape (n, D)."""
        raise NotImplementedError

    def sample(self, params, rng):
        """Draws x ~ p(x | params) with the NumPy Generator ``rng`` (optional)."""
        raise NotImplementedError(f"{type(self).__name__} does not define sample(params, rng)")

    def check(self, x):
        """Raises ValueError for data outside the support (optional)."""

    def get_config(self):
        """Constructor arguments, saved with the model: a dict of JSON values (None, bools,
        strings, integers, finite floats, and lists and string-keyed dicts of them, nested;
        tuples come back as lists). ``VAE.save`` refuses anything else with a ValueError before
        writing, so a saved model always loads (``load_model(path, custom_objects=...)`` passes
        them to the constructor as keyword arguments)."""
        return {}


def _sigmoid(v):
    return 0.5 * (1.0 + np.tanh(0.5 * v))  # stable for any v


_ACTIVATIONS = {
    "linear": lambda v: v, "sigmoid": _sigmoid, "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0), "leaky_relu": lambda v: np.where(v > 0, v, 0.2 * v),
    "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))),
    "softplus": lambda v: np.logaddexp(0, v),
}


def sample_builtin(likelihood, params, D, rng, loc_act="linear", log_var_clip=5.0,
                   laplace_scale=None, reduction="sum"):
    """Draws x ~ p(x | params) for a built-in likelihood; params is (n, P*D) from the decoder."""
    params = np.asarray(params, np.float64)
    loc = params[:, :D]
    if likelihood == "bernoulli":
        return (rng.random(loc.shape) < _sigmoid(loc)).astype(np.float64)
    if likelihood == "continuous_bernoulli":
        # inverse CDF: x = log(1 + u (e^l - 1)) / l, written to avoid overflow for large |l|
        u = rng.random(loc.shape)
        lam = np.where(np.abs(loc) < 1e-4, 1e-4, loc)
        pos = 1 + np.log(u + (1 - u) * np.exp(-np.abs(lam))) / np.abs(lam)
        neg = np.log1p(u * np.expm1(-np.abs(lam))) / -np.abs(lam)
        x = np.where(lam > 0, pos, neg)
        return np.where(np.abs(loc) < 1e-4, u, np.clip(x, 0.0, 1.0))
    mu = _ACTIVATIONS[loc_act](loc)
    if likelihood == "gaussian":
        lv = np.clip(params[:, D:2 * D], -log_var_clip, log_var_clip)
        return mu + np.exp(0.5 * lv) * rng.standard_normal(mu.shape)
    if likelihood == "mse":  # sum of squares = Gaussian NLL with variance 1/2 (D/2 for the mean)
        var = 0.5 * (D if reduction == "mean" else 1)
        return mu + np.sqrt(var) * rng.standard_normal(mu.shape)
    if likelihood == "laplace":
        scale = laplace_scale if laplace_scale is not None else np.exp(
            np.clip(params[:, D:2 * D], -log_var_clip, log_var_clip))
        return mu + scale * rng.laplace(size=mu.shape)
    raise ValueError(f"unknown likelihood {likelihood!r}")
