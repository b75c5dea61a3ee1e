"""Resumable training: weights and history every few epochs, in one atomic file.

A checkpoint is named by a hash of everything that decides the job's result (the
result groups of its config, the bytes of its data and of the engine's source), so
a job resumes only from a checkpoint of exactly itself. Epoch ``e`` of :func:`fit`
draws its order from ``(seed, e)``, so the resumed run ends on the same bits.
"""

import hashlib
import logging
import zipfile
from pathlib import Path

import numpy as np
import yaml

from backprop_lab.config import result_config
from backprop_lab.files import atomic_path
from backprop_lab.training import History

log = logging.getLogger(__name__)

# The modules whose code decides what an epoch computes.
ENGINE_FILES = ("activations.py", "network.py", "training.py", "fast.py")


def job_key(cfg, data_files):
    """Hex SHA-256 of the job's result config, its data and the engine's code."""
    digest = hashlib.sha256(yaml.safe_dump(result_config(cfg)).encode())
    package = Path(__file__).parent
    for path in [*data_files, *(package / name for name in ENGINE_FILES)]:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


class Checkpoint:
    """The checkpoint file of one job: ``<folder>/<job key>.npz``."""

    def __init__(self, folder, key):
        self.path = Path(folder) / f"{key}.npz"

    def save(self, weights, history):
        """Write weights ``W1 … WL`` and the history so far, atomically."""
        arrays = {f"W{i}": W for i, W in enumerate(weights, start=1)}
        arrays.update(
            epochs=history.epochs,
            train_loss=history.train_loss,
            val_loss=history.val_loss,
        )
        with atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    def load(self):
        """Return ``(weights, history)``, or None when there is no checkpoint."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                n_layers = sum(1 for key in archive.files if key.startswith("W"))
                weights = [archive[f"W{i}"] for i in range(1, n_layers + 1)]
                history = History(
                    archive["epochs"], archive["train_loss"], archive["val_loss"]
                )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            # Written atomically, so only damage from outside gets here; the
            # epochs it held are lost either way, and training starts over.
            log.warning("%s is damaged (%s); starting over", self.path, err)
            self.remove()
            return None
        log.info("resuming from %s after epoch %d", self.path, history.epochs[-1])
        return weights, history

    def remove(self):
        self.path.unlink(missing_ok=True)
