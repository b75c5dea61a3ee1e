"""The Hydra callback that turns a multirun into a tracked sweep.

Before any job starts it creates the MLflow store, the experiment and the sweep's
parent run (jobs find it through an environment variable, which joblib workers
inherit). When the sweep ends it reads every job's ``job.yaml``, writes the sweep
table, copies the job with the lowest final validation loss to ``best`` and
closes the parent run.
"""

import atexit
import logging
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd
import yaml
from hydra.experimental.callback import Callback

from backprop_lab import tracking
from backprop_lab.config import ConfigError, check
from backprop_lab.data import read_table, write_table
from backprop_lab.stages import one_line_errors
from backprop_lab.train import interrupt_on_sigterm

log = logging.getLogger(__name__)
# The progress bar over jobs lives in the process that runs the sweep; jobs run by
# joblib workers see None here and leave it alone.
_jobs_bar = None

JOB_FILES = ("initial.npz", "final.npz", "history.csv", "config.yaml", "job.yaml")


class AllJobsFailed(RuntimeError):
    """No job of the sweep finished; there is no best model."""


def sweep_folders(config):
    """``(jobs, best, table)``: where jobs wrote, where best goes, the table path."""
    if config.paths.models is None:
        root = Path(config.hydra.sweep.dir)
        return root, root / "best", root / "sweep.csv"
    models = Path(config.paths.models)
    return models / "sweep", models / "best", Path(config.paths.reports) / "sweep.csv"


def collect(jobs_dir, n_jobs=None):
    """One row per job folder ``0 … n_jobs − 1`` under ``jobs_dir``, in job order.

    Without ``n_jobs``, every numbered folder holding a ``job.yaml``. A sweep
    passes its own job count, so folders left by an earlier sweep into the same
    place are not read.

    Returns
    -------
    DataFrame
        Columns ``job, overrides, status, epochs, train_loss, val_loss, reason``.
    """
    if n_jobs is None:
        names = sorted(
            (p.name for p in jobs_dir.iterdir() if p.name.isdigit()), key=int
        )
    else:
        names = [str(i) for i in range(n_jobs)]
    rows = []
    for name in names:
        if not (jobs_dir / name / "job.yaml").is_file():
            continue
        job = yaml.safe_load((jobs_dir / name / "job.yaml").read_text())
        rows.append(
            {
                "job": name,
                "overrides": " ".join(job["overrides"]),
                "status": job["status"],
                "epochs": job["epochs"],
                "train_loss": job["train_loss"],
                "val_loss": job["val_loss"],
                "reason": job["reason"],
            }
        )
    return pd.DataFrame(rows)


def job_overrides(config):
    """Every job's override list, as Hydra's basic sweeper will expand them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    grid = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in grid.items()]
    arguments += list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [
        job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch
    ]


def check_jobs(config):
    """Check every job's config and the data before any job starts.

    Exits with one line naming the job and the bad value, or the bad file.
    """
    from hydra import compose

    with one_line_errors("sweep"):
        for name in ("train", "val"):
            read_table(Path(config.paths.processed) / f"{name}.csv")
    for overrides in job_overrides(config):
        try:
            check(compose(config.hydra.job.config_name, overrides=list(overrides)))
        except ConfigError as err:
            # paths.* are set by the stage command, not chosen by the user.
            shown = " ".join(o for o in overrides if not o.startswith("paths."))
            where = f" in job {shown}" if shown else ""
            raise SystemExit(f"sweep: config error{where}: {err}") from None


def best_job(table):
    """The row of the finished job with the lowest final validation loss."""
    finished = table[table["status"] == "ok"]
    if finished.empty:
        raise AllJobsFailed(f"all {len(table)} jobs of the sweep failed")
    # idxmin takes the first of equal losses: the lowest job number wins ties.
    return finished.loc[finished["val_loss"].idxmin()]


class SweepCallback(Callback):
    """Parent run and best-model selection around a Hydra multirun."""

    def on_multirun_start(self, config, **kwargs):
        global _jobs_bar
        from tqdm.auto import tqdm

        check_jobs(config)
        interrupt_on_sigterm()
        _jobs_bar = tqdm(desc="sweep", unit="job", disable=None)
        self.config, self.parent = config, None
        if not config.tracking.enabled:
            return
        sweep_id = uuid.uuid4().hex
        tracking.ensure_experiment(config)
        self.parent = tracking.start_run(
            config, f"sweep-{sweep_id[:8]}", {"sweep_id": sweep_id}
        )
        os.environ[tracking.PARENT_ENV] = self.parent
        os.environ[tracking.SWEEP_ENV] = sweep_id
        # A sweep cut short (Ctrl-C, SIGTERM) never reaches on_multirun_end.
        atexit.register(self._end, "KILLED")

    def on_job_end(self, config, job_return, **kwargs):
        if _jobs_bar is not None:
            _jobs_bar.update()

    def on_multirun_end(self, config, **kwargs):
        # Hydra turns a callback's exceptions into warnings: anything that goes
        # wrong here must still fail the stage, so it leaves as SystemExit.
        try:
            self._finish(config)
        except AllJobsFailed as err:
            self._end("FAILED")
            _, _, table_path = sweep_folders(config)
            raise SystemExit(
                f"train: {err}; see {table_path} and the job logs "
                "(a smaller optim.lr usually helps)"
            ) from None
        except Exception as err:
            self._end("FAILED")
            raise SystemExit(f"train: the sweep could not finish: {err!r}") from err

    def _finish(self, config):
        if _jobs_bar is not None:
            _jobs_bar.close()
        jobs_dir, best_dir, table_path = sweep_folders(config)
        table = collect(jobs_dir, len(job_overrides(config)))
        write_table(table, table_path)
        best = best_job(table)
        # Copy beside, then swap in: best/ is never half written.
        staging = best_dir.with_name(f".{best_dir.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in JOB_FILES:
            shutil.copyfile(jobs_dir / best["job"] / name, staging / name)
        shutil.rmtree(best_dir, ignore_errors=True)
        staging.rename(best_dir)
        log.info(
            "best job %s (%s): val loss %.6g; copied to %s",
            best["job"],
            best["overrides"] or "no overrides",
            best["val_loss"],
            best_dir,
        )
        if self.parent is not None:
            tracking.log_metrics(
                config, self.parent, {"best_val_loss": best["val_loss"]}
            )
            tracking.set_tags(config, self.parent, {"best_job": best["job"]})
            tracking.log_artifacts(config, self.parent, [table_path])
        self._end("FINISHED")

    def _end(self, status):
        """End the parent run (once) and any child a killed worker left RUNNING."""
        if self.parent is None:
            return
        parent, self.parent = self.parent, None
        tracking.end_open_children(self.config, parent, "KILLED")
        tracking.end_run(self.config, parent, status)
