"""Job (c), the default pipeline through DVC, and what tracking costs a job.

Used by ``run.py``; each function is one measurement and returns rows (dicts).

- :func:`pipeline_wall`: ``dvc repro --force`` of the committed default pipeline
  in a clone, serial (basic launcher) and parallel (joblib, on every core),
  with seconds per stage read off DVC's output as it arrives.
- :func:`tracking_cost`: one 300-epoch job's MLflow logging, in this process,
  through ``train.JobRun`` as the train stage calls it, next to the naive way
  (one fluent ``mlflow.log_metrics`` call per epoch).
- :func:`fresh_imports` and :func:`sweep_overhead`: what a sweep pays per
  process and per job besides training.

The clone runs its own code (``PYTHONPATH=<clone>/src``): the committed code,
whatever is being edited in the checkout. :func:`tracking_cost` runs in this
process, so it measures the checkout's code.
"""

import collections
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
# Variables that would send runs to another store or parent run.
FOREIGN_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
    "BACKPROP_LAB_PARENT_RUN_ID",
    "BACKPROP_LAB_SWEEP_ID",
)
# Modules a sweep's process should import only when it uses them.
HEAVY = ("mlflow", "numba", "matplotlib", "sklearn", "scipy", "dvc", "pandas")
LAUNCHERS = ("basic", "joblib")


def clone(dest):
    """A fresh clone of the checkout's committed state, as a new user gets it."""
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True)
    return Path(dest)


def project_env(project):
    """Environment of a command in ``project``: the venv, its own code, no store."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    # The venv's editable install points at the checkout's src, not the clone's.
    env["PYTHONPATH"] = str(Path(project, "src"))
    # As tracking.py does on import; `python -c "import mlflow"` must not phone home.
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def timed_run(args, project):
    """Run ``args`` in ``project``; return ``(wall seconds, {label: seconds}, out)``.

    Labels are DVC's stages: a stage lasts from its ``Running stage`` line to the
    next one (or the end), so it includes DVC's bookkeeping around it; the time
    before the first one is DVC's own start.
    """
    marks = {}
    lines = collections.deque(maxlen=200)
    begin = time.perf_counter()
    with subprocess.Popen(
        args,
        cwd=project,
        env=project_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        for line in proc.stdout:
            stage = re.match(r"Running stage '(\w+)'", line)
            if stage:
                marks[stage[1]] = time.perf_counter()
            lines.append(line)
    wall = time.perf_counter() - begin
    out = "".join(lines)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed in {project}:\n{out[-4000:]}")
    ends = [*marks.values(), begin + wall]
    stages = {"dvc start": ends[0] - begin} if marks else {}
    stages |= {name: ends[i + 1] - ends[i] for i, name in enumerate(marks)}
    return wall, stages, out


def set_launcher(project, launcher):
    """Set ``sweep.launcher`` in the clone's params.yaml (dvc.yaml passes it on)."""
    params = Path(project, "params.yaml")
    text, n = re.subn(
        r"^  launcher: \w+$", f"  launcher: {launcher}", params.read_text(), flags=re.M
    )
    if n != 1:
        raise RuntimeError(f"{params}: expected one sweep.launcher line, found {n}")
    params.write_text(text)


def pipeline_wall(project, repeats):
    """(c) Seconds of ``dvc repro --force`` per launcher, median over ``repeats``.

    The first run warms up (numba compiles the clone's engine into its cache,
    the data appear). ``dvc exp run`` is timed too: it also recomposes
    params.yaml from conf/ and records the experiment in git.
    """
    commands = {
        "dvc repro --force, basic": (["dvc", "repro", "--force"], "basic"),
        "dvc repro --force, joblib": (["dvc", "repro", "--force"], "joblib"),
        "dvc exp run --force -S sweep.launcher=joblib": (
            ["dvc", "exp", "run", "--force", "-S", "sweep.launcher=joblib"],
            "basic",
        ),
    }
    timed_run(["dvc", "repro", "--force"], project)
    runs = collections.defaultdict(list)
    # Interleaved, so a busy spell on the machine hits every command alike.
    for _ in range(repeats):
        for name, (args, launcher) in commands.items():
            set_launcher(project, launcher)
            runs[name].append(timed_run(args, project)[:2])
    set_launcher(project, "basic")
    rows = []
    for name, times in runs.items():
        row = {"command": name, "repeats": len(times)}
        row["wall_s"] = median(wall for wall, _ in times)
        for stage in times[0][1]:
            row[f"{stage}_s"] = median(t[1][stage] for t in times)
        rows.append(row)
    return rows


def fresh_imports(project, repeats=5):
    """Wall seconds of a fresh ``python -c`` (start, imports, exit), median."""
    codes = {
        "python -c pass": "pass",
        "python -c 'import backprop_lab.train'": "import backprop_lab.train",
        "python -c 'import mlflow'": "import mlflow",
        # What each joblib worker pays before its first run: the sweep made the
        # store, the worker opens it.
        "import backprop_lab.train, tracking.ensure_experiment (store exists)": (
            "from omegaconf import OmegaConf\n"
            "from backprop_lab import train, tracking\n"
            "tracking.ensure_experiment(OmegaConf.load('params.yaml'))"
        ),
    }
    python = str(VENV_BIN / "python")
    rows = []
    for name, code in codes.items():
        walls = []
        for _ in range(repeats):
            begin = time.perf_counter()
            subprocess.run(
                [python, "-c", code], cwd=project, env=project_env(project), check=True
            )
            walls.append(time.perf_counter() - begin)
        rows.append({"process": name, "repeats": repeats, "wall_s": median(walls)})
    check = (
        "import sys, backprop_lab.train\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules) or 'none')"
    )
    loaded = subprocess.run(
        [python, "-c", check],
        cwd=project,
        env=project_env(project),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    rows[1]["heavy_modules_loaded"] = loaded
    return rows


def sweep_overhead(project, repeats):
    """Seconds a sweep of tiny jobs (1 epoch) spends besides training.

    Per launcher and tracking on or off, the default grid (12 jobs) and one job.
    ``overhead_per_job_s`` is (wall − training) / jobs, the sweep's fixed costs
    spread over its jobs; ``marginal_per_job_s`` is (wall₁₂ − wall₁) / 11, what
    one more job adds. Training is the sum of the jobs' logged seconds (two
    decimals each; a process's first job includes loading numba's cache).
    """
    configs = list(itertools.product(LAUNCHERS, (True, False), (12, 1)))
    walls, trainings = collections.defaultdict(list), collections.defaultdict(list)
    for _ in range(repeats):
        for launcher, tracking, jobs in configs:
            bench = Path(project, "bench")
            subprocess.run(["rm", "-rf", str(bench)], check=True)
            args = [
                *("python", "-m", "backprop_lab.train", "--multirun"),
                *("--config-dir", ".", "--config-name", "pipeline"),
                f"paths.models={bench}/models",
                f"paths.reports={bench}/reports",
                f"hydra.sweep.dir={bench}/sweep",
                f"hydra/launcher={launcher}",
                f"tracking.enabled={str(tracking).lower()}",
                "optim.epochs=1",
            ]
            # The command line wins over the grid: one value each, one job.
            if jobs == 1:
                args += ["model.hidden=[3]", "optim.lr=0.03"]
            wall, _, out = timed_run(args, project)
            seconds = re.findall(r": ok after 1 epochs, .*, ([\d.]+) s$", out, re.M)
            if len(seconds) != jobs:
                raise RuntimeError(f"{len(seconds)} of {jobs} jobs logged:\n{out}")
            walls[launcher, tracking, jobs].append(wall)
            trainings[launcher, tracking, jobs].append(sum(map(float, seconds)))
    rows = []
    for launcher, tracking, jobs in configs:
        wall = median(walls[launcher, tracking, jobs])
        training = median(trainings[launcher, tracking, jobs])
        row = {
            "launcher": launcher,
            "tracking": tracking,
            "jobs": jobs,
            "wall_s": wall,
            "training_s": training,
            "overhead_per_job_s": (wall - training) / jobs,
        }
        if jobs == 12:
            row["marginal_per_job_s"] = (
                wall - median(walls[launcher, tracking, 1])
            ) / 11
        rows.append(row)
    return rows


def scratch_configs(tmp):
    """The default config on data and a fresh SQLite store in ``tmp``.

    Returns ``(tracked, untracked)``, composed from the checkout's conf/, with
    no checkpoints (so fit's blocks are of 3 epochs, as in a 300-epoch job).
    """
    from hydra import compose, initialize_config_dir

    from backprop_lab.stages.generate import generate
    from backprop_lab.stages.split import split

    for key in FOREIGN_ENV:
        os.environ.pop(key, None)
    overrides = [
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        f"paths.raw={tmp}/raw.csv",
        f"paths.processed={tmp}/processed",
        f"checkpoint.dir={tmp}/checkpoints",
        "checkpoint.every=0",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
        untracked = compose("config", overrides=[*overrides, "tracking.enabled=false"])
    generate(cfg)
    split(cfg)
    return cfg, untracked


def train_job_cost(untracked, tmp, repeats):
    """Seconds of ``train_job`` for 1 epoch, untracked, warm: a job's own work."""
    from omegaconf import OmegaConf

    from backprop_lab import train

    cfg = OmegaConf.merge(untracked, {"optim": {"epochs": 1}})
    seconds = []
    for _ in range(repeats + 1):
        begin = time.perf_counter()
        train.train_job(cfg, Path(tmp, "one-epoch"))
        seconds.append(time.perf_counter() - begin)
    return median(seconds[1:])


def tracking_cost(cfg, untracked, tmp, repeats):
    """Seconds of one 300-epoch job's MLflow logging, cold and warm, by call.

    ``cfg`` and ``untracked`` come from :func:`scratch_configs`; the job's files
    from a real untracked job. Each repeat is what ``train.train_job`` does with
    tracking on: ``JobRun`` (run, params), ``add_history`` per block of 3 epochs,
    ``finish`` (metrics, artifacts, plot, tags, end). The first repeat pays this
    process's one-time costs.
    """
    from backprop_lab import tracking, train
    from backprop_lab.training import History

    job_dir = Path(tmp, "job")
    begin = time.perf_counter()
    result = train.train_job(untracked, job_dir)
    seconds = time.perf_counter() - begin
    history = pd.read_csv(job_dir / "history.csv")
    columns = [history[c].to_numpy() for c in ("epoch", "train_loss", "val_loss")]
    parts = [History(*(c[i : i + 3] for c in columns)) for i in range(0, 300, 3)]
    train_file = Path(cfg.paths.processed, "train.csv")

    cold = {}
    if "mlflow" not in sys.modules:
        begin = time.perf_counter()
        import mlflow  # noqa: F401

        cold["import mlflow (in this process)"] = time.perf_counter() - begin
    begin = time.perf_counter()
    tracking.client(cfg)
    cold["MlflowClient (store init)"] = time.perf_counter() - begin
    begin = time.perf_counter()
    tracking.ensure_experiment(cfg)
    cold["ensure_experiment (fresh store: schema)"] = time.perf_counter() - begin

    # Every tracking call JobRun makes, timed where it is looked up.
    calls = [
        (tracking, "start_run"),
        (tracking, "log_params"),
        (tracking, "file_sha256"),
        (tracking.MetricBuffer, "flush"),
        (tracking, "log_artifacts"),
        (tracking, "log_loss_plot"),
        (tracking, "set_tags"),
        (tracking, "end_run"),
    ]
    runs = []
    for i in range(repeats + 1):
        spent = collections.Counter()
        with ExitStack() as stack:
            for owner, name in calls:
                stack.enter_context(
                    mock.patch.object(owner, name, timer(getattr(owner, name), spent))
                )
            t0 = time.perf_counter()
            run = train.JobRun(cfg, f"job-{i}", train_file)
            t1 = time.perf_counter()
            for part in parts:
                run.add_history(part)
            t2 = time.perf_counter()
            run.finish(job_dir, result, seconds)
            t3 = time.perf_counter()
        runs.append(
            {
                "JobRun(): create run, params": t1 - t0,
                "add_history × 100 blocks": t2 - t1,
                "finish(): metrics, artifacts, plot, tags, end": t3 - t2,
                **{f"· {name}": spent[name] for _, name in calls},
                "total": t3 - t0,
            }
        )
    rows = [{"step": k, "first_run_s": v, "warm_run_s": None} for k, v in cold.items()]
    for step in runs[0]:
        warm = median(run[step] for run in runs[1:])
        rows.append({"step": step, "first_run_s": runs[0][step], "warm_run_s": warm})
    rows.append(naive_mlflow(tmp, columns))
    return rows


def timer(call, spent):
    """``call``, adding its seconds to ``spent[call.__name__]``."""

    def timed(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            spent[call.__name__] += time.perf_counter() - begin

    return timed


def naive_mlflow(tmp, columns):
    """The naive way: one fluent ``mlflow.log_metrics`` call per epoch, 300 calls.

    On a fresh SQLite store of its own, after one warm-up run (its one-time
    costs excluded, as for ours).
    """
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp}/naive.db")
    where = Path(tmp, "naive-artifacts").as_uri()
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("naive", where))
    epochs, train_loss, val_loss = columns
    with mlflow.start_run():
        mlflow.log_metrics({"train_loss": 1.0, "val_loss": 1.0}, step=0)
    with mlflow.start_run():
        begin = time.perf_counter()
        for epoch, train, val in zip(epochs, train_loss, val_loss, strict=True):
            mlflow.log_metrics({"train_loss": train, "val_loss": val}, step=int(epoch))
        seconds = time.perf_counter() - begin
    return {
        "step": "naive: mlflow.log_metrics per epoch × 300 (metrics only)",
        "first_run_s": None,
        "warm_run_s": seconds,
    }


def median(values):
    return statistics.median(list(values))


def per_job(fresh, sweep, train_job_s, tracking):
    """A basic sweep's cost per process and per job, from the tables above."""
    wall = {row["process"]: row["wall_s"] for row in fresh}
    imports = wall["python -c 'import backprop_lab.train'"]
    store = wall["import backprop_lab.train, tracking.ensure_experiment (store exists)"]
    marginal = {
        row["tracking"]: row["marginal_per_job_s"]
        for row in sweep
        if row["launcher"] == "basic" and row["jobs"] == 12
    }
    logging_300 = next(row for row in tracking if row["step"] == "total")
    costs = {
        "process start + import backprop_lab.train": imports,
        "MLflow in that process: import, open the store": store - imports,
        "one more job, untracked (Hydra job setup + train_job)": marginal[False],
        "· train_job of 1 epoch (data, files), in process": train_job_s,
        "· so Hydra's job setup and the sweep's check of it": marginal[False]
        - train_job_s,
        "one more job, tracked minus untracked (1 epoch)": marginal[True]
        - marginal[False],
        "MLflow logging of a 300-epoch job, warm": logging_300["warm_run_s"],
    }
    return [{"cost": name, "seconds": value} for name, value in costs.items()]


# Key in results.json, and title as printed.
SECTIONS = {
    "pipeline": "(c) the default pipeline (12 jobs of 300 epochs), seconds",
    "fresh_process": "a fresh process: start, imports, exit (median of 5)",
    "sweep_overhead": "a sweep of 1-epoch jobs: seconds besides training",
    "tracking": "MLflow logging of one 300-epoch job, seconds (warm: median of 5)",
    "per_job": "a basic sweep's fixed costs, per process and per job (derived)",
}


def measure_all(quick):
    """Every measurement above, ``{key of SECTIONS: rows}``."""
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="backprop-lab-bench-") as tmp:
        project = clone(Path(tmp, "project"))
        scratch = Path(tmp, "scratch")
        scratch.mkdir()
        cfg, untracked = scratch_configs(scratch)
        results = {
            "pipeline": pipeline_wall(project, repeats),
            "fresh_process": fresh_imports(project),
            "sweep_overhead": sweep_overhead(project, repeats),
            "tracking": tracking_cost(cfg, untracked, scratch, 2 if quick else 5),
        }
        train_job_s = train_job_cost(untracked, scratch, 5)
    results["per_job"] = per_job(
        results["fresh_process"],
        results["sweep_overhead"],
        train_job_s,
        results["tracking"],
    )
    return results
