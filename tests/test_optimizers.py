"""Each optimizer against a NumPy implementation of its published (Keras) update rule."""

import numpy as np
import pytest

from vaecpp import _testing, optimizers


def numpy_run(cfg, p, grads, ranges):
    p = p.copy()
    m = np.zeros_like(p)
    v = np.full_like(p, cfg.get("initial_accumulator_value", 0.1)) if cfg["name"] == "adagrad" \
        else np.zeros_like(p)
    lr, eps = cfg["learning_rate"], cfg.get("epsilon", 1e-7)
    for t, g in enumerate(grads, start=1):
        g = g.copy()
        if cfg.get("clipvalue"):
            g = np.clip(g, -cfg["clipvalue"], cfg["clipvalue"])
        if cfg.get("clipnorm"):
            for off, n in ranges:
                norm = np.linalg.norm(g[off:off + n])
                if norm > cfg["clipnorm"]:
                    g[off:off + n] *= cfg["clipnorm"] / norm
        p *= 1 - lr * cfg.get("weight_decay", 0.0)
        if cfg["name"] == "adam":
            b1, b2 = cfg["beta_1"], cfg["beta_2"]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p -= lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
        elif cfg["name"] == "sgd":
            mu = cfg.get("momentum", 0.0)
            if mu == 0:
                p -= lr * g
            else:
                m = mu * m - lr * g
                p += mu * m - lr * g if cfg.get("nesterov") else m
        elif cfg["name"] == "rmsprop":
            v = cfg["rho"] * v + (1 - cfg["rho"]) * g * g
            p -= lr * g / (np.sqrt(v) + eps)
        elif cfg["name"] == "adagrad":
            v += g * g
            p -= lr * g / (np.sqrt(v) + eps)
    return p


CASES = [
    optimizers.Adam(),
    optimizers.Adam(learning_rate=0.01, beta_1=0.5, beta_2=0.9, epsilon=1e-3),
    optimizers.SGD(learning_rate=0.1),
    optimizers.SGD(learning_rate=0.1, momentum=0.9),
    optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
    optimizers.RMSprop(learning_rate=0.01),
    optimizers.Adagrad(learning_rate=0.1),
    optimizers.Adam(clipnorm=0.5),
    optimizers.SGD(learning_rate=0.1, clipvalue=0.2),
    optimizers.Adam(weight_decay=0.1, learning_rate=0.01),
]


@pytest.mark.parametrize("opt", CASES, ids=repr)
def test_optimizer_matches_numpy_reference(opt):
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=12)
    grads = rng.normal(size=(6, 12))
    ranges = [(0, 8), (8, 4)]
    cfg = opt.get_config()
    got = _testing.kernels.optimizer_run(cfg, p0, grads, ranges)
    np.testing.assert_allclose(got, numpy_run(cfg, p0, grads, ranges), rtol=1e-12, atol=1e-15)
    assert not np.allclose(got, p0)


def test_optimizer_names_and_errors():
    assert isinstance(optimizers.get("adam"), optimizers.Adam)
    assert isinstance(optimizers.get("RMSprop"), optimizers.RMSprop)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizers.get("adamw2")
    with pytest.raises(TypeError, match="unknown option"):
        optimizers.Adam(learning_rte=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.SGD(learning_rate=-1)
    with pytest.raises(TypeError):
        optimizers.get(3)
