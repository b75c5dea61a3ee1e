"""The seed notebook's network: hidden layers of one activation, a linear output.

Names are the seed's symbols. Layer ``l`` maps ``a_{l-1}`` to ``z_l = W_l [a_{l-1}, 1]``
(the bias trick: the bias is the last column of ``W_l`` and sees a constant input
of 1), then ``a_l = f(z_l)`` for hidden layers and ``y = a_L = z_L`` at the output.
The loss of one sample is ``½ Σ_k (t_k − y_k)²`` and a batch's loss is its mean.

Everything is vectorised over a batch: rows are samples, so ``z`` is computed as
``[a_{l-1}, 1] @ W_lᵀ``. Left out on purpose: other losses, output activations,
regularisation and momentum; the seed has none of them.
"""

import numpy as np

from backprop_lab.activations import get_activation

INITS = ("uniform", "glorot", "he")


def append_one(a):
    """Return ``[a, 1]``: ``a`` of shape ``(n, m)`` with a column of ones added."""
    return np.hstack([a, np.ones((a.shape[0], 1))])


def init_weights(sizes, init, rng):
    """Draw ``[W_1, …, W_L]`` for ``sizes`` from the generator ``rng``.

    ``"uniform"`` is the seed's ``U[0, 1)`` for every entry, bias included;
    ``"glorot"`` (uniform, for sigmoid and tanh) and ``"he"`` (normal, for relu)
    scale by fan-in and fan-out and start biases at zero, for deeper nets.
    """
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        if init == "uniform":
            W = rng.random((n_out, n_in + 1))
        elif init == "glorot":
            limit = np.sqrt(6.0 / (n_in + n_out))
            W = np.hstack(
                [rng.uniform(-limit, limit, (n_out, n_in)), np.zeros((n_out, 1))]
            )
        else:
            W = np.hstack(
                [
                    rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in)),
                    np.zeros((n_out, 1)),
                ]
            )
        weights.append(W)
    return weights


def check_sizes(sizes):
    """Return ``sizes`` as a list of ints, or raise ``ValueError`` saying why not."""
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(
            f"sizes={sizes!r} has {len(sizes)} entries; need at least 2 "
            "(inputs and outputs)"
        )
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(
                f"sizes={sizes!r} contains {n!r}; every size must be a positive integer"
            )
    return [int(n) for n in sizes]


class MLP:
    """A multilayer perceptron in the seed's bias-trick layout.

    Parameters
    ----------
    sizes : sequence of int
        Units per layer, inputs first and outputs last, e.g. ``[2, 3, 2]``.
    activation : {"sigmoid", "tanh", "relu", "identity"}
        Activation of every hidden layer; the output layer is linear.
    init : {"uniform", "glorot", "he"}
        How to draw the initial weights (see :func:`init_weights`).
    seed : int or None
        Seed of the ``numpy.random.Generator`` that draws them.

    Attributes
    ----------
    weights : list of ndarray
        ``W_l`` of shape ``(sizes[l], sizes[l-1] + 1)``, bias in the last column.
    """

    def __init__(self, sizes, activation="sigmoid", init="uniform", seed=None):
        sizes = check_sizes(sizes)
        get_activation(activation)
        if init not in INITS:
            raise ValueError(f"init={init!r} is not known; allowed: {', '.join(INITS)}")
        rng = np.random.default_rng(seed)
        self._set(init_weights(sizes, init, rng), activation)

    @classmethod
    def from_weights(cls, weights, activation="sigmoid"):
        """Build a net from ``[W_1, …, W_L]`` (copied) in the bias-trick layout."""
        weights = [np.array(W, dtype=float) for W in weights]
        if not weights:
            raise ValueError("weights=[] is empty; need at least one layer")
        for l, W in enumerate(weights, start=1):
            if W.ndim != 2 or W.shape[1] < 2:
                raise ValueError(
                    f"weights[{l - 1}] has shape {W.shape}; expected (n_l, n_(l-1) + 1)"
                )
            if l > 1 and W.shape[1] != weights[l - 2].shape[0] + 1:
                raise ValueError(
                    f"weights[{l - 1}] has shape {W.shape}; after a layer of "
                    f"{weights[l - 2].shape[0]} units it must have "
                    f"{weights[l - 2].shape[0] + 1} columns"
                )
        get_activation(activation)
        net = cls.__new__(cls)
        net._set(weights, activation)
        return net

    def _set(self, weights, activation):
        self.weights = weights
        self.activation = activation
        self.f, self.f_prime = get_activation(activation)

    @property
    def sizes(self):
        """Units per layer, inputs first: ``[n_0, n_1, …, n_L]``."""
        return [self.weights[0].shape[1] - 1] + [W.shape[0] for W in self.weights]

    def forward(self, X):
        """Run the forward pass and keep every layer's ``z`` and ``a``.

        Parameters
        ----------
        X : ndarray of shape (n, sizes[0])

        Returns
        -------
        z : list of ndarray
            ``z[l]`` of shape ``(n, sizes[l])`` for ``l = 1 … L`` (``z[0]`` is None).
        a : list of ndarray
            ``a[0] = X``, ``a[l] = f(z[l])`` for hidden layers, ``a[L] = z[L] = y``.
        """
        L = len(self.weights)
        z, a = [None], [X]
        for l, W in enumerate(self.weights, start=1):
            # z_l = W_l [a_{l-1}, 1]
            z.append(append_one(a[l - 1]) @ W.T)

            # a_l = f(z_l) in hidden layers; y = a_L = z_L (linear output)
            a.append(z[l] if l == L else self.f(z[l]))
        return z, a

    def backward(self, z, a, T):
        """Backpropagate from the forward pass ``z, a`` to the loss gradients.

        Returns
        -------
        grad_W : list of ndarray
            Mean over the batch of ``∂E/∂W_l``, same shapes as :attr:`weights`.
        """
        L = len(self.weights)
        n = T.shape[0]
        grad_W = [None] * L

        # delta_L = y − t: identity output with half squared error, so
        # ∂E/∂y = y − t and ∂y/∂z_L = 1.
        delta = a[L] - T

        for l in range(L, 0, -1):
            # grad_W_l = delta_l ⊗ [a_{l-1}, 1], averaged over the batch
            grad_W[l - 1] = delta.T @ append_one(a[l - 1]) / n

            if l > 1:
                # delta_{l-1} = (W_l[:, :-1]ᵀ delta_l) ⊙ f'(z_{l-1})
                W = self.weights[l - 1]
                delta = (delta @ W[:, :-1]) * self.f_prime(z[l - 1], a[l - 1])
        return grad_W

    def predict(self, X):
        """Return ``y`` of shape ``(n, sizes[-1])`` for ``X`` of shape (n, sizes[0])."""
        X = self._check_X(X)
        return self.forward(X)[1][-1]

    def loss(self, X, T):
        """Mean over samples of ``½ Σ_k (t_k − y_k)²``."""
        X, T = self._check_XT(X, T)
        y = self.forward(X)[1][-1]
        return half_squared_error(y, T)

    def gradients(self, X, T):
        """Gradient of :meth:`loss` for each ``W_l``; same shapes as :attr:`weights`."""
        X, T = self._check_XT(X, T)
        z, a = self.forward(X)
        return self.backward(z, a, T)

    def _check_X(self, X, name="X"):
        X = np.asarray(X, dtype=float)
        n_in = self.sizes[0]
        if X.ndim != 2 or X.shape[1] != n_in:
            raise ValueError(
                f"{name} has shape {X.shape}; expected (n_samples, {n_in}) "
                f"for a net of sizes {self.sizes}"
            )
        check_finite(name, X)
        return X

    def _check_XT(self, X, T, names=("X", "T")):
        X = self._check_X(X, names[0])
        if X.shape[0] == 0:
            # A loss is a mean over samples: it needs at least one.
            raise ValueError(f"{names[0]} has no rows; need at least one sample")
        T = np.asarray(T, dtype=float)
        n_out = self.sizes[-1]
        if T.ndim != 2 or T.shape != (X.shape[0], n_out):
            raise ValueError(
                f"{names[1]} has shape {T.shape}; expected ({X.shape[0]}, {n_out}): "
                f"one row per row of {names[0]}, {n_out} outputs"
            )
        check_finite(names[1], T)
        return X, T


def check_finite(name, A):
    """Raise ``ValueError`` naming the first NaN or infinite entry of 2-D ``A``."""
    bad = ~np.isfinite(A)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}[{i}, {j}] is {A[i, j]}; every value of {name} must be finite"
        )


def half_squared_error(y, T):
    """Mean over rows of ``½ Σ_k (t_k − y_k)²`` for arrays of shape ``(n, k)``."""
    return float(0.5 * np.mean(np.sum((T - y) ** 2, axis=1)))
