"""MLflow: the experiment, sweep (parent) and job (child) runs, batched metrics.

Everything goes through ``MlflowClient`` with explicit run ids, so a job in a
joblib worker process logs to the parent run its sweep created. mlflow is
imported inside the functions: the stages that never track don't pay for it.
"""

import functools
import hashlib
import logging
import os
import subprocess
import time
from pathlib import Path

from backprop_lab.config import result_config

log = logging.getLogger(__name__)
# MLflow 3 reports usage to a server of its own unless told not to; a pipeline
# that must run offline and the same everywhere opts out before mlflow is
# imported (an explicit MLFLOW_DISABLE_TELEMETRY=false still wins).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PARENT_ENV = "BACKPROP_LAB_PARENT_RUN_ID"
SWEEP_ENV = "BACKPROP_LAB_SWEEP_ID"
# log_batch accepts at most 1000 metrics per call.
BATCH = 1000
# Parallel jobs share one SQLite file: a write that finds it locked waits and
# tries again, up to RETRIES times with doubling pauses (about 25 s in all).
RETRIES = 10


def tracking_uri(cfg):
    """The store: ``MLFLOW_TRACKING_URI`` when set, else ``cfg.tracking.uri``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.uri


def client(cfg):
    """An ``MlflowClient`` on this config's store (one per store and process)."""
    return _client(tracking_uri(cfg))


@functools.cache
def _client(uri):
    from mlflow.tracking import MlflowClient

    return _Retrying(MlflowClient(tracking_uri=uri))


class _Retrying:
    """An ``MlflowClient`` whose calls are retried while the store is locked."""

    def __init__(self, wrapped):
        self._wrapped = wrapped

    def __getattr__(self, name):
        attr = getattr(self._wrapped, name)
        return functools.partial(_with_retries, attr) if callable(attr) else attr


def _with_retries(call, *args, **kwargs):
    for attempt in range(RETRIES):
        try:
            return call(*args, **kwargs)
        except Exception as err:
            if "locked" not in str(err) or attempt == RETRIES - 1:
                raise
            log.debug("store locked; retry %d of %s", attempt + 1, call.__name__)
            time.sleep(0.05 * 2**attempt)


def ensure_experiment(cfg):
    """Create the store and the experiment if missing; return the experiment id.

    Called once by the sweep before any job starts: parallel jobs that create a
    SQLite store at the same moment race on its schema.
    """
    mlflow_client = client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is not None:
        return experiment.experiment_id
    uri = tracking_uri(cfg)
    location = None
    if uri.startswith("sqlite:"):
        # Beside the SQLite file, not in ./mlruns (a folder that would send a
        # later run without a URI back to MLflow's retired file store).
        db = Path(uri.removeprefix("sqlite:///"))
        location = (db.parent.resolve() / "mlartifacts").as_uri()
    return mlflow_client.create_experiment(
        cfg.tracking.experiment, artifact_location=location
    )


def flat_params(cfg):
    """The result groups of the config as ``{"optim.lr": "0.01", ...}``.

    Lists keep their YAML flow form (``model.hidden`` → ``[16, 16]``) so a sweep's
    runs compare side by side on one key.
    """
    flat = {}

    def walk(prefix, node):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(f"{name}.", value)
            else:
                flat[name] = str(value)

    walk("", result_config(cfg))
    return flat


@functools.cache
def git_commit():
    """The project's current git commit, or ``"unknown"`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def file_sha256(path):
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def start_run(cfg, name, tags, parent_id=None):
    """Create a run (a child of ``parent_id`` when given) and return its id."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    tags = {"git_commit": git_commit(), **tags}
    if parent_id:
        tags[MLFLOW_PARENT_RUN_ID] = parent_id
    run = client(cfg).create_run(
        ensure_experiment(cfg), run_name=name, tags={k: str(v) for k, v in tags.items()}
    )
    return run.info.run_id


def log_params(cfg, run_id, params):
    """Log ``params`` (a dict) in batches of at most 100."""
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    mlflow_client = client(cfg)
    for i in range(0, len(items), 100):
        mlflow_client.log_batch(run_id, params=items[i : i + 100], synchronous=True)


class MetricBuffer:
    """Collect ``(key, value, step)`` points and send them with ``log_batch``."""

    def __init__(self, cfg, run_id):
        self.cfg, self.run_id, self.points = cfg, run_id, []

    def add(self, key, values, steps):
        """Queue ``values[i]`` at ``steps[i]`` under ``key``."""
        self.points += [
            (key, float(v), int(s)) for v, s in zip(values, steps, strict=True)
        ]

    def flush(self):
        """Send what is queued, 1000 points per call."""
        from mlflow.entities import Metric

        if not self.points:
            return
        mlflow_client = client(self.cfg)
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, s) for k, v, s in self.points]
        for i in range(0, len(metrics), BATCH):
            mlflow_client.log_batch(
                self.run_id, metrics=metrics[i : i + BATCH], synchronous=True
            )
        self.points = []


def log_metrics(cfg, run_id, metrics):
    """Log a dict of final metrics at step 0, in one call."""
    buffer = MetricBuffer(cfg, run_id)
    for key, value in metrics.items():
        buffer.add(key, [value], [0])
    buffer.flush()


def set_tags(cfg, run_id, tags):
    """Set several tags in one call."""
    from mlflow.entities import RunTag

    client(cfg).log_batch(
        run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True
    )


def log_artifacts(cfg, run_id, paths):
    """Upload files to the run's artifact root."""
    mlflow_client = client(cfg)
    for path in paths:
        mlflow_client.log_artifact(run_id, str(path))


def end_run(cfg, run_id, status="FINISHED"):
    """Mark a run ``FINISHED``, ``FAILED`` or ``KILLED``."""
    client(cfg).set_terminated(run_id, status=status)


def end_open_children(cfg, parent_id, status="KILLED"):
    """End the children of ``parent_id`` still RUNNING (jobs cut short)."""
    mlflow_client = client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.tracking.experiment)
    runs = mlflow_client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}' "
        "and attributes.status = 'RUNNING'",
    )
    for run in runs:
        mlflow_client.set_terminated(run.info.run_id, status=status)


def find_run_by_tag(cfg, key, value):
    """The newest run of the experiment whose tag ``key`` equals ``value``, or None."""
    mlflow_client = client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        return None
    runs = mlflow_client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.{key} = '{value}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_loss_plot(cfg, run_id, history_csv):
    """Draw train and validation loss per epoch and upload it as ``loss_curve.png``."""
    import tempfile

    import pandas as pd
    from matplotlib.figure import Figure

    # A bare Figure (no pyplot): no global state, and a third of the time.
    history = pd.read_csv(history_csv)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(history["epoch"], history["train_loss"], label="train")
    ax.plot(history["epoch"], history["val_loss"], label="validation")
    ax.set(xlabel="epoch", ylabel="loss (mean of ½ Σ (t − y)²)", yscale="log")
    ax.legend()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "loss_curve.png"
        fig.savefig(path, dpi=100)
        client(cfg).log_artifact(run_id, str(path))
