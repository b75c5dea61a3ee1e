"""Train one network per Hydra job; a multirun is a sweep.

    python -m backprop_lab.train optim.lr=0.01
    python -m backprop_lab.train -m model.hidden=[3],[8],[16,16] optim.lr=0.1,0.01

Each job writes ``initial.npz``, ``final.npz``, ``history.csv``, ``config.yaml``
and ``job.yaml`` (status and final losses) to its folder: Hydra's job folder, or
``<paths.models>/sweep/<job number>`` when ``paths.models`` is set (the DVC stage).
:class:`backprop_lab.sweep.SweepCallback` picks the best job when the sweep ends.
"""

import logging
import os
import signal
import time
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig

from backprop_lab import tracking
from backprop_lab.checkpoint import Checkpoint, job_key
from backprop_lab.config import result_config, validate
from backprop_lab.data import inputs_targets, read_table, write_table
from backprop_lab.files import write_text
from backprop_lab.network import MLP
from backprop_lab.stages import one_line_errors
from backprop_lab.training import History, TrainingDiverged, fit
from backprop_lab.weights import save_weights

log = logging.getLogger(__name__)


def job_folder(cfg, hydra_cfg):
    """Where this job writes: Hydra's folder, else ``<paths.models>/sweep/<num>``.

    A single run (no ``--multirun``) with ``paths.models`` set writes to
    ``<paths.models>/run``.
    """
    if cfg.paths.models is None:
        return Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode.name != "MULTIRUN":
        return Path(cfg.paths.models) / "run"
    return Path(cfg.paths.models) / "sweep" / str(hydra_cfg.job.num)


def train_job(cfg, job_dir, overrides=(), name="train"):
    """Train the network ``cfg`` describes and write its job folder.

    Parameters
    ----------
    cfg : DictConfig
        The job's resolved config (``data``, ``split``, ``model``, ``optim``,
        ``paths``, ``tracking``, ``checkpoint``).
    job_dir : Path
        Folder for the job's files.
    overrides : sequence of str
        The job's command-line overrides, recorded in ``job.yaml``.
    name : str
        Run name in MLflow and label of the progress bar.

    Returns
    -------
    dict
        The content of ``job.yaml``: ``status`` (``"ok"`` or ``"failed"``),
        ``reason``, ``epochs``, ``train_loss``, ``val_loss``, ``overrides``.
    """
    processed = Path(cfg.paths.processed)
    data_files = [processed / "train.csv", processed / "val.csv"]
    X, T = inputs_targets(read_table(data_files[0]))
    X_val, T_val = inputs_targets(read_table(data_files[1]))
    sizes = [X.shape[1], *cfg.model.hidden, T.shape[1]]
    net = MLP(sizes, cfg.model.activation, cfg.model.init, cfg.model.seed)

    job_dir.mkdir(parents=True, exist_ok=True)
    save_weights(job_dir / "initial.npz", net.weights)
    # Only what decides the result: the file is the same under any launcher,
    # store or output folder.
    write_text(job_dir / "config.yaml", yaml.safe_dump(result_config(cfg)))

    every = cfg.checkpoint.every
    checkpoint = Checkpoint(cfg.checkpoint.dir, job_key(cfg, data_files))
    resumed = checkpoint.load() if every else None
    # The epochs a checkpoint already holds, then each block fit runs.
    before = []
    if resumed is not None:
        net.weights, history = resumed
        before = [history]
    parts = list(before)

    run = JobRun(cfg, name, data_files[0]) if cfg.tracking.enabled else None
    progress = _progress(cfg.optim.epochs, name)
    for part in before:
        on_block(part, progress, run)
    start = time.perf_counter()
    result = {"status": "ok", "reason": "", "overrides": list(overrides)}

    def block_done(part):
        on_block(part, progress, run)
        parts.append(part)
        epoch = part.epochs[-1]
        if every and epoch % every == 0 and epoch < cfg.optim.epochs:
            checkpoint.save(net.weights, History.concat(parts))

    try:
        fit(
            net,
            X,
            T,
            lr=cfg.optim.lr,
            epochs=cfg.optim.epochs,
            batch_size=cfg.optim.batch_size,
            shuffle=cfg.optim.shuffle,
            seed=cfg.optim.seed,
            X_val=X_val,
            T_val=T_val,
            engine=cfg.optim.engine,
            max_loss=cfg.optim.max_loss,
            start_epoch=int(before[0].epochs[-1]) if before else 0,
            block_epochs=every or max(1, cfg.optim.epochs // 100),
            on_block=block_done,
        )
        history = History.concat(parts)
    except TrainingDiverged as err:
        log.warning("%s: %s", name, err)
        # err.history holds every epoch of this fit, the bad one included.
        history = History.concat([*before, err.history])
        result.update(status="failed", reason=str(err))
    except BaseException:
        # Ctrl-C, SIGTERM (see main) or a bug: the run ends, the checkpoint stays.
        if run is not None:
            run.end("KILLED")
        raise
    finally:
        progress.close()
    seconds = time.perf_counter() - start

    write_table(history.to_frame(), job_dir / "history.csv")
    if result["status"] == "ok":
        save_weights(job_dir / "final.npz", net.weights)
    result.update(
        epochs=len(history),
        train_loss=float(history.train_loss[-1]),
        val_loss=float(history.val_loss[-1]),
    )
    write_text(job_dir / "job.yaml", yaml.safe_dump(result, sort_keys=True))
    checkpoint.remove()
    log.info(
        "%s: %s after %d epochs, train loss %.6g, val loss %.6g, %.2f s",
        name,
        result["status"],
        result["epochs"],
        result["train_loss"],
        result["val_loss"],
        seconds,
    )
    if run is not None:
        run.finish(job_dir, result, seconds)
    return result


def on_block(part, progress, run):
    """Advance the progress bar and queue the block's losses for MLflow."""
    progress.update(len(part))
    if run is not None:
        run.add_history(part)


class JobRun:
    """The MLflow run of one job: params, buffered metrics, artifacts, status."""

    def __init__(self, cfg, name, train_file):
        self.cfg = cfg
        parent = os.environ.get(tracking.PARENT_ENV)
        tags = {"data_hash": tracking.file_sha256(train_file)}
        if parent:
            tags["sweep_id"] = os.environ.get(tracking.SWEEP_ENV, "")
        self.run_id = tracking.start_run(cfg, name, tags, parent_id=parent)
        tracking.log_params(cfg, self.run_id, tracking.flat_params(cfg))
        self.metrics = tracking.MetricBuffer(cfg, self.run_id)

    def add_history(self, part):
        self.metrics.add("train_loss", part.train_loss, part.epochs)
        self.metrics.add("val_loss", part.val_loss, part.epochs)
        if len(self.metrics.points) >= tracking.BATCH:
            self.metrics.flush()

    def finish(self, job_dir, result, seconds):
        self.metrics.add("seconds", [seconds], [0])
        self.metrics.flush()
        files = [job_dir / n for n in ("initial.npz", "history.csv", "config.yaml")]
        tags = {"status": result["status"]}
        if result["status"] == "ok":
            files.append(job_dir / "final.npz")
            tags["final_sha256"] = tracking.file_sha256(job_dir / "final.npz")
        else:
            tags["failure_reason"] = result["reason"]
            tags["failure_epoch"] = result["epochs"]
        tracking.log_artifacts(self.cfg, self.run_id, files)
        tracking.log_loss_plot(self.cfg, self.run_id, job_dir / "history.csv")
        tracking.set_tags(self.cfg, self.run_id, tags)
        self.end("FINISHED" if result["status"] == "ok" else "FAILED")

    def end(self, status):
        self.metrics.flush()
        tracking.end_run(self.cfg, self.run_id, status)


def interrupt_on_sigterm():
    """Make SIGTERM raise KeyboardInterrupt, so runs end KILLED and files stay whole."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _progress(epochs, name):
    from tqdm.auto import tqdm

    # disable=None: no bar unless the output is a terminal.
    return tqdm(total=epochs, desc=name, unit="epoch", disable=None, leave=False)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg):
    cfg = validate(cfg, "train")
    interrupt_on_sigterm()
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("paths.")]
    name = f"job-{hydra_cfg.job.num}" if hydra_cfg.mode.name == "MULTIRUN" else "train"
    try:
        with one_line_errors(name):
            train_job(cfg, job_folder(cfg, hydra_cfg), overrides, name)
    except KeyboardInterrupt:
        raise SystemExit(
            f"{name}: interrupted; a rerun resumes from the last checkpoint "
            f"(every {cfg.checkpoint.every} epochs, in {cfg.checkpoint.dir}/)"
        ) from None


def cli():
    """``python -m backprop_lab.train``: Ctrl-C or SIGTERM ends in one line."""
    try:
        main()
    except KeyboardInterrupt:
        # A job turns it into SystemExit itself; this one reached the process
        # that waits for joblib's workers.
        raise SystemExit(
            "train: interrupted; a rerun resumes each job from its last checkpoint"
        ) from None


if __name__ == "__main__":
    cli()
