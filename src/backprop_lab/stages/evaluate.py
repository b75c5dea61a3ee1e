"""DVC stage `evaluate`: score the best model on the test set.

Writes ``metrics.json`` (the seed's loss, MSE, RMSE and R², overall and per
output) and ``predictions.csv`` to ``paths.reports``, and logs the metrics to the
MLflow run of the job that produced the best model.
"""

import json
import logging
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from sklearn.metrics import mean_squared_error, r2_score

from backprop_lab import tracking
from backprop_lab.config import validate
from backprop_lab.data import inputs_targets, read_table, write_table
from backprop_lab.files import write_text
from backprop_lab.network import MLP, half_squared_error
from backprop_lab.stages import one_line_errors
from backprop_lab.weights import WeightsFileError, load_weights

log = logging.getLogger(__name__)


def score(T, Y):
    """Test metrics of predictions ``Y`` against targets ``T``, both ``(n, k)``.

    Returns
    -------
    dict
        ``loss`` (mean of ½ Σ_k (t_k − y_k)², the seed's loss), ``mse``, ``rmse``
        and ``r2`` over all outputs, and the same per output as ``mse_t1``, ...
    """
    mse = mean_squared_error(T, Y, multioutput="raw_values")
    r2 = r2_score(T, Y, multioutput="raw_values")
    metrics = {
        "loss": half_squared_error(Y, T),
        "mse": float(mse.mean()),
        "rmse": float(np.sqrt(mse.mean())),
        "r2": float(r2.mean()),
    }
    for k in range(T.shape[1]):
        metrics[f"mse_t{k + 1}"] = float(mse[k])
        metrics[f"rmse_t{k + 1}"] = float(np.sqrt(mse[k]))
        metrics[f"r2_t{k + 1}"] = float(r2[k])
    return metrics


def predictions_table(T, Y):
    """Long table ``sample, output, target, prediction`` for DVC's scatter plot."""
    n, k = T.shape
    return pd.DataFrame(
        {
            "sample": np.repeat(np.arange(n), k),
            "output": np.tile([f"t{i + 1}" for i in range(k)], n),
            "target": T.ravel(),
            "prediction": Y.ravel(),
        }
    )


def evaluate(cfg):
    """Score ``<paths.models>/best`` on ``<paths.processed>/test.csv``."""
    best = Path(cfg.paths.models) / "best"
    if not (best / "config.yaml").is_file():
        raise WeightsFileError(
            f"{best}: no trained model here (config.yaml missing); run the train stage"
        )
    job_cfg = OmegaConf.load(best / "config.yaml")
    net = MLP.from_weights(
        load_weights(best / "final.npz"), activation=job_cfg.model.activation
    )
    test = read_table(
        Path(cfg.paths.processed) / "test.csv", net.sizes[0], net.sizes[-1]
    )
    X, T = inputs_targets(test)
    Y = net.predict(X)
    metrics = score(T, Y)

    reports = Path(cfg.paths.reports)
    write_text(reports / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_table(predictions_table(T, Y), reports / "predictions.csv")
    log.info("test metrics: %s", metrics)

    if cfg.tracking.enabled:
        sha = tracking.file_sha256(best / "final.npz")
        run_id = tracking.find_run_by_tag(cfg, "final_sha256", sha)
        if run_id is None:
            log.warning("no MLflow run has the best model (%s); not logged", sha)
        else:
            tracking.log_metrics(
                cfg, run_id, {f"test_{k}": v for k, v in metrics.items()}
            )
    return metrics


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="config")
def main(cfg):
    with one_line_errors("evaluate"):
        evaluate(validate(cfg, "evaluate"))


if __name__ == "__main__":
    main()
