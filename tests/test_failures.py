"""Failures of a running pipeline: divergence, SIGTERM, resume, parallel logging.

Also the determinism matrix (same bits across reruns, launchers, worker counts and
tracking on or off) and the security rules (no pickle, no eval, the MLflow UI on
127.0.0.1). The end-to-end tests run the train stage in the small project that
conftest.py builds once per session (shared with test_bad_input.py), with outputs
sent to temporary folders; the interruption test works on its own copy.
"""

import ast
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from backprop_lab.checkpoint import Checkpoint
from backprop_lab.data import inputs_targets, make_sin
from backprop_lab.network import MLP
from backprop_lab.training import History, fit
from helpers import (
    HYDRA_ARGS,
    ROOT,
    clone_project,
    edit_config,
    mlflow_client,
    mlflow_runs,
    project_env,
    python,
    run,
)

TRAIN = ("-m", "backprop_lab.train", *HYDRA_ARGS)
PARENT_TAG = "mlflow.parentRunId"
NAN_AT_1 = "training diverged at epoch 1: train loss is nan; try a smaller lr"
# Seconds a subprocess may take to reach a point or to finish.
WAIT = 300


def sweep(project, out, *overrides, env=None, check=True):
    """Run the train stage's sweep in ``project``, its files under ``out``."""
    args = python(
        *TRAIN,
        "--multirun",
        f"paths.models={out / 'models'}",
        f"paths.reports={out / 'reports'}",
        f"hydra.sweep.dir={out / 'sweep'}",
        *overrides,
    )
    return run(args, project, env=env, check=check)


def store(path):
    """Environment that sends every run to the SQLite file ``path``."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{path}"}


def split_runs(runs):
    """``(parents, {run name: child run})``."""
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    children = {r.info.run_name: r for r in runs if PARENT_TAG in r.data.tags}
    return parents, children


def last_line(text):
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def wait_for(predicate, proc, what, timeout=WAIT):
    """Poll ``predicate`` until true; fail if ``proc`` ends first or on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.02)


def terminate_group(proc, timeout=120):
    """SIGTERM ``proc``'s process group; wait until every process in it is gone."""
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return proc.returncode
        assert time.monotonic() < deadline, "processes of the group outlived SIGTERM"
        time.sleep(0.05)


def start(args, cwd, log):
    """Start ``args`` in its own session, output to the file ``log``."""
    with open(log, "w") as fh:
        return subprocess.Popen(
            [str(a) for a in args],
            cwd=cwd,
            env=project_env(cwd),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# ---------------------------------------------------------------------------
# Divergence


@pytest.mark.slow
def test_diverging_jobs_fail_and_the_sweep_goes_on(small_project, tmp_path):
    db = tmp_path / "runs.db"
    proc = sweep(small_project, tmp_path, "optim.lr=0.01,1000", env=store(db))
    models = tmp_path / "models"

    table = pd.read_csv(tmp_path / "reports" / "sweep.csv")
    assert list(table["overrides"]) == [
        "model.hidden=[3] optim.lr=0.01",
        "model.hidden=[3] optim.lr=1000",
        "model.hidden=[8] optim.lr=0.01",
        "model.hidden=[8] optim.lr=1000",
    ]
    assert list(table["status"]) == ["ok", "failed", "ok", "failed"]
    assert list(table["epochs"]) == [20, 1, 20, 1]
    assert list(table["reason"].fillna("")) == ["", NAN_AT_1, "", NAN_AT_1]
    assert f"job-1: {NAN_AT_1}" in proc.stdout + proc.stderr
    for job in (1, 3):
        assert not (models / "sweep" / str(job) / "final.npz").exists()
        history = pd.read_csv(models / "sweep" / str(job) / "history.csv")
        assert list(history["epoch"]) == [1]

    # The best is the finished job of lowest validation loss, never a failed one.
    ok = table[table["status"] == "ok"]
    best_job = str(ok.loc[ok["val_loss"].idxmin(), "job"])
    best = yaml.safe_load((models / "best" / "job.yaml").read_text())
    assert best["status"] == "ok"
    assert (models / "best" / "final.npz").read_bytes() == (
        models / "sweep" / best_job / "final.npz"
    ).read_bytes()

    parents, children = split_runs(mlflow_runs(db))
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert parents[0].data.tags["best_job"] == best_job
    assert sorted(children) == ["job-0", "job-1", "job-2", "job-3"]
    for name in ("job-1", "job-3"):
        tags = children[name].data.tags
        assert children[name].info.status == "FAILED"
        assert tags["failure_epoch"] == "1"
        assert tags["failure_reason"] == NAN_AT_1
    for name in ("job-0", "job-2"):
        assert children[name].info.status == "FINISHED"
        assert "failure_reason" not in children[name].data.tags


@pytest.mark.slow
def test_a_sweep_whose_jobs_all_fail_exits_1(small_project, tmp_path):
    # lr 0.01 starts near loss 11 on this data, above max_loss; lr 1000 gives NaN.
    db = tmp_path / "runs.db"
    overrides = ("model.hidden=[3]", "optim.lr=0.01,1000", "optim.max_loss=1.0")
    proc = sweep(small_project, tmp_path, *overrides, env=store(db), check=False)
    table_path = tmp_path / "reports" / "sweep.csv"

    assert proc.returncode == 1, proc.stderr[-3000:]
    assert last_line(proc.stderr) == (
        f"train: all 2 jobs of the sweep failed; see {table_path} and the job logs "
        "(a smaller optim.lr usually helps)"
    )
    assert "Traceback" not in proc.stderr
    table = pd.read_csv(table_path)
    assert list(table["status"]) == ["failed", "failed"]
    assert list(table["reason"]) == [
        "training diverged at epoch 1: train loss exceeds max_loss=1; try a smaller lr",
        NAN_AT_1,
    ]
    assert not (tmp_path / "models" / "best").exists()

    parents, children = split_runs(mlflow_runs(db))
    assert [p.info.status for p in parents] == ["FAILED"]
    assert {n: r.info.status for n, r in children.items()} == {
        "job-0": "FAILED",
        "job-1": "FAILED",
    }
    assert {r.data.tags["failure_epoch"] for r in children.values()} == {"1"}


# ---------------------------------------------------------------------------
# Interruption and resume


def no_partial_files(project):
    """Temporary files left anywhere, ``.npz`` that do not load, bad CSV tables."""
    problems = []
    for folder in ("data", "models", "reports", "checkpoints"):
        root = project / folder
        problems += [str(p) for p in root.rglob(".*.tmp")]
        for path in root.rglob("*.npz"):
            try:
                with np.load(path, allow_pickle=False) as archive:
                    [archive[key] for key in archive.files]
            except Exception as err:
                problems.append(f"{path}: {err}")
        for path in root.rglob("*.csv"):
            try:
                pd.read_csv(path)
            except Exception as err:
                problems.append(f"{path}: {err}")
    return problems


@pytest.mark.slow
def test_sigterm_during_dvc_repro_leaves_a_state_dvc_repro_completes(
    small_project, tmp_path
):
    copy = clone_project(small_project, tmp_path / "project")
    edit_config(
        copy,
        {
            "conf/optim/sgd.yaml": {"epochs": "200", "engine": "numpy"},
            "conf/checkpoint/default.yaml": {"every": "10"},
        },
    )
    db = copy / "mlflow.db"
    before = {r.info.run_id for r in mlflow_runs(db)}
    # The same sweep, uninterrupted and untracked, to compare the resumed one with.
    ref = tmp_path / "reference"
    reference = start(
        python(
            *TRAIN,
            "--multirun",
            f"paths.models={ref / 'models'}",
            f"paths.reports={ref / 'reports'}",
            f"hydra.sweep.dir={ref / 'sweep'}",
            f"checkpoint.dir={ref / 'checkpoints'}",
            "tracking.enabled=false",
        ),
        copy,
        tmp_path / "reference.log",
    )
    log = tmp_path / "repro.log"
    proc = start(["dvc", "repro", "--single-item", "--force", "train"], copy, log)
    wait_for(lambda: any(copy.glob("checkpoints/*.npz")), proc, "checkpoint")

    returncode = terminate_group(proc)

    assert returncode != 0, log.read_text()[-3000:]
    assert no_partial_files(copy) == []
    runs = [r for r in mlflow_runs(db) if r.info.run_id not in before]
    statuses = [r.info.status for r in runs]
    assert "RUNNING" not in statuses
    parents, children = split_runs(runs)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert "KILLED" in {r.info.status for r in children.values()}

    again = run(["dvc", "repro"], copy)
    assert "resuming from checkpoints/" in again.stdout + again.stderr
    # evaluate is always_changed (it logs to the best run); nothing else may be.
    status = json.loads(run(["dvc", "status", "--json"], copy).stdout)
    assert {k: v for k, v in status.items() if v != ["always changed"]} == {}
    assert not any(copy.glob("checkpoints/*.npz"))
    assert no_partial_files(copy) == []
    assert "RUNNING" not in {r.info.status for r in mlflow_runs(db)}
    # Nothing computed before the signal was lost or changed by resuming.
    assert reference.wait(timeout=WAIT) == 0, (tmp_path / "reference.log").read_text()
    assert job_bytes(copy / "models") == job_bytes(ref / "models")


@pytest.fixture(scope="module")
def joblib_sweep_terminated(small_project, tmp_path_factory):
    """A joblib sweep (2 workers) sent SIGTERM once a checkpoint exists.

    Returns ``(exit code, output, folder, runs)``.
    """
    out = tmp_path_factory.mktemp("joblib-sigterm")
    args = python(
        *TRAIN,
        "--multirun",
        f"paths.models={out / 'models'}",
        f"paths.reports={out / 'reports'}",
        f"hydra.sweep.dir={out / 'sweep'}",
        f"checkpoint.dir={out / 'checkpoints'}",
        "checkpoint.every=10",
        "optim.engine=numpy",
        "optim.epochs=300",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    log = out / "sweep.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            args,
            cwd=small_project,
            env={**project_env(small_project), **store(out / "runs.db")},
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for(lambda: any(out.glob("checkpoints/*.npz")), proc, "checkpoint")
    returncode = terminate_group(proc)
    return returncode, log.read_text(), out, mlflow_runs(out / "runs.db")


@pytest.mark.slow
def test_sigterm_to_a_joblib_sweep_ends_its_runs_killed(joblib_sweep_terminated):
    returncode, output, out, runs = joblib_sweep_terminated
    assert returncode != 0, output[-3000:]
    statuses = [r.info.status for r in runs]
    assert "RUNNING" not in statuses
    parents, children = split_runs(runs)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert "KILLED" in {r.info.status for r in children.values()}
    assert no_partial_files(out) == []


@pytest.mark.slow
def test_sigterm_to_a_joblib_sweep_says_so_in_one_line(joblib_sweep_terminated):
    returncode, output, _, _ = joblib_sweep_terminated
    assert "Traceback" not in output
    assert returncode == 1
    # joblib's resource tracker, a process of its own, may add its shutdown
    # warning after ours; ours is the last line the sweep itself writes.
    ours = [line for line in output.splitlines() if line.startswith("train: ")]
    assert ours[-1].startswith("train: interrupted; a rerun resumes")


def single_run(out, name):
    """A single training (no sweep) into ``out/name``, checkpoints in ``out/ck-name``.

    400 epochs of the numpy engine take a few seconds: time to be interrupted.
    """
    return python(
        *TRAIN,
        f"paths.models={out / name}",
        f"hydra.run.dir={out / ('logs-' + name)}",
        f"checkpoint.dir={out / ('ck-' + name)}",
        "checkpoint.every=5",
        "optim.engine=numpy",
        "optim.epochs=400",
        "tracking.enabled=false",
    )


def interrupt_after_checkpoint(project, out, name):
    """Start :func:`single_run`, SIGTERM it once a checkpoint exists; the exit code."""
    proc = start(single_run(out, name), project, out / f"{name}.log")
    wait_for(lambda: any((out / f"ck-{name}").glob("*.npz")), proc, "checkpoint")
    return terminate_group(proc)


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_bits(small_project, tmp_path):
    straight = start(single_run(tmp_path, "b"), small_project, tmp_path / "b.log")
    assert interrupt_after_checkpoint(small_project, tmp_path, "a") == 1
    assert last_line((tmp_path / "a.log").read_text()) == (
        "train: interrupted; a rerun resumes from the last checkpoint (every 5 "
        f"epochs, in {tmp_path / 'ck-a'}/)"
    )
    assert not (tmp_path / "a" / "run" / "final.npz").exists()

    rerun = run(single_run(tmp_path, "a"), small_project)
    assert straight.wait(timeout=WAIT) == 0, (tmp_path / "b.log").read_text()

    assert re.search(r"resuming from \S+ after epoch \d+", rerun.stdout + rerun.stderr)
    for name in ("initial.npz", "final.npz", "history.csv"):
        a = (tmp_path / "a" / "run" / name).read_bytes()
        assert a == (tmp_path / "b" / "run" / name).read_bytes(), name
    history = pd.read_csv(tmp_path / "a" / "run" / "history.csv")
    assert list(history["epoch"]) == list(range(1, 401))
    assert not any((tmp_path / "ck-a").glob("*.npz"))


@pytest.mark.slow
def test_a_damaged_checkpoint_is_named_not_a_traceback(small_project, tmp_path):
    assert interrupt_after_checkpoint(small_project, tmp_path, "a") == 1
    [checkpoint] = (tmp_path / "ck-a").glob("*.npz")
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])

    rerun = run(single_run(tmp_path, "a"), small_project, check=False)

    output = rerun.stdout + rerun.stderr
    assert "Traceback" not in output
    assert checkpoint.name in output


@pytest.mark.parametrize("engine", ["numpy", "numba"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_fit_resumed_from_a_checkpoint_equals_fit_straight(
    engine, batch_size, tmp_path
):
    if engine == "numba":
        pytest.importorskip("numba")
    X, T = inputs_targets(make_sin(150, 2, 15.0, 0.1, 3))
    data = dict(X=X[:120], T=T[:120], X_val=X[120:], T_val=T[120:])
    settings = dict(lr=0.02, batch_size=batch_size, shuffle=True, seed=11)

    def net():
        return MLP([2, 5, 2], "sigmoid", "uniform", seed=4)

    straight = net()
    whole = fit(straight, **data, **settings, epochs=20, engine=engine)

    first = net()
    head = fit(first, **data, **settings, epochs=10, engine=engine)
    checkpoint = Checkpoint(tmp_path, "job")
    checkpoint.save(first.weights, head)
    weights, saved = checkpoint.load()
    resumed = MLP.from_weights(weights, "sigmoid")
    tail = fit(resumed, **data, **settings, epochs=20, start_epoch=10, engine=engine)

    for W, V in zip(straight.weights, resumed.weights, strict=True):
        assert np.array_equal(W, V)
    joined = History.concat([saved, tail])
    assert np.array_equal(joined.epochs, whole.epochs)
    assert np.array_equal(joined.train_loss, whole.train_loss)
    assert np.array_equal(joined.val_loss, whole.val_loss)


# ---------------------------------------------------------------------------
# Parallel logging and determinism


@pytest.mark.slow
def test_a_parallel_sweep_loses_no_run_and_no_metric_point(small_project, tmp_path):
    db = tmp_path / "runs.db"
    sweep(
        small_project,
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model.hidden=[2],[3],[4],[5]",
        "optim.lr=0.01,0.02,0.03,0.04",
        env=store(db),
    )

    parents, children = split_runs(mlflow_runs(db))
    assert len(parents) == 1
    assert parents[0].info.status == "FINISHED"
    assert sorted(children) == sorted(f"job-{n}" for n in range(16))
    client = mlflow_client(db)
    for name, child in children.items():
        assert child.info.status == "FINISHED"
        assert child.data.tags[PARENT_TAG] == parents[0].info.run_id
        history = pd.read_csv(tmp_path / "models" / "sweep" / name[4:] / "history.csv")
        for key in ("train_loss", "val_loss"):
            points = client.get_metric_history(child.info.run_id, key)
            assert sorted(p.step for p in points) == list(range(1, 21)), (name, key)
            logged = [p.value for p in sorted(points, key=lambda p: p.step)]
            assert logged == list(history[key]), (name, key)


JOB_FILES = ("final.npz", "history.csv")


def job_bytes(models):
    """``{job/file: bytes}`` of every job's final weights and history, and best."""
    found = {}
    for folder in sorted((models / "sweep").iterdir()):
        for name in JOB_FILES:
            found[f"{folder.name}/{name}"] = (folder / name).read_bytes()
    for name in JOB_FILES:
        found[f"best/{name}"] = (models / "best" / name).read_bytes()
    return found


@pytest.mark.slow
def test_outputs_are_the_same_bits_in_every_launcher(small_project, tmp_path):
    # The DVC stage's own run (basic launcher, tracking on) is the reference.
    reference = job_bytes(small_project / "models")
    assert len(reference) == 2 * 5
    variants = {
        "again": (),
        "joblib-2": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
        "joblib-1": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=1"),
        "untracked": ("tracking.enabled=false",),
    }
    procs = {}
    for name, overrides in variants.items():
        out = tmp_path / name
        args = python(
            *TRAIN,
            "--multirun",
            f"paths.models={out / 'models'}",
            f"paths.reports={out / 'reports'}",
            f"hydra.sweep.dir={out / 'sweep'}",
            *overrides,
        )
        procs[name] = start(args, small_project, tmp_path / f"{name}.log")
    for name, proc in procs.items():
        assert proc.wait(timeout=WAIT) == 0, (tmp_path / f"{name}.log").read_text()

    table = (small_project / "reports" / "sweep.csv").read_bytes()
    for name in variants:
        got = job_bytes(tmp_path / name / "models")
        assert sorted(got) == sorted(reference), name
        differ = [key for key in reference if got[key] != reference[key]]
        assert differ == [], name
        if name != "untracked":  # its table lists tracking.enabled=false
            assert (tmp_path / name / "reports" / "sweep.csv").read_bytes() == table


# ---------------------------------------------------------------------------
# Security


def dotted_name(node):
    """``np.load`` for the expression ``np.load``; None if not a plain name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def source_files():
    files = sorted((ROOT / "src" / "backprop_lab").rglob("*.py"))
    assert len(files) > 10
    return files


def test_no_source_loads_pickle_or_evaluates_strings():
    banned = {
        "eval",
        "exec",
        "compile",
        "pickle.load",
        "pickle.loads",
        "pickle.Unpickler",
        "joblib.load",
        "pd.read_pickle",
        "yaml.load",
        "yaml.unsafe_load",
        "yaml.full_load",
    }
    found = []
    for path in source_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names]
                modules += [node.module] if isinstance(node, ast.ImportFrom) else []
                for module in modules:
                    if module and module.split(".")[0] in {"pickle", "dill", "marshal"}:
                        found.append(f"{where}: imports {module}")
            if not isinstance(node, ast.Call):
                continue
            name = dotted_name(node.func)
            if name in banned:
                found.append(f"{where}: calls {name}")
            if name in {"np.load", "numpy.load"}:
                keywords = {k.arg: k.value for k in node.keywords}
                value = keywords.get("allow_pickle")
                if not (isinstance(value, ast.Constant) and value.value is False):
                    found.append(f"{where}: np.load without allow_pickle=False")
    assert found == []


def test_source_text_never_allows_pickle():
    for path in source_files():
        text = path.read_text()
        assert "allow_pickle=True" not in text, path
        assert re.search(r"\b(eval|exec)\(", text) is None, path


def test_the_mlflow_ui_binds_to_localhost():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^ui:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert recipe, "no ui target in the Makefile"
    assert "mlflow ui" in recipe.group(1)
    assert "--host 127.0.0.1" in recipe.group(1)
    assert "0.0.0.0" not in makefile
