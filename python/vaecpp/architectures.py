"""Reference convolutional VAEs, built from ``vaecpp.layers`` and returned uncompiled.

* :func:`keras_mnist_conv_vae`: the convolutional VAE of the Keras example "Variational
  AutoEncoder" (keras.io/examples/generative/vae), 28x28x1 digits, 2-D latent space.
* :func:`celeba_conv_vae`: the DCGAN-style faces model (128x128x3 in [-1, 1] by default):
  strided 5x5 convolutions with batch normalisation down to 4x4, a Dense bottleneck, and
  transposed convolutions back up, trained on the mean squared pixel error plus a weighted KL.
"""

from __future__ import annotations

import numbers

from . import _checks, _core, layers as L
from . import optimizers
from .model import VAE

__all__ = ["celeba_conv_vae", "celeba_optimizer", "keras_mnist_conv_vae", "default_num_filters"]


def keras_mnist_conv_vae(latent_dim=2, **kwargs):
    """The Keras example's convolutional VAE for 28x28x1 images in [0, 1].

    Encoder: Conv2D(32, 3, strides 2, same, relu) -> Conv2D(64, 3, strides 2, same, relu) ->
    Flatten -> Dense(16, relu) -> z_mean, z_log_var. Decoder: Dense(7*7*64, relu) ->
    Reshape(7, 7, 64) -> Conv2DTranspose(64, 3, 2, same, relu) -> Conv2DTranspose(32, 3, 2,
    same, relu) -> Conv2DTranspose(1, 3, 1, same): Bernoulli logits (the decoded mean is their
    sigmoid), the binary cross-entropy summed over pixels as in the example. ``kwargs`` go to
    :class:`vaecpp.VAE` (``seed``, ``dtype``, ``threads``, ``beta``, ...). The example trains
    with ``compile(optimizer="adam")`` and ``fit(x, epochs=30, batch_size=128)``.
    """
    encoder = [
        L.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        L.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
        L.Flatten(),
        L.Dense(16, activation="relu"),
    ]
    decoder = [
        L.Dense(7 * 7 * 64, activation="relu"),
        L.Reshape((7, 7, 64)),
        L.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu"),
        L.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu"),
        L.Conv2DTranspose(1, 3, strides=1, padding="same"),
    ]
    kwargs.setdefault("likelihood", "bernoulli")
    return VAE(input_shape=(28, 28, 1), latent_dim=latent_dim, encoder=encoder, decoder=decoder,
               **kwargs)


def _blocks(side):
    """The number of stride-2 blocks from a square side (a power of two >= 16) down to 4."""
    if isinstance(side, numbers.Integral) and not isinstance(side, bool):
        side = int(side)  # np.int64(16) is 16
    if not isinstance(side, int) or side < 16 or side & (side - 1):
        raise ValueError(f"celeba_conv_vae needs square images whose side is a power of two "
                         f">= 16 (16, 32, 64, 128, 256, ...), got side {side!r}")
    return side.bit_length() - 3  # log2(side) - 2


def default_num_filters(side, base=64, maximum=1024):
    """The default encoder widths for ``side`` x ``side`` images: ``base`` doubling per block,
    capped at ``maximum``; one entry per stride-2 block (``log2(side) - 2`` of them), e.g.
    (64, 128, 256, 512, 1024) for 128 and (64, 128) for 16."""
    return tuple(min(base * 2 ** i, maximum) for i in range(_blocks(side)))


def celeba_conv_vae(input_shape=(128, 128, 3), latent_dim=64, num_filters=None, kernel_size=5,
                    beta=1e-4, momentum=0.99, likelihood="mse", **kwargs):
    """The CelebA faces VAE: images ``(s, s, c)`` in [-1, 1], ``s`` a power of two >= 16.

    Encoder: ``log2(s) - 2`` blocks of Conv2D(``num_filters[i]``, ``kernel_size``, strides 2,
    same) + BatchNorm + ReLU take ``s`` down to 4x4x``num_filters[-1]``; Flatten; the Dense heads
    z_mean and z_log_var (``latent_dim``). Decoder: Dense(``num_filters[-1]``) -> Reshape(1, 1,
    ``num_filters[-1]``) -> Conv2DTranspose(``num_filters[-1]``, 4, strides 1, valid) to 4x4 +
    BatchNorm + ReLU -> blocks of Conv2DTranspose(``num_filters[i]``, ``kernel_size``, strides 2,
    same) + BatchNorm + ReLU for ``i`` from ``-2`` down to ``0`` (4 to ``s / 2``) -> a final
    Conv2DTranspose(``c``, 3, strides 2, same) to ``s`` x ``s`` x ``c``, squashed by tanh.

    ``num_filters`` has one width per encoder block (default :func:`default_num_filters`:
    (64, 128, 256, 512, 1024) for 128x128, about 54 million weights); the decoder uses them in
    reverse. The loss is the mean squared pixel error per image plus ``beta`` (the latent-loss
    weight) times the KL divergence in nats: ``likelihood="mse", reduction="mean",
    output_activation="tanh"``. ``beta=1e-4`` weighs them like the common
    ``10000 * mse + kl`` formulation. ``likelihood="gaussian"`` (or ``"laplace"``) makes the final
    layer emit 2 x c channels, a location (tanh) and a log-scale per pixel. ``momentum`` is the
    BatchNorm layers'; ``kwargs`` go to :class:`vaecpp.VAE` (``seed``, ``dtype``, ``threads``).

    Compile it with :func:`celeba_optimizer` (Adam, learning rate 5e-4, ``beta_1`` 0.5), stream
    the images with ``sources.map_batches(datasets.image_folder(path, size=(s, s), crop=(108,
    108), stream=True), lambda b: 2 * b - 1)`` and fit with ``batch_size`` 32 or more.
    """
    if len(input_shape) != 3 or input_shape[0] != input_shape[1]:
        raise ValueError(f"celeba_conv_vae needs input_shape (side, side, channels), got "
                         f"{tuple(input_shape)!r}")
    n = _blocks(input_shape[0])
    side, channels = 2 ** (n + 2), input_shape[2]
    num_filters = default_num_filters(side) if num_filters is None else tuple(num_filters)
    if len(num_filters) != n:
        raise ValueError(f"num_filters needs one width per stride-2 encoder block: {n} for "
                         f"{side}x{side} images ({side} -> 4), got {len(num_filters)}: "
                         f"{num_filters!r}")

    def block(layer):
        return [layer, L.BatchNorm(momentum=momentum), L.ReLU()]

    encoder = []
    for f in num_filters:
        encoder += block(L.Conv2D(f, kernel_size, strides=2, padding="same"))
    encoder.append(L.Flatten())
    top = num_filters[-1]
    decoder = [L.Dense(top), L.Reshape((1, 1, top))]
    decoder += block(L.Conv2DTranspose(top, 4, strides=1, padding="valid"))
    for f in reversed(num_filters[:-1]):
        decoder += block(L.Conv2DTranspose(f, kernel_size, strides=2, padding="same"))
    if isinstance(likelihood, str) and likelihood in _core.LIKELIHOODS:
        per_pixel = _core.likelihood_params_per_dim(likelihood, kwargs.get("laplace_scale") or 0.0)
    else:  # a vaecpp.Likelihood (VAE rejects anything else, naming it)
        per_pixel = getattr(likelihood, "params_per_dim", 1)
    decoder.append(L.Conv2DTranspose(per_pixel * channels, 3, strides=2, padding="same",
                                     name="decoder_output"))
    if likelihood == "mse":
        kwargs.setdefault("reduction", "mean")
    if likelihood not in _checks.UNIT_INTERVAL:  # those decode sigmoid(logits) into [0, 1]
        kwargs.setdefault("output_activation", "tanh")
    return VAE(input_shape=tuple(input_shape), latent_dim=latent_dim, encoder=encoder,
               decoder=decoder, likelihood=likelihood, beta=beta, **kwargs)


def celeba_optimizer(learning_rate=5e-4, beta_1=0.5, **kwargs):
    """Adam for :func:`celeba_conv_vae`: ``beta_1`` 0.5 as in DCGAN-style image models (the
    first-moment average forgets faster); other arguments as :class:`vaecpp.optimizers.Adam`."""
    return optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, **kwargs)
