"""One thin Hydra entry point per DVC stage."""

import contextlib

from backprop_lab.data import DataFileError
from backprop_lab.weights import WeightsFileError


@contextlib.contextmanager
def one_line_errors(stage):
    """Turn a bad input file into one line on stderr and exit status 1."""
    try:
        yield
    except (DataFileError, WeightsFileError) as err:
        raise SystemExit(f"{stage}: {err}") from None
