"""Weight files: ``.npz`` archives with one array per layer, keys ``W1 … WL``.

``numpy.savez`` stamps each member with the current time, so two runs with the
same weights would differ byte for byte. We write the archive with a fixed
timestamp instead, to a temporary file renamed into place, so a crash never
leaves half a file and DVC sees the same hash for the same weights.
"""

import zipfile
from pathlib import Path

import numpy as np

from backprop_lab.files import atomic_path

_EPOCH = (1980, 1, 1, 0, 0, 0)


class WeightsFileError(ValueError):
    """A weights file is missing, unreadable or not in the ``W1 … WL`` layout."""


def save_weights(path, weights):
    """Write ``weights`` to ``path`` as an ``.npz`` with keys ``W1 … WL``.

    Parameters
    ----------
    path : str or Path
        Destination, replaced atomically.
    weights : list of ndarray
        ``W_l`` of shape ``(n_l, n_{l-1} + 1)``, bias in the last column.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for layer, W in enumerate(weights, start=1):
            info = zipfile.ZipInfo(f"W{layer}.npy", date_time=_EPOCH)
            with archive.open(info, "w") as member:
                np.lib.format.write_array(
                    member, np.ascontiguousarray(W), allow_pickle=False
                )


def load_weights(path):
    """Read the weights written by :func:`save_weights`, without pickle.

    Returns
    -------
    list of ndarray
        ``[W1, …, WL]`` in layer order.

    Raises
    ------
    WeightsFileError
        (a ``ValueError``) If the file is not an ``.npz`` of keys ``W1 … WL``
        holding 2-D float arrays whose shapes chain as layers do.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path}: file not found; run the stage that writes it")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise WeightsFileError(f"{path}: not a readable weights file ({err})") from err
    expected = [f"W{layer}" for layer in range(1, len(arrays) + 1)]
    if not arrays or sorted(arrays) != sorted(expected):
        raise WeightsFileError(
            f"{path}: keys {sorted(arrays)} are not W1 … WL (one array per layer)"
        )
    weights = [arrays[key] for key in expected]
    for layer, W in enumerate(weights, start=1):
        if W.ndim != 2 or W.dtype.kind != "f":
            raise WeightsFileError(f"{path}: W{layer} must be a 2-D float array")
        if layer > 1 and W.shape[1] != weights[layer - 2].shape[0] + 1:
            raise WeightsFileError(
                f"{path}: W{layer} has shape {W.shape}; expected "
                f"({W.shape[0]}, {weights[layer - 2].shape[0] + 1}) after W{layer - 1}"
            )
    return weights
