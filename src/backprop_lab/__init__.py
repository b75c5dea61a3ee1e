"""backprop-lab: the backpropagation network of the seed notebook, as a library."""

from backprop_lab.network import MLP
from backprop_lab.training import History, TrainingDiverged, fit
from backprop_lab.weights import load_weights, save_weights

__all__ = [
    "MLP",
    "History",
    "TrainingDiverged",
    "fit",
    "load_weights",
    "save_weights",
]
