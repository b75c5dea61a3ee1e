"""Speed of our two engines next to their peers, on the same jobs, in one process.

Run ``python benchmarks/run.py`` (``make bench``); ``BENCH_QUICK=1`` runs fewer
epochs and repeats, for a smoke test. It prints tables and writes
``benchmarks/results.json``: per job and runner, the median over repeats of the
time per SGD step and per epoch, and each one's ratio to ours compiled (the
numba engine), so ``ratio 50`` means fifty times slower than ours.

A job is a function returning its steps per epoch and the :class:`Runner` s
that train its net on its data; add a job by writing one more such function
and listing it in :data:`JOBS`. Slow runners train
fewer epochs; times are per step and per epoch, so they compare all the same.
Every runner is warmed up once (numba compiles or loads its cache then), and
BLAS runs on one thread, so no one gets more cores than the compiled loop.

Then ``pipeline.py`` times job (c), the default pipeline through
``dvc repro --force`` in a fresh clone, serial and with the joblib launcher,
and what a sweep pays besides training: process start, imports, Hydra's job
setup, MLflow. Those tables print after the first and go into the same JSON.
"""

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from threadpoolctl import threadpool_info, threadpool_limits

import notebook_loop
import pipeline
from backprop_lab import MLP, fit

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
RESULTS = Path(__file__).with_name("results.json")
OURS = "ours, numba"


@dataclass
class Runner:
    """One way of training a job's net: ``run(epochs)`` trains from scratch."""

    name: str
    run: object
    epochs: int
    note: str = ""


def sin_data(n, seed=0):
    """The seed's task: ``X ~ U[0, 1)²``, ``T = 15 sin X``."""
    X = np.random.default_rng(seed).random((n, 2))
    return X, 15 * np.sin(X)


def ours(engine, weights, activation, X, T, batch_size, lr, X_val=None, T_val=None):
    def run(epochs):
        net = MLP.from_weights(weights, activation)
        fit(
            net,
            X,
            T,
            lr=lr,
            epochs=epochs,
            batch_size=batch_size,
            X_val=X_val,
            T_val=T_val,
            engine=engine,
        )

    return run


def sklearn_regressor(hidden, batch_size, lr, epochs):
    """``MLPRegressor`` set up as our SGD: no momentum, decay, penalty or stopping.

    ``learning_rate_init`` is our ``lr`` unchanged. sklearn's squared loss is
    averaged over the outputs as well as the samples, but only as reported in
    ``loss_curve_``: its backprop starts from ``delta = y − t`` and divides the
    gradients by the batch size alone (``_backprop``, ``_compute_loss_grad``),
    which is exactly our gradient of ``½ Σ_k (t_k − y_k)²``, mean over the
    batch. :func:`sklearn_step_check` measures that they agree.
    """
    return MLPRegressor(
        hidden_layer_sizes=hidden,
        activation="logistic",
        solver="sgd",
        batch_size=batch_size,
        learning_rate="constant",
        learning_rate_init=lr,
        momentum=0.0,
        nesterovs_momentum=False,
        alpha=0.0,
        shuffle=False,
        early_stopping=False,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=epochs + 1,
    )


def sklearn_fit(model, X, T):
    # It warns that max_iter ran out, which is the point of max_iter here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, T)


def sklearn_runner(hidden, X, T, batch_size, lr):
    def run(epochs):
        sklearn_fit(sklearn_regressor(hidden, batch_size, lr, epochs), X, T)

    return run


def sklearn_step_check(weights, X, T, lr):
    """Largest weight difference between sklearn and ours after one epoch.

    Both start from ``weights`` and take per-sample steps in order, so the
    difference is rounding only if their steps are the same.
    """
    model = sklearn_fit(sklearn_regressor((weights[0].shape[0],), 1, lr, 1), X, T)
    model.set_params(warm_start=True)
    model.coefs_ = [W[:, :-1].T.copy() for W in weights]
    model.intercepts_ = [W[:, -1].copy() for W in weights]
    sklearn_fit(model, X, T)
    net = MLP.from_weights(weights, "sigmoid")
    fit(net, X, T, lr=lr, epochs=1, engine="numba")
    return max(
        float(np.max(np.abs(np.column_stack([C.T, b]) - W)))
        for C, b, W in zip(model.coefs_, model.intercepts_, net.weights, strict=True)
    )


def notebook_job():
    """(a) The notebook's job: 2-3-2 sigmoid, per-sample SGD on 670 samples."""
    X, T = sin_data(1000)
    X_train, X_test, T_train, T_test = train_test_split(
        X, T, test_size=0.33, random_state=42
    )
    weights = MLP([2, 3, 2], seed=0).weights
    lr, epochs = 0.01, 300
    slow = 3 if QUICK else 20
    check = sklearn_step_check(weights, X_train, T_train, lr)
    return X_train.shape[0], [
        Runner(
            OURS,
            ours("numba", weights, "sigmoid", X_train, T_train, 1, lr, X_test, T_test),
            epochs,
            "train and test loss every epoch",
        ),
        Runner(
            "ours, numpy",
            ours("numpy", weights, "sigmoid", X_train, T_train, 1, lr, X_test, T_test),
            slow,
            "train and test loss every epoch",
        ),
        Runner(
            "scikit-learn MLPRegressor",
            sklearn_runner((3,), X_train, T_train, 1, lr),
            slow,
            f"train loss only; weights after 1 epoch within {check:.1e} of ours",
        ),
        Runner(
            "the notebook's loop",
            # Its weights have no bias column; our draws without it will do.
            lambda epochs: notebook_loop.run(
                X_train, T_train, X_test, T_test, [W[:, :-1] for W in weights], epochs
            ),
            slow,
            "losses every 10th epoch; no bias; numpy 2 fixes only",
        ),
    ]


def wide_job():
    """(b) A wider net: 2-64-64-2 sigmoid, mini-batches of 32, 100 000 samples."""
    n = 10_000 if QUICK else 100_000
    X, T = sin_data(n)
    weights = MLP([2, 64, 64, 2], init="glorot", seed=0).weights
    lr, batch_size = 0.01, 32
    epochs = 1 if QUICK else 3
    return math.ceil(n / batch_size), [
        Runner(OURS, ours("numba", weights, "sigmoid", X, T, batch_size, lr), epochs),
        Runner(
            "ours, numpy",
            ours("numpy", weights, "sigmoid", X, T, batch_size, lr),
            epochs,
        ),
        Runner(
            "scikit-learn MLPRegressor",
            sklearn_runner((64, 64), X, T, batch_size, lr),
            epochs,
            "train loss accumulated over the batches, not a separate pass",
        ),
    ]


# Title, as printed, and the function that sets the job up.
JOBS = {
    "(a) notebook: 2-3-2 sigmoid, batch 1, 670 samples, lr 0.01": notebook_job,
    "(b) wide: 2-64-64-2 sigmoid, batch 32, 100k samples, lr 0.01": wide_job,
}


def measure(job, steps_per_epoch, runners, repeats):
    """One row per runner: median seconds per epoch and per step over repeats."""
    rows = []
    for runner in runners:
        runner.run(1)
        seconds = []
        for _ in range(repeats):
            begin = time.perf_counter()
            runner.run(runner.epochs)
            seconds.append(time.perf_counter() - begin)
        per_epoch = statistics.median(seconds) / runner.epochs
        rows.append(
            {
                "job": job,
                "runner": runner.name,
                "epochs": runner.epochs,
                "repeats": repeats,
                "steps_per_epoch": steps_per_epoch,
                "us_per_step": 1e6 * per_epoch / steps_per_epoch,
                "ms_per_epoch": 1e3 * per_epoch,
                "note": runner.note,
            }
        )
    ours_row = next(row for row in rows if row["runner"] == OURS)
    for row in rows:
        row["ratio_to_ours"] = row["us_per_step"] / ours_row["us_per_step"]
    return rows


def startup(repeats=5):
    """Seconds to import the package and the compiled engine in a fresh process."""
    code = (
        "import sys, time\n"
        "begin = time.perf_counter()\n"
        "import backprop_lab\n"
        "package = time.perf_counter() - begin\n"
        "numba_loaded = 'numba' in sys.modules\n"
        "begin = time.perf_counter()\n"
        "import backprop_lab.fast\n"
        "engine = time.perf_counter() - begin\n"
        "import numpy as np\n"
        "X = np.zeros((1, 2))\n"
        "begin = time.perf_counter()\n"
        "backprop_lab.fast.numba_epochs(\n"
        "    backprop_lab.MLP([2, 3, 2]), X, X, np.zeros((1, 1), int), 0.1, 1\n"
        ")\n"
        "call = time.perf_counter() - begin\n"
        "print(package, numba_loaded, engine, call)\n"
    )
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        runs.append((float(out[0]), out[1] == "True", float(out[2]), float(out[3])))
    return {
        "import_backprop_lab_s": statistics.median(r[0] for r in runs),
        "numba_imported_by_import_backprop_lab": any(r[1] for r in runs),
        "import_backprop_lab_fast_s": statistics.median(r[2] for r in runs),
        "first_call_s": statistics.median(r[3] for r in runs),
    }


def main():
    machine = {
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scikit-learn": sklearn.__version__,
        "quick": QUICK,
        # Other work on the machine slows every runner; this says how much.
        "load_average_1min_at_start": os.getloadavg()[0],
    }
    torch = importlib.util.find_spec("torch") is not None
    print(" ".join(f"{key}={value}" for key, value in machine.items()))
    if not torch:
        print("PyTorch: not installed, skipped")

    rows = []
    with threadpool_limits(limits=1):
        machine["blas"] = sorted(
            f"{pool['internal_api']} {pool['version']} x{pool['num_threads']}"
            for pool in threadpool_info()
        )
        print("blas:", ", ".join(machine["blas"]))
        for job, make in JOBS.items():
            steps_per_epoch, runners = make()
            rows += measure(job, steps_per_epoch, runners, 2 if QUICK else 5)
    table = pd.DataFrame(rows)
    shown = table[
        [
            "job",
            "runner",
            "epochs",
            "us_per_step",
            "ms_per_epoch",
            "ratio_to_ours",
            "note",
        ]
    ]
    print(shown.to_markdown(index=False, floatfmt=".3g"))

    start = startup()
    print(
        f"\nfresh process, cache warm: import backprop_lab "
        f"{start['import_backprop_lab_s']:.3f} s (numba imported: "
        f"{start['numba_imported_by_import_backprop_lab']}), "
        f"import backprop_lab.fast {start['import_backprop_lab_fast_s']:.3f} s, "
        f"first call {start['first_call_s']:.3f} s"
    )

    sections = pipeline.measure_all(QUICK)
    for key, section_rows in sections.items():
        print(f"\n{pipeline.SECTIONS[key]}")
        frame = pd.DataFrame(section_rows).astype(object)
        frame = frame.where(frame.notna(), None)
        print(frame.to_markdown(index=False, floatfmt=".3g", missingval=""))

    RESULTS.write_text(
        json.dumps(
            {
                "machine": machine,
                "pytorch": "not installed, skipped" if not torch else "not run",
                "startup": start,
                "rows": rows,
                **sections,
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
