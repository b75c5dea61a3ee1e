"""Fixtures that compose configs and run the pipeline in copies of the project.

The pipeline fixtures build a copy (see helpers.py), run ``dvc repro`` there once
per session and are shared by the end-to-end tests.
"""

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, SMALL, file_hashes, git, make_project, mlflow_client, run

CONF = ROOT / "conf"
# Where copies take numba's on-disk cache from: the checkout, then the last copy
# that ran.
_numba_cache_source = [ROOT]


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


# ---------------------------------------------------------------------------
# Pipelines


@dataclass
class Pipeline:
    """A project copy after ``dvc repro``, with what the run left behind."""

    path: Path
    head: str
    output: str
    lock: dict
    hashes: dict = field(default_factory=dict)

    def tracking_client(self):
        return mlflow_client(self.path / "mlflow.db")


def run_pipeline(dest, edits=None, launcher=None):
    """Build a copy in ``dest``, run ``dvc repro`` there, snapshot its outputs."""
    make_project(dest, edits, launcher, numba_cache=_numba_cache_source[-1])
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


@pytest.fixture(scope="session")
def small_project(tmp_path_factory):
    """The small pipeline's folder, for test_bad_input.py and test_failures.py.

    Their tests run stages in it with outputs sent to temporary folders (runs may
    be added to its MLflow store), or change files in a copy of it
    (:func:`helpers.clone_project`).
    """
    return run_pipeline(tmp_path_factory.mktemp("failures") / "project", SMALL).path
