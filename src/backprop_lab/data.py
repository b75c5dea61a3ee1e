"""The sin dataset, its train/validation/test split, and their CSV files.

Tables have input columns ``x1 … xd`` and target columns ``t1 … tk``. Floats are
written in their shortest round-trip form, which pandas (3.0 and later) reads back
exactly, so a value survives the file bit for bit.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from backprop_lab.files import atomic_path

SPLITS = ("train", "val", "test")


class DataFileError(ValueError):
    """A data file is missing, unreadable or not a table of finite numbers."""


def make_sin(n_samples, n_features, amplitude, noise, seed):
    """Draw the seed's task: ``X ~ U[0, 1)^d`` and ``T = amplitude · sin(X)``.

    Parameters
    ----------
    n_samples, n_features : int
    amplitude : float
    noise : float
        Standard deviation of Gaussian noise added to ``T``; 0 for none.
    seed : int
        Seed of the ``numpy.random.Generator`` behind every draw.

    Returns
    -------
    DataFrame of shape (n_samples, 2 · n_features)
        Columns ``x1 … xd, t1 … td``.
    """
    rng = np.random.default_rng(seed)
    X = rng.random((n_samples, n_features))
    T = amplitude * np.sin(X)
    if noise > 0:
        T = T + rng.normal(0.0, noise, T.shape)
    return to_frame(X, T)


def to_frame(X, T):
    """Put inputs ``X (n, d)`` and targets ``T (n, k)`` in one table."""
    columns = [f"x{i}" for i in range(1, X.shape[1] + 1)]
    columns += [f"t{i}" for i in range(1, T.shape[1] + 1)]
    return pd.DataFrame(np.hstack([X, T]), columns=columns)


def split_frame(frame, test_size, val_size, seed):
    """Split as the seed does, then carve a validation share out of train.

    ``test_size`` of the rows go to test with ``random_state=seed`` (the seed's
    0.33 and 42 give its exact split); ``val_size`` of the remaining train rows
    go to validation, with the same seed.

    Returns
    -------
    dict
        ``{"train": DataFrame, "val": DataFrame, "test": DataFrame}``.
    """
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(frame, test_size=test_size, random_state=seed)
    train, val = train_test_split(train, test_size=val_size, random_state=seed)
    return {"train": train, "val": val, "test": test}


def inputs_targets(frame):
    """Return ``X`` and ``T`` as float arrays from a table's x and t columns."""
    x = [c for c in frame.columns if c.startswith("x")]
    t = [c for c in frame.columns if c.startswith("t")]
    return frame[x].to_numpy(dtype=float), frame[t].to_numpy(dtype=float)


def write_table(frame, path):
    """Write ``frame`` to ``path`` as CSV, atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def read_table(path, n_inputs=None, n_targets=None):
    """Read a table written by :func:`write_table` and check it.

    Parameters
    ----------
    path : str or Path
    n_inputs, n_targets : int, optional
        Expected numbers of ``x`` and ``t`` columns.

    Raises
    ------
    DataFileError
        Naming the file and what is wrong with it: missing, empty, wrong columns,
        non-numeric, NaN or infinite values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: file not found; run the stage that writes it")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as err:
        raise DataFileError(f"{path}: file is empty") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())
        raise DataFileError(f"{path}: not a CSV table ({reason})") from err
    x = [c for c in frame.columns if str(c).startswith("x")]
    t = [c for c in frame.columns if str(c).startswith("t")]
    expected = [f"x{i}" for i in range(1, len(x) + 1)]
    expected += [f"t{i}" for i in range(1, len(t) + 1)]
    if not x or not t or list(frame.columns) != expected:
        raise DataFileError(
            f"{path}: columns {list(frame.columns)}; expected x1 … xd then t1 … tk"
        )
    for name, n, cols in (("input", n_inputs, x), ("target", n_targets, t)):
        if n is not None and len(cols) != n:
            raise DataFileError(f"{path}: {len(cols)} {name} columns; expected {n}")
    if frame.empty:
        raise DataFileError(f"{path}: table has no rows")
    bad = [c for c in frame.columns if not pd.api.types.is_float_dtype(frame[c])]
    bad = [c for c in bad if not pd.api.types.is_integer_dtype(frame[c])]
    if bad:
        raise DataFileError(f"{path}: non-numeric values in columns {bad}")
    values = frame.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        row = int(np.argmax(~np.isfinite(values).all(axis=1)))
        raise DataFileError(
            f"{path}: NaN, infinite or missing value in data row {row + 1}"
        )
    return frame
