"""fit: equal to plain SGD loops from the equations, the seed's task, bad input."""

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from backprop_lab import MLP, TrainingDiverged, fit
from backprop_lab.training import epoch_order

# ---------------------------------------------------------------------------
# Reference: SGD written out from the seed's equations, one sample at a time


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sample_gradients(weights, x, t):
    """``∂E/∂W_l`` for one sample ``x``, ``t`` (1-D), sigmoid hidden layers."""
    a = [x]
    for W in weights[:-1]:
        # z = W [a, 1], a = sigmoid(z)
        a.append(sigmoid(W @ np.append(a[-1], 1.0)))
    # y = z_L
    y = weights[-1] @ np.append(a[-1], 1.0)

    # delta_L = y − t
    delta = y - t
    grads = [None] * len(weights)
    for l in range(len(weights) - 1, -1, -1):
        # grad_l = outer(delta, [a, 1])
        grads[l] = np.outer(delta, np.append(a[l], 1.0))
        if l > 0:
            # delta_{l-1} = (W[:, :-1]ᵀ delta) ⊙ a (1 − a)
            delta = (weights[l][:, :-1].T @ delta) * a[l] * (1.0 - a[l])
    return grads


def reference_sgd(weights, X, T, lr, orders, batch_size=1):
    """SGD over the given per-epoch orders; each step the mean gradient of a batch."""
    weights = [W.copy() for W in weights]
    for order in orders:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            per_sample = [sample_gradients(weights, X[i], T[i]) for i in batch]
            for l, W in enumerate(weights):
                # W −= lr · mean over the batch of grad_l
                W -= lr * sum(g[l] for g in per_sample) / len(batch)
    return weights


def small_task(n=23, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 2))
    return X, 15 * np.sin(X)


def assert_same_weights(actual, expected, tol=1e-12):
    assert len(actual) == len(expected)
    for W, W_ref in zip(actual, expected, strict=True):
        np.testing.assert_allclose(W, W_ref, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------
# fit equals the plain loops


def test_per_sample_sgd_is_the_plain_loop():
    X, T = small_task()
    net = MLP([2, 3, 2], seed=0)
    start = [W.copy() for W in net.weights]
    epochs = 4

    history = fit(
        net, X, T, lr=0.01, epochs=epochs, batch_size=1, shuffle=False, engine="numpy"
    )

    expected = reference_sgd(start, X, T, 0.01, [np.arange(len(X))] * epochs)
    assert_same_weights(net.weights, expected)
    np.testing.assert_array_equal(history.epochs, np.arange(1, epochs + 1))
    assert history.val_loss is None
    final = MLP.from_weights(expected).loss(X, T)
    assert history.train_loss[-1] == pytest.approx(final, rel=1e-12)
    # The updates did something: the plain loop is not trivially the start.
    assert not np.allclose(expected[0], start[0])


def test_per_sample_sgd_with_two_hidden_layers_is_the_plain_loop():
    X, T = small_task(n=11, seed=1)
    net = MLP([2, 4, 3, 2], seed=2)
    start = [W.copy() for W in net.weights]

    fit(net, X, T, lr=0.02, epochs=3, engine="numpy")

    expected = reference_sgd(start, X, T, 0.02, [np.arange(len(X))] * 3)
    assert_same_weights(net.weights, expected)


def test_mini_batches_take_the_mean_gradient_of_consecutive_samples():
    X, T = small_task(n=23)  # batches of 7, 7, 7 and a last one of 2
    net = MLP([2, 3, 2], seed=0)
    start = [W.copy() for W in net.weights]

    fit(net, X, T, lr=0.05, epochs=3, batch_size=7, engine="numpy")

    expected = reference_sgd(start, X, T, 0.05, [np.arange(23)] * 3, batch_size=7)
    assert_same_weights(net.weights, expected)
    # Not the per-sample result: the batch size did change the steps.
    per_sample = reference_sgd(start, X, T, 0.05, [np.arange(23)] * 3)
    assert not np.allclose(expected[0], per_sample[0], rtol=1e-6, atol=0)


def test_one_batch_of_everything_is_full_batch_gradient_descent():
    X, T = small_task(n=10)
    net = MLP([2, 3, 2], seed=0)
    reference = MLP.from_weights(net.weights)

    fit(net, X, T, lr=0.1, epochs=2, batch_size=50, engine="numpy")

    for _ in range(2):
        grads = reference.gradients(X, T)
        for W, grad in zip(reference.weights, grads, strict=True):
            W -= 0.1 * grad
    assert_same_weights(net.weights, reference.weights)


def test_shuffled_epochs_visit_every_sample_once():
    n, seed, epochs = 23, 5, 3
    orders = [epoch_order(n, e, True, seed) for e in range(1, epochs + 1)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    # Each epoch draws its own order.
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], np.arange(n))

    X, T = small_task(n)
    net = MLP([2, 3, 2], seed=0)
    start = [W.copy() for W in net.weights]

    fit(net, X, T, lr=0.01, epochs=epochs, shuffle=True, seed=seed, engine="numpy")

    assert_same_weights(net.weights, reference_sgd(start, X, T, 0.01, orders))


def test_shuffled_mini_batches_follow_the_epoch_orders():
    n, seed = 23, 11
    X, T = small_task(n)
    net = MLP([2, 3, 2], seed=0)
    start = [W.copy() for W in net.weights]
    orders = [epoch_order(n, e, True, seed) for e in (1, 2)]

    fit(
        net,
        X,
        T,
        lr=0.05,
        epochs=2,
        batch_size=7,
        shuffle=True,
        seed=seed,
        engine="numpy",
    )

    expected = reference_sgd(start, X, T, 0.05, orders, batch_size=7)
    assert_same_weights(net.weights, expected)


def test_resuming_draws_the_orders_the_epochs_would_have():
    X, T = small_task()
    whole = MLP([2, 3, 2], seed=0)
    fit(whole, X, T, lr=0.01, epochs=4, shuffle=True, seed=3, engine="numpy")

    resumed = MLP([2, 3, 2], seed=0)
    fit(resumed, X, T, lr=0.01, epochs=2, shuffle=True, seed=3, engine="numpy")
    history = fit(
        resumed,
        X,
        T,
        lr=0.01,
        epochs=4,
        shuffle=True,
        seed=3,
        engine="numpy",
        start_epoch=2,
    )

    np.testing.assert_array_equal(history.epochs, [3, 4])
    for W, W_whole in zip(resumed.weights, whole.weights, strict=True):
        assert np.array_equal(W, W_whole)


@pytest.mark.parametrize("shuffle", [False, True])
def test_fit_never_modifies_the_callers_arrays(shuffle):
    X, T = small_task()
    X_val, T_val = small_task(n=5, seed=9)
    copies = [A.copy() for A in (X, T, X_val, T_val)]

    fit(
        MLP([2, 3, 2], seed=0),
        X,
        T,
        lr=0.01,
        epochs=2,
        batch_size=4,
        shuffle=shuffle,
        seed=1,
        X_val=X_val,
        T_val=T_val,
        engine="numpy",
    )

    for A, copy in zip((X, T, X_val, T_val), copies, strict=True):
        assert np.array_equal(A, copy)


def test_validation_loss_is_scored_after_every_epoch():
    X, T = small_task()
    X_val, T_val = small_task(n=7, seed=4)
    net = MLP([2, 3, 2], seed=0)

    history = fit(
        net, X, T, lr=0.01, epochs=3, X_val=X_val, T_val=T_val, engine="numpy"
    )

    assert history.val_loss.shape == (3,)
    assert history.val_loss[-1] == net.loss(X_val, T_val)
    assert history.train_loss[-1] == net.loss(X, T)
    frame = history.to_frame()
    assert list(frame.columns) == ["epoch", "train_loss", "val_loss"]
    np.testing.assert_array_equal(frame["val_loss"], history.val_loss)


# ---------------------------------------------------------------------------
# Reproducibility


def test_same_shuffle_seed_gives_the_same_bits():
    X, T = small_task()
    runs = []
    for seed in (3, 3, 4):
        net = MLP([2, 3, 2], seed=0)
        history = fit(
            net, X, T, lr=0.05, epochs=3, shuffle=True, seed=seed, engine="numpy"
        )
        runs.append((net.weights, history.train_loss))

    (first, loss), (again, loss_again), (other, _) = runs
    for W, W_again, W_other in zip(first, again, other, strict=True):
        assert np.array_equal(W, W_again)
        assert not np.array_equal(W, W_other)
    assert np.array_equal(loss, loss_again)


# ---------------------------------------------------------------------------
# The seed's task: 15 sin(x) on [0, 1)², a 2-3-2 sigmoid net, per-sample SGD


@pytest.fixture(scope="module")
def sin_split():
    X = np.random.default_rng(0).random((1000, 2))
    T = 15 * np.sin(X)
    return train_test_split(X, T, test_size=0.33, random_state=42)


def train_seed_net(sin_split, lr):
    X_train, X_test, T_train, T_test = sin_split
    net = MLP([2, 3, 2], "sigmoid", init="uniform", seed=0)
    history = fit(net, X_train, T_train, lr=lr, epochs=300, engine="auto")
    return history, net.loss(X_test, T_test)


def test_seed_task_is_learned_with_a_workable_lr(sin_split):
    # lr = 0.03: the seed's own 1e-5 is far too small for 300 epochs (below).
    # Measured with the numpy engine: train 0.0055, test 0.0061.
    history, test_loss = train_seed_net(sin_split, lr=0.03)

    assert sin_split[0].shape == (670, 2)
    assert test_loss <= 0.05
    assert history.train_loss[-1] <= 0.05
    assert history.train_loss[0] > 10 * history.train_loss[-1]


def test_seed_lr_is_far_too_small_for_300_epochs(sin_split):
    # The seed's lr = 1e-5 stalls around a test loss of 12.5 after 300 epochs
    # (the notebook prints about 11 with its own global-RNG draws).
    history, test_loss = train_seed_net(sin_split, lr=1e-5)

    assert test_loss > 5
    assert np.all(np.diff(history.train_loss) < 0)


# ---------------------------------------------------------------------------
# Divergence is reported, never silent


@pytest.mark.parametrize("engine", ["numpy", "auto"])
def test_huge_lr_diverges_with_the_epoch_named(sin_split, engine):
    X_train, X_test, T_train, T_test = sin_split
    net = MLP([2, 3, 2], seed=0)

    with pytest.raises(
        TrainingDiverged,
        match=r"^training diverged at epoch 1: train loss is nan; try a smaller lr$",
    ) as caught:
        fit(
            net,
            X_train,
            T_train,
            lr=1e3,
            epochs=5,
            X_val=X_test,
            T_val=T_test,
            engine=engine,
        )

    error = caught.value
    assert isinstance(error, ArithmeticError)
    assert (error.epoch, error.reason) == (1, "nan")
    np.testing.assert_array_equal(error.history.epochs, [1])
    assert np.isnan(error.history.train_loss[-1])
    assert len(error.history.val_loss) == 1


def test_max_loss_reports_an_explosion(sin_split):
    # lr = 0.5 oscillates (losses 3.9, 4.4, 2.7, 5.0, 16.3 on epochs 1–5):
    # finite throughout, so only the bound can stop it, at epoch 5. At this lr
    # the path is chaotic (rounding differences of 1e-16 grow to O(1) within an
    # epoch), so these numbers hold for the numpy engine only; it is pinned.
    X_train, _, T_train, _ = sin_split
    net = MLP([2, 3, 2], seed=0)

    with pytest.raises(
        TrainingDiverged,
        match=(
            r"^training diverged at epoch 5: train loss exceeds max_loss=10; "
            r"try a smaller lr$"
        ),
    ) as caught:
        fit(
            net,
            X_train,
            T_train,
            lr=0.5,
            epochs=8,
            max_loss=10.0,
            engine="numpy",
            block_epochs=3,
        )

    error = caught.value
    assert (error.epoch, error.reason) == (5, "exploded")
    assert error.loss > 10.0
    np.testing.assert_array_equal(error.history.epochs, [1, 2, 3, 4, 5])
    assert error.history.train_loss[-1] == error.loss
    assert np.all(error.history.train_loss[:-1] <= 10.0)


# ---------------------------------------------------------------------------
# Bad arguments: ValueError naming the argument, the value and what is allowed


@pytest.fixture
def tiny():
    X, T = small_task(n=5)
    return MLP([2, 3, 2], seed=0), X, T


@pytest.mark.parametrize(
    "lr, shown",
    [
        (0, "0"),
        (-1, "-1"),
        (0.0, "0.0"),
        (np.nan, "nan"),
        (np.inf, "inf"),
        (-np.inf, "-inf"),
        (True, "True"),
        ("0.1", "'0.1'"),
    ],
)
def test_lr_must_be_positive_and_finite(tiny, lr, shown):
    net, X, T = tiny
    before = [W.copy() for W in net.weights]
    with pytest.raises(
        ValueError,
        match=rf"^lr={shown} is not allowed; lr must be a positive finite number$",
    ):
        fit(net, X, T, lr=lr, epochs=1, engine="numpy")
    # Bad input stops before any work.
    for W, W_before in zip(net.weights, before, strict=True):
        assert np.array_equal(W, W_before)


def test_lr_may_be_any_real_number_type(tiny):
    net, X, T = tiny
    by_float = MLP.from_weights(net.weights)
    fit(net, X, T, lr=np.float32(0.5), epochs=1, engine="numpy")
    fit(by_float, X, T, lr=float(np.float32(0.5)), epochs=1, engine="numpy")
    assert_same_weights(net.weights, by_float.weights, tol=0)


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, True])
def test_batch_size_must_be_at_least_one(tiny, batch_size):
    net, X, T = tiny
    with pytest.raises(
        ValueError,
        match=(
            rf"^batch_size={batch_size!r} is not allowed; "
            r"must be an integer >= 1$"
        ),
    ):
        fit(net, X, T, lr=0.1, epochs=1, batch_size=batch_size, engine="numpy")


def test_epochs_must_be_at_least_one(tiny):
    net, X, T = tiny
    with pytest.raises(
        ValueError, match=r"^epochs=0 is not allowed; must be an integer >= 1$"
    ):
        fit(net, X, T, lr=0.1, epochs=0, engine="numpy")


def test_unknown_engine(tiny):
    net, X, T = tiny
    with pytest.raises(
        ValueError, match=r"^engine='gpu' is not known; allowed: auto, numpy, numba$"
    ):
        fit(net, X, T, lr=0.1, epochs=1, engine="gpu")


def test_validation_set_must_fit_the_net(tiny):
    net, X, T = tiny
    with pytest.raises(
        ValueError, match=r"^T_val has shape \(5, 3\); expected \(5, 2\)"
    ):
        fit(net, X, T, lr=0.1, epochs=1, X_val=X, T_val=np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"^X_val and T_val must be given together$"):
        fit(net, X, T, lr=0.1, epochs=1, X_val=X)
