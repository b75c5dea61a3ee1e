"""The seed notebook's own training loop, kept as a peer to time against.

``forward``, ``loss_MSE`` and ``backward`` are the notebook's (cells 239 and 240
of ``seed/backpropagation-notebook.md``), working on module globals as they do
there. They are changed only so that they run on numpy 2, which no longer turns
a one-element array into a scalar on assignment: ``a[1][i]`` became
``a[1][i, 0]`` and likewise for ``a[0]`` and ``x``. Everything else stays as it
is, faults included, because it is the notebook's speed we measure:

- no bias: ``W[0]`` is ``(3, 2)`` and ``W[1]`` is ``(2, 3)``;
- ``backward`` reads the global ``x`` of the worked example, ``[1, 3, 1]``,
  instead of the current sample (the stale-input bug), so layer 1 learns from
  the wrong input;
- ``backward`` steps with its own hard-coded ``mu = 0.00001``; the time of a
  step does not depend on the value;
- ``loss_MSE`` returns a one-element array.

:func:`run` is the loop of cell 240, with its progress print (every tenth
epoch, losses on train and test) collected into a list instead.
"""

import numpy as np

# The notebook's globals at the time of cell 240. x is left over from the
# worked example, and backward reads it (see the module docstring).
x = np.array([[1, 3, 1]]).T
sizes = [2, 3, 2]
W = []
z = [np.zeros(sizes[1]), np.zeros(sizes[2])]
a = [np.zeros(sizes[1]), np.zeros(sizes[2])]


def forward(xi, log=False):
    # Input
    if log:
        print("Input x:")
    x = np.array([xi]).T
    if log:
        print(x, "\n")

    # Layer 1
    if log:
        print("Layer 1:")
    z[0] = W[0] @ x
    a[0] = 1 / (1 + np.exp(-z[0]))
    if log:
        print("W_l1", "\n", W[0], "\n")
    if log:
        print("z_l1", "\n", z[0], "\n")
    if log:
        print("a_l1", "\n", a[0], "\n")

    # Layer 2
    if log:
        print("Layer 2:")
    z[1] = W[1] @ a[0]
    a[1] = z[1]
    if log:
        print("W_l2", "\n", W[1], "\n")
    if log:
        print("z_l2", "\n", z[1], "\n")
    if log:
        print("y", "\n", a[1], "\n")

    return a[1]


def loss_MSE(x, t, log=False):
    # MSE
    if log:
        print("t\n", t, "\n")

    try:
        MSE = 0.5 * ((t[0] - x[0]) ** 2 + (t[1] - x[1]) ** 2)
        return MSE
    except Exception as e:
        print(e)


def backward(t):
    # Initialization
    W_grad = []
    for w in W:
        W_grad.append(np.zeros_like(w))

    delta = []
    for i in range(1, len(sizes)):
        delta.append(np.zeros(sizes[i]))

    # -------------------------------
    # LAYER 2
    # compute delta
    for i in range(sizes[2]):
        delta[1][i] = a[1][i, 0] - t[i]

    # compute W_grad
    for i in range(sizes[2]):
        for j in range(sizes[1]):
            W_grad[1][i, j] = delta[1][i] * a[0][j, 0]

    # -------------------------------
    # LAYER 1
    # compute delta
    for k in range(sizes[1]):
        acc = 0
        for i in range(sizes[2]):
            acc += delta[1][i] * W[1][i, k] * a[0][k, 0] * (1 - a[0][k, 0])
        delta[0][k] = acc

    # compute W_grad
    for i in range(sizes[1]):
        for j in range(sizes[0]):
            W_grad[0][i, j] = delta[0][i] * x[j, 0]

    # UPDATE WEIGHTS
    mu = 0.00001
    for idx, w_grad in enumerate(W_grad):
        W[idx] = W[idx] - mu * w_grad


def run(X_train, y_train, X_test, y_test, weights, epochs):
    """Run cell 240's loop for ``epochs`` epochs from ``weights`` (copied).

    Parameters
    ----------
    X_train, y_train, X_test, y_test : ndarray of shape (n, 2)
    weights : list of ndarray
        ``[W_l1, W_l2]`` of shapes ``(3, 2)`` and ``(2, 3)``, no bias.
    epochs : int

    Returns
    -------
    list of tuple
        ``(epoch, test loss, train loss)`` for every tenth epoch, as printed by
        the notebook.
    """
    W[:] = [np.array(w, dtype=float) for w in weights]
    printed = []
    for ep in range(epochs):
        for i in range(X_train.shape[0]):
            target = y_train[i]
            out = forward(X_train[i])
            loss = loss_MSE(out, target)
            backward(target)

        if ep % 10 == 0:
            loss = 0
            for j in range(X_train.shape[0]):
                target = y_train[j]
                out = forward(X_train[j])
                loss += loss_MSE(out, target)
            l_train = loss / X_train.shape[0]

            loss = 0
            for j in range(X_test.shape[0]):
                target = y_test[j]
                out = forward(X_test[j])
                loss += loss_MSE(out, target)
            l_test = loss / X_test.shape[0]

            printed.append((ep, l_test, l_train))
    return printed
