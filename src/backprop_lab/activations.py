"""Hidden-layer activations, chosen by name.

Each entry holds ``f(z)`` and its derivative ``f'(z)``. The derivative takes both
``z`` and ``a = f(z)`` so that sigmoid and tanh reuse the forward value, as the
seed does with ``a (1 - a)``. The output layer is always linear and never looks
here.
"""

from typing import NamedTuple

import numpy as np


class Activation(NamedTuple):
    f: object
    f_prime: object


def sigmoid(z):
    # Split by sign so exp never sees a large positive argument: no overflow
    # warning for large |z|, and for z >= 0 it is the seed's 1 / (1 + e^-z).
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_prime(z, a):
    return a * (1.0 - a)


def tanh(z):
    return np.tanh(z)


def tanh_prime(z, a):
    return 1.0 - a * a


def relu(z):
    return np.maximum(z, 0.0)


def relu_prime(z, a):
    return (z > 0.0).astype(z.dtype)


def identity(z):
    return z


def identity_prime(z, a):
    return np.ones_like(z)


ACTIVATIONS = {
    "sigmoid": Activation(sigmoid, sigmoid_prime),
    "tanh": Activation(tanh, tanh_prime),
    "relu": Activation(relu, relu_prime),
    "identity": Activation(identity, identity_prime),
}


def get_activation(name):
    """Return the :class:`Activation` registered under ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the allowed names.
    """
    if name not in ACTIVATIONS:
        raise ValueError(
            f"activation={name!r} is not known; allowed: {', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]
