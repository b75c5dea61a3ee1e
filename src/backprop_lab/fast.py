"""Compiled SGD epochs: the equations of ``network.py``, as loops run by numba.

``network.py`` is the readable reference and the one to learn from; this module
repeats its forward pass, deltas and update one sample at a time, so that numba
compiles a whole block of epochs into one call with no Python in the loop.
:func:`numba_epochs` has exactly the contract of
:func:`backprop_lab.training.numpy_epochs` and agrees with it up to rounding.

The weights travel as one flat float64 buffer: ``W_1 … W_L``, each raveled in C
order, one after the other, layer ``l`` starting at ``weight_start[l - 1]``. The
``z``, ``a`` and ``delta`` of all layers share one such buffer each, layer ``l``
at ``unit_start[l]``. So one compiled signature serves every depth, and the
scratch buffers are allocated once per call, never inside the loop.

Importing this module needs numba and raises ``ImportError`` without it, which
is how ``engine="auto"`` falls back to numpy.
"""

import math

import numpy as np
from numba import njit

# Hidden activations by name, as in activations.py; the compiled code branches
# on the number, a branch that always goes the same way within a call.
ACTIVATION_CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "identity": 3}

# Compiled once, then loaded from __pycache__ by later processes. No fastmath:
# reordering sums would break agreement with numpy. numpy's error model lets
# division follow IEEE, as numpy does, instead of testing every divisor for zero
# in the hot loop (no divisor here can be zero).
JIT = {"cache": True, "error_model": "numpy"}
# Small helpers are inlined by numba itself; left as calls, they cost more than
# the arithmetic of a 2-3-2 net.
INLINE = {**JIT, "inline": "always"}


def numba_epochs(net, X, T, orders, lr, batch_size, X_val=None, T_val=None):
    """Run ``len(orders)`` epochs of SGD on ``net`` in place, compiled.

    Same contract as :func:`backprop_lab.training.numpy_epochs`: each step takes
    the next ``batch_size`` samples of the epoch's order (the last batch may be
    smaller) and applies ``W_l ← W_l − lr · grad_W_l`` with the batch's mean
    gradient; the arrays in ``net.weights`` are updated in place.

    Parameters
    ----------
    net : MLP
    X : ndarray of shape (n, sizes[0])
    T : ndarray of shape (n, sizes[-1])
    orders : ndarray of int, shape (epochs, n)
        Row ``e`` is the order in which epoch ``e`` visits the samples.
    lr : float
    batch_size : int
    X_val, T_val : ndarray of shape (m, sizes[0]) and (m, sizes[-1]), optional

    Returns
    -------
    train_loss, val_loss : ndarray of shape (len(orders),), or None for val_loss
        Mean over samples of ``½ Σ_k (t_k − y_k)²`` after each epoch. Divergence
        shows up here as NaN or inf, for the caller to report.
    """
    if net.activation not in ACTIVATION_CODES:
        raise ValueError(
            f"activation={net.activation!r} is not known; "
            f"allowed: {', '.join(ACTIVATION_CODES)}"
        )
    sizes = np.array(net.sizes, dtype=np.int64)
    weight_start = np.zeros(len(sizes), dtype=np.int64)
    weight_start[1:] = np.cumsum(sizes[1:] * (sizes[:-1] + 1))
    unit_start = np.zeros(len(sizes) + 1, dtype=np.int64)
    unit_start[1:] = np.cumsum(sizes)
    params = np.concatenate([np.ravel(W) for W in net.weights], dtype=np.float64)

    # One dtype and layout per argument, so that one compiled version (and one
    # cache entry) serves every call.
    X = np.ascontiguousarray(X, dtype=np.float64)
    T = np.ascontiguousarray(T, dtype=np.float64)
    orders = np.ascontiguousarray(orders, dtype=np.int64)
    with_val = X_val is not None
    if with_val:
        X_val = np.ascontiguousarray(X_val, dtype=np.float64)
        T_val = np.ascontiguousarray(T_val, dtype=np.float64)
    else:
        X_val, T_val = X[:0], T[:0]
    train_loss = np.empty(len(orders))
    val_loss = np.empty(len(orders))

    compiled_epochs(
        params,
        (sizes, weight_start, unit_start),
        ACTIVATION_CODES[net.activation],
        X,
        T,
        orders,
        float(lr),
        int(batch_size),
        with_val,
        X_val,
        T_val,
        train_loss,
        val_loss,
    )

    for layer, W in enumerate(net.weights):
        W[...] = params[weight_start[layer] : weight_start[layer + 1]].reshape(W.shape)
    return train_loss, (val_loss if with_val else None)


@njit(**JIT)
def compiled_epochs(
    params,
    layout,
    activation,
    X,
    T,
    orders,
    lr,
    batch_size,
    with_val,
    X_val,
    T_val,
    train_loss,
    val_loss,
):
    """Body of :func:`numba_epochs`: ``params`` in place, losses into the last two.

    ``layout`` is ``(sizes, weight_start, unit_start)`` as in the module docstring.
    """
    n = X.shape[0]
    n_units = layout[2][-1]
    z = np.empty(n_units)
    a = np.empty(n_units)
    delta = np.empty(n_units)
    grad = np.empty(params.size)
    for e in range(orders.shape[0]):
        for begin in range(0, n, batch_size):
            end = min(begin + batch_size, n)
            if end - begin == 1:
                # A batch of one is the seed's per-sample step: the update goes
                # straight into the weights, with no gradient buffer to clear.
                i = orders[e, begin]
                forward(params, layout, activation, X, i, z, a)
                backward(params, layout, activation, T, i, z, a, delta)
                add_outer(params, -lr, layout, a, delta)
                continue
            grad[:] = 0.0
            for b in range(begin, end):
                i = orders[e, b]
                forward(params, layout, activation, X, i, z, a)
                backward(params, layout, activation, T, i, z, a, delta)
                add_outer(grad, 1.0, layout, a, delta)
            m = end - begin
            for w in range(params.size):
                # W_l ← W_l − lr · grad_W_l, with the mean gradient over the batch
                params[w] -= lr * (grad[w] / m)
        train_loss[e] = mean_loss(params, layout, activation, X, T, z, a)
        if with_val:
            val_loss[e] = mean_loss(params, layout, activation, X_val, T_val, z, a)


@njit(**INLINE)
def start(offsets, index):
    """``offsets[index]``, which LLVM then knows is not negative.

    Without that, numba's handling of negative indices stays in every access
    at ``start + j`` and keeps the inner loops from being vectorised.
    """
    return max(offsets[index], 0)


@njit(**INLINE)
def forward(params, layout, activation, X, i, z, a):
    """Fill ``z`` and ``a`` of every layer for sample ``X[i]``; ``a_0 = X[i]``."""
    sizes, weight_start, unit_start = layout
    last = sizes.size - 1
    for j in range(sizes[0]):
        a[j] = X[i, j]
    for layer in range(1, last + 1):
        here = start(unit_start, layer)

        # z_l = W_l [a_{l-1}, 1]
        affine(
            params,
            start(weight_start, layer - 1),
            sizes[layer],
            sizes[layer - 1],
            a,
            start(unit_start, layer - 1),
            z,
            here,
        )

        # a_l = f(z_l) in hidden layers; y = a_L = z_L (linear output)
        for k in range(here, here + sizes[layer]):
            a[k] = z[k] if layer == last else activate(activation, z[k])


@njit(**INLINE)
def affine(params, w, n_out, n_in, a, prev, z, here):
    """``z[here + k] = W[k] · [a[prev : prev + n_in], 1]`` for the rows of ``W``.

    ``W`` is the ``(n_out, n_in + 1)`` matrix at ``params[w:]``. Each row is
    summed in order ``j = 0, 1, …`` then the bias, but four rows at a time: four
    independent sums keep the adder busy where one chain would wait on itself.
    """
    row = n_in + 1
    k = 0
    while k + 4 <= n_out:
        r = w + k * row
        s0 = s1 = s2 = s3 = 0.0
        for j in range(n_in):
            x = a[prev + j]
            s0 += params[r + j] * x
            s1 += params[r + row + j] * x
            s2 += params[r + 2 * row + j] * x
            s3 += params[r + 3 * row + j] * x
        z[here + k] = s0 + params[r + n_in]
        z[here + k + 1] = s1 + params[r + row + n_in]
        z[here + k + 2] = s2 + params[r + 2 * row + n_in]
        z[here + k + 3] = s3 + params[r + 3 * row + n_in]
        k += 4
    while k < n_out:
        r = w + k * row
        total = 0.0
        for j in range(n_in):
            total += params[r + j] * a[prev + j]
        z[here + k] = total + params[r + n_in]
        k += 1


@njit(**INLINE)
def backward(params, layout, activation, T, i, z, a, delta):
    """Fill ``delta`` of layers ``L … 1`` for sample ``i``, target ``T[i]``."""
    sizes, weight_start, unit_start = layout
    last = sizes.size - 1
    out = start(unit_start, last)
    for k in range(sizes[last]):
        # delta_L = y − t: identity output with half squared error
        delta[out + k] = a[out + k] - T[i, k]

    for layer in range(last, 1, -1):
        # delta_{l-1} = (W_l[:, :-1]ᵀ delta_l) ⊙ f'(z_{l-1}), summed over the
        # rows of W_l so that the inner loop runs along contiguous memory
        n_in = sizes[layer - 1]
        prev = start(unit_start, layer - 1)
        here = start(unit_start, layer)
        w = start(weight_start, layer - 1)
        for j in range(n_in):
            delta[prev + j] = 0.0
        for k in range(sizes[layer]):
            d = delta[here + k]
            for j in range(n_in):
                delta[prev + j] += params[w + j] * d
            w += n_in + 1
        for j in range(prev, prev + n_in):
            delta[j] *= derivative(activation, z[j], a[j])


@njit(**INLINE)
def add_outer(target, scale, layout, a, delta):
    """Add ``scale · delta_l ⊗ [a_{l-1}, 1]``, i.e. ``scale · grad_W_l``, per layer.

    ``target`` is laid out as the weights: the weights themselves for a
    per-sample step, or the gradient buffer of a mini-batch.
    """
    sizes, weight_start, unit_start = layout
    for layer in range(1, sizes.size):
        n_in = sizes[layer - 1]
        prev = start(unit_start, layer - 1)
        here = start(unit_start, layer)
        w = start(weight_start, layer - 1)
        for k in range(sizes[layer]):
            d = delta[here + k]
            # scale · (d · a) as numpy rounds it: lr · grad, with grad = delta ⊗ a
            for j in range(n_in):
                target[w + j] += scale * (d * a[prev + j])
            target[w + n_in] += scale * d
            w += n_in + 1


@njit(**INLINE)
def mean_loss(params, layout, activation, X, T, z, a):
    """Mean over the rows of ``X`` of ``½ Σ_k (t_k − y_k)²``."""
    sizes, _, unit_start = layout
    out = start(unit_start, sizes.size - 1)
    total = 0.0
    for i in range(X.shape[0]):
        forward(params, layout, activation, X, i, z, a)
        for k in range(T.shape[1]):
            diff = T[i, k] - a[out + k]
            total += diff * diff
    return 0.5 * (total / X.shape[0])


@njit(**INLINE)
def activate(activation, z):
    """``f(z)`` for the activation numbered as in :data:`ACTIVATION_CODES`."""
    if activation == 0:
        # Split by sign so that exp never overflows, as activations.sigmoid
        if z >= 0.0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)
    if activation == 1:
        return math.tanh(z)
    if activation == 2:
        # Written so that NaN passes through, as it does numpy.maximum
        return 0.0 if z <= 0.0 else z
    return z


@njit(**INLINE)
def derivative(activation, z, a):
    """``f'(z)``, from ``a = f(z)`` where that is cheaper, as in activations.py."""
    if activation == 0:
        return a * (1.0 - a)
    if activation == 1:
        return 1.0 - a * a
    if activation == 2:
        return 1.0 if z > 0.0 else 0.0
    return 1.0
