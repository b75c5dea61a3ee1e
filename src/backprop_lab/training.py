"""The epoch loop: SGD over samples or mini-batches, history, divergence.

An engine runs a block of epochs in place on ``net.weights`` and returns each
epoch's losses. ``"numpy"`` is the readable reference built on
:class:`~backprop_lab.network.MLP`; ``"numba"`` is the compiled one in
:mod:`backprop_lab.fast`, with the same equations; ``"auto"`` takes numba when it
imports and numpy otherwise.

Epoch ``e`` (1-based) visits the samples in an order drawn from its own generator,
seeded by ``(seed, e)``, so a run resumed at any epoch draws what it would have.
"""

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np

from backprop_lab.network import MLP

ENGINES = ("auto", "numpy", "numba")
# Epochs per engine call: orders are drawn, and losses checked, a block at a time.
BLOCK_SAMPLES = 1_000_000


class TrainingDiverged(ArithmeticError):
    """The loss became NaN, infinite or larger than the allowed bound.

    Attributes
    ----------
    epoch : int
        The 1-based epoch whose loss was bad.
    reason : str
        ``"nan"``, ``"inf"`` or ``"exploded"``.
    history : History
        The epochs run, the bad one included.
    """

    def __init__(self, epoch, loss, reason, history, bound=None):
        self.epoch, self.loss, self.reason, self.history = epoch, loss, reason, history
        what = f"exceeds max_loss={bound:g}" if reason == "exploded" else f"is {loss}"
        super().__init__(
            f"training diverged at epoch {epoch}: train loss {what}; try a smaller lr"
        )


@dataclass
class History:
    """Per-epoch losses of one :func:`fit`.

    Attributes
    ----------
    epochs : ndarray of int, shape (k,)
        1-based epoch numbers.
    train_loss : ndarray of shape (k,)
        Loss on the training set after each epoch.
    val_loss : ndarray of shape (k,) or None
        Loss on the validation set after each epoch, when one was given.
    """

    epochs: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray | None = None

    def __len__(self):
        return len(self.epochs)

    @classmethod
    def concat(cls, histories):
        """Join consecutive histories (all with validation losses, or none)."""
        with_val = histories[0].val_loss is not None
        return cls(
            np.concatenate([h.epochs for h in histories]),
            np.concatenate([h.train_loss for h in histories]),
            np.concatenate([h.val_loss for h in histories]) if with_val else None,
        )

    def to_frame(self):
        """Return a ``pandas.DataFrame``: columns ``epoch, train_loss, val_loss``."""
        import pandas as pd

        val = self.val_loss if self.val_loss is not None else np.full(len(self), np.nan)
        return pd.DataFrame(
            {"epoch": self.epochs, "train_loss": self.train_loss, "val_loss": val}
        )


def numpy_epochs(net, X, T, orders, lr, batch_size, X_val=None, T_val=None):
    """Run ``len(orders)`` epochs of SGD on ``net`` in place, with numpy.

    Each step takes the next ``batch_size`` samples of the epoch's order and
    applies ``W_l ← W_l − lr · grad_W_l`` with the batch's mean gradient.

    Returns
    -------
    train_loss, val_loss : ndarray of shape (len(orders),), or None for val_loss
    """
    n = X.shape[0]
    train_loss = np.empty(len(orders))
    val_loss = np.empty(len(orders)) if X_val is not None else None
    for e, order in enumerate(orders):
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            z, a = net.forward(X[batch])
            grad_W = net.backward(z, a, T[batch])
            for W, grad in zip(net.weights, grad_W, strict=True):
                # W_l ← W_l − lr · grad_W_l
                W -= lr * grad
        train_loss[e] = net.loss(X, T)
        if val_loss is not None:
            val_loss[e] = net.loss(X_val, T_val)
    return train_loss, val_loss


def get_engine(name):
    """Return the epoch runner for ``engine=name``."""
    if name not in ENGINES:
        raise ValueError(f"engine={name!r} is not known; allowed: {', '.join(ENGINES)}")
    if name == "numpy":
        return numpy_epochs
    try:
        from backprop_lab.fast import numba_epochs
    except ImportError as err:
        if name == "numba":
            raise ValueError(
                f"engine='numba' needs numba, which does not import ({err}); "
                "install backprop-lab[fast] or use engine='numpy'"
            ) from err
        return numpy_epochs
    return numba_epochs


def epoch_order(n, epoch, shuffle, seed):
    """Sample order of ``epoch`` (1-based), drawn from the stream ``(seed, epoch)``."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def fit(
    net,
    X,
    T,
    *,
    lr,
    epochs,
    batch_size=1,
    shuffle=False,
    seed=None,
    X_val=None,
    T_val=None,
    engine="auto",
    max_loss=None,
    start_epoch=0,
    block_epochs=None,
    on_block=None,
):
    """Train ``net`` in place with SGD and return its per-epoch history.

    Parameters
    ----------
    net : MLP
    X : ndarray of shape (n, sizes[0])
    T : ndarray of shape (n, sizes[-1])
    lr : float
        Learning rate, positive and finite.
    epochs : int
        Epoch to stop after (1-based, inclusive).
    batch_size : int
        Samples per step; 1 is the seed's per-sample SGD. The last batch of an
        epoch may be smaller.
    shuffle : bool
        Visit samples in a fresh random order each epoch. The caller's arrays are
        never reordered.
    seed : int or None
        Seeds the shuffling; None draws fresh entropy (not reproducible).
    X_val, T_val : ndarray, optional
        Validation set, scored after every epoch.
    engine : {"auto", "numpy", "numba"}
    max_loss : float, optional
        A train loss above this counts as divergence.
    start_epoch : int
        Epochs already run (resuming from a checkpoint): training runs epochs
        ``start_epoch + 1 … epochs`` and draws the orders those epochs would have.
    block_epochs : int, optional
        Epochs per engine call, blocks ending on multiples of it (checkpoints
        align to them); by default as many as make about a million steps.
    on_block : callable, optional
        Called as ``on_block(history)`` after each block of epochs, with the
        history of that block; ``net.weights`` are those after its last epoch.

    Returns
    -------
    History
        Epochs ``start_epoch + 1 … epochs``.

    Raises
    ------
    ValueError
        For a bad argument, before any work.
    TrainingDiverged
        When the train loss becomes NaN, infinite or above ``max_loss``.
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an MLP; got {type(net).__name__}")
    X, T = net._check_XT(X, T)
    if (X_val is None) != (T_val is None):
        raise ValueError("X_val and T_val must be given together")
    if X_val is not None:
        X_val, T_val = net._check_XT(X_val, T_val, names=("X_val", "T_val"))
    # Real takes numpy scalars too (np.float32 is not a float).
    if (
        isinstance(lr, bool)
        or not isinstance(lr, Real)
        or not (math.isfinite(lr) and lr > 0)
    ):
        raise ValueError(
            f"lr={lr!r} is not allowed; lr must be a positive finite number"
        )
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("start_epoch", start_epoch, 0)
    if start_epoch > epochs:
        raise ValueError(f"start_epoch={start_epoch} is past epochs={epochs}")
    if seed is not None:
        _check_int("seed", seed, 0)
    if block_epochs is not None:
        _check_int("block_epochs", block_epochs, 1)
    if max_loss is not None and not max_loss > 0:
        raise ValueError(f"max_loss={max_loss!r} is not allowed; must be positive")
    run_epochs = get_engine(engine)
    if shuffle and seed is None:
        seed = int(np.random.SeedSequence().entropy)

    n = X.shape[0]
    block = block_epochs or max(1, BLOCK_SAMPLES // n)
    parts = []
    done = start_epoch
    while done < epochs:
        last = min(epochs, (done // block + 1) * block)
        numbers = np.arange(done + 1, last + 1)
        done = last
        orders = np.stack([epoch_order(n, e, shuffle, seed) for e in numbers])
        # Overflow on the way to divergence is expected: it is caught below
        # from the losses and reported with its epoch.
        with np.errstate(over="ignore", invalid="ignore"):
            train_loss, val_loss = run_epochs(
                net, X, T, orders, float(lr), int(batch_size), X_val, T_val
            )
        part = History(numbers, train_loss, val_loss)
        parts.append(part)
        _check_divergence(part, parts, max_loss)
        if on_block is not None:
            on_block(part)
    return _concat(parts, X_val is not None)


def _check_int(name, value, low):
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value < low
    ):
        raise ValueError(
            f"{name}={value!r} is not allowed; must be an integer >= {low}"
        )


def _check_divergence(part, parts, max_loss):
    bad = ~np.isfinite(part.train_loss)
    if max_loss is not None:
        bad |= part.train_loss > max_loss
    if not bad.any():
        return
    i = int(np.argmax(bad))
    loss = float(part.train_loss[i])
    reason = "nan" if math.isnan(loss) else "inf" if math.isinf(loss) else "exploded"
    # Keep the epochs up to the bad one; the rest of the block ran on garbage.
    parts[-1] = History(
        part.epochs[: i + 1],
        part.train_loss[: i + 1],
        None if part.val_loss is None else part.val_loss[: i + 1],
    )
    history = _concat(parts, part.val_loss is not None)
    raise TrainingDiverged(int(part.epochs[i]), loss, reason, history, max_loss)


def _concat(parts, with_val):
    if not parts:
        empty = np.empty(0)
        return History(np.empty(0, dtype=int), empty, empty if with_val else None)
    return History.concat(parts)
