"""Fixtures that compose configs and build copies of the project to run DVC in.

A project copy holds the files git would hand a fresh clone plus the untracked
files not ignored (work in progress), committed to a new git repository so that
DVC and the git commit tag work there. The pipeline fixtures run ``dvc repro``
once per session and are shared by the end-to-end tests in test_pipeline.py.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# Stage commands call `python` and `dvc`: the interpreter running the tests.
VENV_BIN = Path(sys.executable).parent
# Environment variables that would send runs to another store or parent run.
FOREIGN_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
    "BACKPROP_LAB_PARENT_RUN_ID",
    "BACKPROP_LAB_SWEEP_ID",
)
TIMEOUT = 900
# Where copies take numba's on-disk cache from: the checkout, then the last copy
# that ran. numba checks each entry against its source file's size and mtime
# (which copies keep), so a stale entry is recompiled, never used.
_numba_cache_source = [ROOT]

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
# Composed configs


@pytest.fixture
def compose_config():
    """``compose(*overrides)``: conf/config.yaml as Hydra composes it for the app."""
    from hydra import compose, initialize_config_dir

    def _compose(*overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


def compose_params(project_dir, out=None, overrides=()):
    """Compose ``<project>/conf`` into ``out`` (default params.yaml) as DVC does."""
    from dvc.utils.hydra import compose_and_dump

    conf = str(Path(project_dir, "conf").resolve())
    out = Path(out) if out is not None else Path(project_dir, "params.yaml")
    compose_and_dump(str(out), conf, None, "config", conf, list(overrides))
    return out


# ---------------------------------------------------------------------------
# Subprocesses


def project_env(project_dir):
    """The environment of a command run in a copy: its own code, store and venv."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    # The venv's editable install points at the original checkout's src; the copy
    # must run its own code (the code its dvc.lock hashes).
    env["PYTHONPATH"] = str(Path(project_dir, "src"))
    env["HYDRA_FULL_ERROR"] = "1"
    return env


def run(args, cwd, check=True):
    """Run ``args`` in ``cwd`` with :func:`project_env`; assert success if ``check``."""
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=project_env(cwd),
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
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


# ---------------------------------------------------------------------------
# Project copies


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


def copy_project(dest):
    """Copy the tracked and untracked-not-ignored files of the project to ``dest``."""
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
    copy_numba_cache(_numba_cache_source[-1], dest)
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


def make_project(dest, edits=None, launcher=None):
    """A committed project copy with ``edits`` ({file: {key: value}}) applied."""
    copy_project(dest)
    edits = {k: dict(v) for k, v in (edits or {}).items()}
    if launcher is not None:
        edits.setdefault("conf/sweep/grid.yaml", {})["launcher"] = launcher
    if edits:
        for name, values in edits.items():
            set_keys(dest / name, values)
        compose_params(dest)
        git(dest, "commit", "-q", "-a", "-m", "test settings")
    return dest


def file_hashes(project_dir, folders=("data", "models", "reports")):
    """``{relative path: sha256}`` of every file under ``folders``."""
    hashes = {}
    for folder in folders:
        for path in sorted(Path(project_dir, folder).rglob("*")):
            if path.is_file():
                rel = path.relative_to(project_dir).as_posix()
                hashes[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@dataclass
class Pipeline:
    """A project copy after ``dvc repro``, with what the run left behind."""

    path: Path
    head: str
    output: str
    lock: dict
    hashes: dict = field(default_factory=dict)

    def tracking_client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=f"sqlite:///{self.path / 'mlflow.db'}")


def run_pipeline(dest, edits=None, launcher=None):
    """Build a copy in ``dest``, run ``dvc repro`` there, snapshot its outputs."""
    make_project(dest, edits, launcher)
    head = git(dest, "rev-parse", "HEAD")
    proc = run(["dvc", "repro"], dest)
    _numba_cache_source.append(dest)
    lock = yaml.safe_load((dest / "dvc.lock").read_text())
    return Pipeline(dest, head, proc.stdout + proc.stderr, lock, file_hashes(dest))


@pytest.fixture(scope="session")
def small_pipeline(tmp_path_factory):
    """The small pipeline, basic launcher: read-only for the tests that use it."""
    return run_pipeline(tmp_path_factory.mktemp("basic") / "project", SMALL)


@pytest.fixture(scope="session")
def small_pipeline_again(tmp_path_factory):
    """A second, independent run of the small pipeline; tests may change it."""
    return run_pipeline(tmp_path_factory.mktemp("again") / "project", SMALL)


@pytest.fixture(scope="session")
def small_pipeline_joblib(tmp_path_factory):
    """The small pipeline with the joblib launcher."""
    dest = tmp_path_factory.mktemp("joblib") / "project"
    return run_pipeline(dest, SMALL, launcher="joblib")


@pytest.fixture(scope="session")
def default_pipeline(tmp_path_factory):
    """The pipeline with the project's own config (1000 samples, 12 jobs)."""
    return run_pipeline(tmp_path_factory.mktemp("default") / "project")
