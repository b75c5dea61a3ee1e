"""Helpers for the tests that run the project's commands in copies of the project.

A project copy holds the files git would hand a fresh clone plus the untracked
files not ignored (work in progress), committed to a new git repository so that
DVC and the git commit tag work there. A command run in a copy runs the copy's own
code with the venv's tools, and nothing in the caller's environment sends its runs
to another store or changes Hydra's messages. The fixtures are in conftest.py.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Stage commands call `python` and `dvc`: the interpreter running the tests.
VENV_BIN = Path(sys.executable).parent
# Variables that would send runs to another store or parent run, or make Hydra
# print a full stack trace instead of its one-line messages; every MLFLOW_*
# variable goes too.
FOREIGN_ENV = (
    "HYDRA_FULL_ERROR",
    "BACKPROP_LAB_PARENT_RUN_ID",
    "BACKPROP_LAB_SWEEP_ID",
)
# The Hydra arguments of the stage commands in dvc.yaml.
HYDRA_ARGS = ("--config-dir", ".", "--config-name", "pipeline")
OUTPUT_FOLDERS = ("data", "models", "reports")
# Seconds a command may take: the longest, the default pipeline's dvc repro, takes
# about 30.
TIMEOUT = 600

# A small pipeline for the end-to-end tests: 4 jobs of 20 epochs on 200 samples.
SMALL = {
    "conf/data/sin.yaml": {"n_samples": "200"},
    "conf/optim/sgd.yaml": {"epochs": "20"},
    "conf/sweep/grid.yaml": {"model.hidden": '"[3],[8]"', "optim.lr": '"0.01,0.03"'},
}
SMALL_EPOCHS = 20
SMALL_GRID = [
    "model.hidden=[3] optim.lr=0.01",
    "model.hidden=[3] optim.lr=0.03",
    "model.hidden=[8] optim.lr=0.01",
    "model.hidden=[8] optim.lr=0.03",
]


# ---------------------------------------------------------------------------
# Subprocesses


def project_env(project):
    """The environment of a command run in ``project``: its own code and the venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in FOREIGN_ENV and not k.startswith("MLFLOW_")
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    # The venv's editable install points at the checkout, which others edit while
    # the tests run; the copy must run its own code (the code its dvc.lock hashes).
    env["PYTHONPATH"] = str(Path(project, "src"))
    return env


def run(args, cwd, env=None, check=True, timeout=TIMEOUT):
    """Run ``args`` in the project ``cwd``, ``env`` added to :func:`project_env`.

    Returns the completed process, its output as text; asserts exit status 0 when
    ``check``.
    """
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**project_env(cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(map(str, args))} exited with {proc.returncode} in {cwd}\n"
            f"--- stdout (end)\n{proc.stdout[-3000:]}\n"
            f"--- stderr (end)\n{proc.stderr[-6000:]}"
        )
    return proc


def git(cwd, *args):
    """Run git with a fixed identity; return its stdout."""
    ident = ["-c", "user.name=pytest", "-c", "user.email=pytest@example.invalid"]
    return run(["git", *ident, *args], cwd).stdout.strip()


def python(*args):
    """The command ``python *args`` with the venv's interpreter."""
    return [str(VENV_BIN / "python"), *args]


# ---------------------------------------------------------------------------
# Configs


def set_keys(path, values):
    """Set top-level or indented ``key: value`` lines of a YAML file, in place.

    Each key must occur exactly once, so a renamed key fails here rather than
    silently leaving the default in place.
    """
    text = path.read_text()
    for key, value in values.items():
        text, n = re.subn(
            rf"^(\s*){re.escape(key)}:.*$", rf"\g<1>{key}: {value}", text, flags=re.M
        )
        assert n == 1, f"{path}: key {key!r} found {n} times"
    path.write_text(text)


def compose_params(project, out=None, overrides=()):
    """Compose ``<project>/conf`` into ``out`` (default params.yaml) as DVC does."""
    from dvc.utils.hydra import compose_and_dump

    conf = str(Path(project, "conf").resolve())
    out = Path(out) if out is not None else Path(project, "params.yaml")
    compose_and_dump(str(out), conf, None, "config", conf, list(overrides))
    return out


def edit_config(project, edits):
    """Apply ``{file: {key: value}}`` to the files of ``<project>/conf``, recompose."""
    for name, values in edits.items():
        set_keys(Path(project, name), values)
    compose_params(project)


# ---------------------------------------------------------------------------
# Project copies


def copy_project(dest, numba_cache=ROOT):
    """Copy the tracked and untracked-not-ignored files of the project to ``dest``.

    numba's cache files come from the project ``numba_cache``; numba checks each
    entry against its source file's size and mtime (which copies keep), so a stale
    entry is recompiled, never used.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    dest.mkdir(parents=True, exist_ok=True)
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the worktree but still tracked
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name)
    copy_numba_cache(numba_cache, dest)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "copy of the project")
    return dest


def copy_numba_cache(source, dest):
    """Copy numba's cache files (git-ignored) of ``source`` to the same places."""
    for path in Path(source, "src").rglob("__pycache__/*.nb[ic]"):
        target = dest / path.relative_to(source)
        if target.parent.parent.is_dir():
            target.parent.mkdir(exist_ok=True)
            shutil.copy2(path, target)


def make_project(dest, edits=None, launcher=None, numba_cache=ROOT):
    """A committed project copy with ``edits`` ({file: {key: value}}) applied."""
    copy_project(dest, numba_cache)
    edits = {k: dict(v) for k, v in (edits or {}).items()}
    if launcher is not None:
        edits.setdefault("conf/sweep/grid.yaml", {})["launcher"] = launcher
    if edits:
        edit_config(dest, edits)
        git(dest, "commit", "-q", "-a", "-m", "test settings")
    return dest


def clone_project(project, dest):
    """A full copy (git, DVC cache, MLflow store) for tests that change files."""
    shutil.copytree(project, dest, symlinks=True, ignore=shutil.ignore_patterns("logs"))
    return dest


def sha256(path):
    """The SHA-256 of the file ``path``, in hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_hashes(project, folders=OUTPUT_FOLDERS):
    """``{relative path: sha256}`` of every file under ``folders`` of ``project``."""
    hashes = {}
    for folder in folders:
        for path in sorted(Path(project, folder).rglob("*")):
            if path.is_file():
                hashes[path.relative_to(project).as_posix()] = sha256(path)
    return hashes


# ---------------------------------------------------------------------------
# MLflow


def mlflow_client(db):
    """A client of the SQLite store ``db``."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{Path(db).resolve()}")


def mlflow_runs(db):
    """Every run in the SQLite store ``db``, all experiments."""
    client = mlflow_client(db)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=50_000) if ids else []


def run_statuses(db):
    """``{run id: status}`` of the store ``db``."""
    return {r.info.run_id: r.info.status for r in mlflow_runs(db)}
