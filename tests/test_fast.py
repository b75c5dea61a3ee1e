"""The compiled engine: equal to the numpy one, chosen by auto, loud on divergence."""

import importlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("numba")

from backprop_lab import MLP, TrainingDiverged, fast, fit, training  # noqa: E402

ACTIVATIONS = ["sigmoid", "tanh", "relu", "identity"]
# Glorot for the saturating ones, He for relu: deep nets then neither explode
# nor die, so the comparison below runs on a path that actually learns.
INIT = {"sigmoid": "glorot", "tanh": "glorot", "relu": "he", "identity": "glorot"}
TOL = 1e-10


def random_case(activation, depth, batch_size, shuffle, with_val):
    """A net of ``depth`` layers of random sizes and a smooth task to fit.

    Hidden and output layers draw up to 9 units, so both the four-row blocks and
    the leftover rows of the compiled forward pass are exercised.
    """
    key = [ACTIVATIONS.index(activation), depth, batch_size, shuffle, with_val]
    rng = np.random.default_rng(key)
    sizes = [int(rng.integers(1, 5))]
    sizes += [int(n) for n in rng.integers(1, 10, depth - 1)]
    sizes += [int(rng.integers(1, 7))]
    net = MLP(sizes, activation, init=INIT[activation], seed=int(rng.integers(1000)))
    # 45 samples: batches of 7 leave 3 over, batches of 32 leave 13.
    mix = rng.normal(size=(sizes[0], sizes[-1]))
    X = rng.random((45, sizes[0]))
    T = np.sin(X @ mix)
    X_val = rng.random((11, sizes[0])) if with_val else None
    T_val = np.sin(X_val @ mix) if with_val else None
    return net, X, T, X_val, T_val


def max_relative_difference(actual, expected):
    return float(np.max(np.abs(actual - expected)) / max(1.0, np.max(np.abs(expected))))


@pytest.mark.parametrize("with_val", [False, True], ids=["no-val", "val"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
@pytest.mark.parametrize("batch_size", [1, 7, 32])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_numba_engine_equals_numpy_engine(
    activation, depth, batch_size, shuffle, with_val
):
    net, X, T, X_val, T_val = random_case(
        activation, depth, batch_size, shuffle, with_val
    )
    initial = [W.copy() for W in net.weights]
    runs = {}
    for engine in ("numpy", "numba"):
        copy = MLP.from_weights(initial, activation)
        history = fit(
            copy,
            X,
            T,
            lr=0.05,
            epochs=4,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=7,
            X_val=X_val,
            T_val=T_val,
            engine=engine,
        )
        runs[engine] = copy, history

    (net_np, hist_np), (net_nb, hist_nb) = runs["numpy"], runs["numba"]
    for W_nb, W_np, W_0 in zip(net_nb.weights, net_np.weights, initial, strict=True):
        assert W_nb.shape == W_np.shape
        assert max_relative_difference(W_nb, W_np) <= TOL
        # Not a vacuous match: training moved the weights (all of them, unless
        # a layer of dead relu units blocks the gradient to the layers below).
        assert activation == "relu" or not np.array_equal(W_np, W_0)
    assert not np.array_equal(net_np.weights[-1], initial[-1])
    np.testing.assert_array_equal(hist_nb.epochs, [1, 2, 3, 4])
    assert np.all(np.isfinite(hist_np.train_loss))
    assert max_relative_difference(hist_nb.train_loss, hist_np.train_loss) <= TOL
    if with_val:
        assert max_relative_difference(hist_nb.val_loss, hist_np.val_loss) <= TOL
    else:
        assert hist_nb.val_loss is None


def test_weights_are_updated_in_place_in_the_callers_arrays():
    net = MLP([2, 5, 3, 2], "tanh", init="glorot", seed=1)
    arrays = list(net.weights)
    before = [W.copy() for W in arrays]
    X = np.random.default_rng(2).random((20, 2))
    orders = np.stack([np.arange(20), np.arange(20)[::-1]])

    train_loss, val_loss = fast.numba_epochs(net, X, np.sin(X), orders, 0.1, 3)

    assert all(W is A for W, A in zip(net.weights, arrays, strict=True))
    assert not any(np.array_equal(W, B) for W, B in zip(arrays, before, strict=True))
    assert train_loss.shape == (2,)
    assert val_loss is None
    assert train_loss[-1] == pytest.approx(net.loss(X, np.sin(X)), rel=1e-12)


def test_auto_engine_is_the_compiled_one():
    assert training.get_engine("auto") is fast.numba_epochs
    assert training.get_engine("numba") is fast.numba_epochs


def test_without_numba_auto_falls_back_to_numpy(monkeypatch):
    # None in sys.modules makes `import numba` raise ImportError, as when it is
    # not installed; the engine module must then fail to import, not half-work.
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.delitem(sys.modules, "backprop_lab.fast")

    with pytest.raises(ImportError):
        importlib.import_module("backprop_lab.fast")
    assert training.get_engine("auto") is training.numpy_epochs
    with pytest.raises(ValueError, match=r"^engine='numba' needs numba"):
        training.get_engine("numba")


def seed_task():
    X = np.random.default_rng(0).random((100, 2))
    return X, 15 * np.sin(X)


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_huge_lr_diverges_with_the_epoch_named(engine):
    X, T = seed_task()
    net = MLP([2, 3, 2], seed=0)

    with pytest.raises(
        TrainingDiverged,
        match=r"^training diverged at epoch 1: train loss is nan; try a smaller lr$",
    ) as caught:
        fit(net, X, T, lr=1e3, epochs=5, X_val=X, T_val=T, engine=engine)

    assert (caught.value.epoch, caught.value.reason) == (1, "nan")
    assert np.isnan(caught.value.history.val_loss[-1])


def test_max_loss_is_checked_on_the_compiled_losses():
    # Epoch 1 of the seed's task from uniform weights scores well above 5, on
    # either engine: the bound trips at once, away from any chaotic path.
    X, T = seed_task()
    net = MLP([2, 3, 2], seed=0)

    with pytest.raises(
        TrainingDiverged, match=r"^training diverged at epoch 1: train loss exceeds"
    ) as caught:
        fit(net, X, T, lr=1e-3, epochs=3, max_loss=5.0, engine="numba")

    assert caught.value.reason == "exploded"
    assert caught.value.loss > 5.0


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nan_propagates_without_a_warning(activation):
    # Called directly, outside fit's np.errstate: nothing compiled may warn, and
    # a NaN weight must reach the losses (relu must not turn it into 0).
    X, T = seed_task()
    net = MLP([2, 3, 2], activation, seed=0)
    net.weights[0][0, 0] = np.nan
    orders = np.arange(100)[None, :]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_loss, val_loss = fast.numba_epochs(net, X, T, orders, 0.01, 1, X, T)

    assert np.isnan(train_loss[0])
    assert np.isnan(val_loss[0])
    assert np.isnan(net.weights[-1]).any()


def run_python(code):
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_importing_the_package_leaves_numba_alone():
    # numba takes a good part of a second to import; only choosing the engine
    # may pay for it.
    assert run_python("import sys, backprop_lab; print('numba' in sys.modules)") == (
        "False"
    )


def test_a_second_process_loads_the_compiled_code_from_the_cache():
    net = MLP([2, 3, 2], seed=0)
    X, T = seed_task()
    fast.numba_epochs(net, X, T, np.arange(100)[None, :], 0.01, 1)

    code = (
        "import numpy as np\n"
        "from backprop_lab import MLP, fast\n"
        "X = np.random.default_rng(0).random((10, 2))\n"
        "fast.numba_epochs(MLP([2, 3, 2]), X, X, np.arange(10)[None, :], 0.1, 1)\n"
        "stats = fast.compiled_epochs.stats\n"
        "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n"
    )
    assert run_python(code) == "1 0"
