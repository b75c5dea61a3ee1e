"""The pipeline end to end: DVC stages, the Hydra sweep, MLflow runs, reproducibility.

The slow tests run ``dvc repro`` in copies of the project (see conftest.py and
helpers.py); a small config (200 samples, 20 epochs, a grid of 4) keeps them
quick, except the quality check, which needs the project's own config.
"""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from backprop_lab import MLP, load_weights
from backprop_lab.data import inputs_targets, read_table
from backprop_lab.sweep import AllJobsFailed, best_job, collect
from backprop_lab.tracking import flat_params
from helpers import (
    ROOT,
    SMALL_EPOCHS,
    SMALL_GRID,
    compose_params,
    file_hashes,
    run,
    sha256,
)

JOB_FILES = ("initial.npz", "final.npz", "history.csv", "config.yaml", "job.yaml")
RUN_ARTIFACTS = {"initial.npz", "final.npz", "history.csv", "config.yaml"}
PARENT_TAG = "mlflow.parentRunId"
NOTEBOOK_JOB = "model.hidden=[3] optim.lr=1e-05"


def sweep_table(project):
    return pd.read_csv(project / "reports" / "sweep.csv")


def last_history_row(job_dir):
    return pd.read_csv(job_dir / "history.csv").iloc[-1]


def loss_on_test(project, weights_file):
    """The seed's loss of the net in ``weights_file`` on the copy's test.csv."""
    X, T = inputs_targets(read_table(project / "data" / "processed" / "test.csv"))
    return MLP.from_weights(load_weights(weights_file)).loss(X, T)


def all_runs(client):
    experiment = client.get_experiment_by_name("backprop-lab")
    assert experiment is not None, "no MLflow experiment backprop-lab"
    return client.search_runs([experiment.experiment_id], max_results=10_000)


def split_runs(runs):
    """``(parents, children)``: runs without and with a parent run."""
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    children = [r for r in runs if PARENT_TAG in r.data.tags]
    return parents, children


def stage_lines(output):
    """``{stage: "ran" | "skipped"}`` from the output of dvc repro / dvc exp run."""
    stages = {}
    for name in re.findall(r"Running stage '(\w+)'", output):
        stages[name] = "ran"
    for name in re.findall(r"Stage '(\w+)' didn't change, skipping", output):
        stages[name] = "skipped"
    return stages


# ---------------------------------------------------------------------------
# Fast: config composition and the sweep's bookkeeping


def test_params_yaml_is_composed_from_conf(tmp_path):
    composed = compose_params(ROOT, out=tmp_path / "params.yaml")
    assert composed.read_text() == (ROOT / "params.yaml").read_text(), (
        "params.yaml is out of date with conf/: recompose it (dvc exp run does)"
    )


def test_flat_params_of_a_composed_config(compose_config):
    cfg = compose_config("model.hidden=[16,16]", "optim.lr=0.01")

    params = flat_params(cfg)

    assert params["model.hidden"] == "[16, 16]"
    assert params["optim.lr"] == "0.01"
    assert params["optim.epochs"] == "300"
    assert params["optim.shuffle"] == "False"
    assert params["data.n_samples"] == "1000"
    assert params["data.amplitude"] == "15.0"
    assert params["split.test_size"] == "0.33"
    assert params["model.activation"] == "sigmoid"
    assert all(isinstance(v, str) for v in params.values())
    # Where files go, what is swept and where runs are stored are not parameters.
    assert not [k for k in params if k.split(".")[0] in ("paths", "sweep", "tracking")]


def write_job(folder, status, val_loss, train_loss=1.0, epochs=5):
    folder.mkdir(parents=True)
    job = {
        "status": status,
        "reason": "" if status == "ok" else "training diverged",
        "epochs": epochs,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "overrides": [f"optim.lr={folder.name}"],
    }
    (folder / "job.yaml").write_text(yaml.safe_dump(job))


def test_collect_and_best_job(tmp_path):
    write_job(tmp_path / "0", "failed", float("nan"))
    write_job(tmp_path / "1", "failed", 0.001)  # lowest, but failed: skipped
    write_job(tmp_path / "2", "ok", 0.5)
    write_job(tmp_path / "10", "ok", 0.2)
    write_job(tmp_path / "3", "ok", 0.2)  # ties with 10: the lower number wins
    (tmp_path / "notes").mkdir()  # no job.yaml: not a job
    (tmp_path / "sweep.csv").write_text("not a job\n")

    table = collect(tmp_path)

    assert list(table["job"]) == ["0", "1", "2", "3", "10"]
    assert list(table["status"]) == ["failed", "failed", "ok", "ok", "ok"]
    assert list(table["overrides"]) == [f"optim.lr={n}" for n in (0, 1, 2, 3, 10)]
    assert table["val_loss"].iloc[2:].tolist() == [0.5, 0.2, 0.2]
    best = best_job(table)
    assert best["job"] == "3"
    assert best["val_loss"] == 0.2


def test_best_job_when_all_jobs_failed(tmp_path):
    write_job(tmp_path / "0", "failed", float("nan"))
    write_job(tmp_path / "1", "failed", 0.1)

    with pytest.raises(AllJobsFailed, match=r"^all 2 jobs of the sweep failed"):
        best_job(collect(tmp_path))


# ---------------------------------------------------------------------------
# End to end: the small pipeline, basic launcher


@pytest.mark.slow
def test_pipeline_writes_every_declared_output(small_pipeline):
    project = small_pipeline.path

    for name in ("data/raw/sin.csv", "reports/sweep.csv", "reports/metrics.json"):
        assert (project / name).is_file(), name
    assert (project / "reports" / "predictions.csv").is_file()
    for split in ("train", "val", "test"):
        assert (project / "data" / "processed" / f"{split}.csv").is_file(), split
    jobs = sorted((project / "models" / "sweep").iterdir(), key=lambda p: int(p.name))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    for folder in [*jobs, project / "models" / "best"]:
        assert sorted(p.name for p in folder.iterdir()) == sorted(JOB_FILES), folder
    # 200 samples: 0.33 to test, then 0.2 of the rest to validation.
    sizes = {
        split: len(read_table(project / "data" / "processed" / f"{split}.csv"))
        for split in ("train", "val", "test")
    }
    assert sizes == {"train": 107, "val": 27, "test": 66}
    assert len(read_table(project / "data" / "raw" / "sin.csv")) == 200
    assert {"generate", "split", "train", "evaluate"} == set(
        small_pipeline.lock["stages"]
    )


@pytest.mark.slow
def test_sweep_table_has_one_ok_row_per_job(small_pipeline):
    project = small_pipeline.path
    table = sweep_table(project)

    assert table["job"].tolist() == [0, 1, 2, 3]
    assert table["overrides"].tolist() == SMALL_GRID
    assert (table["status"] == "ok").all()
    assert (table["epochs"] == SMALL_EPOCHS).all()
    for row in table.itertuples():
        history = pd.read_csv(
            project / "models" / "sweep" / str(row.job) / "history.csv"
        )
        assert history["epoch"].tolist() == list(range(1, SMALL_EPOCHS + 1))
        assert row.train_loss == history["train_loss"].iloc[-1]
        assert row.val_loss == history["val_loss"].iloc[-1]
        job_cfg = yaml.safe_load(
            (project / "models" / "sweep" / str(row.job) / "config.yaml").read_text()
        )
        hidden, lr = row.overrides.split()
        assert f"model.hidden={job_cfg['model']['hidden']}".replace(" ", "") == hidden
        assert f"optim.lr={job_cfg['optim']['lr']}" == lr


@pytest.mark.slow
def test_best_model_is_the_job_with_lowest_val_loss(small_pipeline):
    project = small_pipeline.path
    jobs = sorted((project / "models" / "sweep").iterdir(), key=lambda p: int(p.name))
    val_losses = [last_history_row(job)["val_loss"] for job in jobs]
    best = jobs[int(np.argmin(val_losses))]  # argmin: the first of equal losses

    for name in JOB_FILES:
        assert (project / "models" / "best" / name).read_bytes() == (
            best / name
        ).read_bytes(), name


@pytest.mark.slow
def test_metrics_are_the_best_models_loss_on_test(small_pipeline):
    project = small_pipeline.path
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    best = project / "models" / "best"
    X, T = inputs_targets(read_table(project / "data" / "processed" / "test.csv"))
    net = MLP.from_weights(load_weights(best / "final.npz"))
    Y = net.predict(X)

    assert metrics["loss"] == net.loss(X, T)
    assert metrics["mse"] == pytest.approx(np.mean((T - Y) ** 2), rel=1e-12)
    assert metrics["rmse"] == pytest.approx(np.sqrt(metrics["mse"]), rel=1e-12)
    predictions = pd.read_csv(project / "reports" / "predictions.csv")
    assert predictions["target"].to_numpy().tolist() == T.ravel().tolist()
    assert predictions["prediction"].to_numpy().tolist() == Y.ravel().tolist()


@pytest.mark.slow
def test_mlflow_has_one_parent_run_and_a_child_per_job(small_pipeline):
    project = small_pipeline.path
    client = small_pipeline.tracking_client()
    parents, children = split_runs(all_runs(client))
    (parent,) = parents
    table = sweep_table(project)
    data_hash = sha256(project / "data" / "processed" / "train.csv")

    assert len(children) == len(SMALL_GRID)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["git_commit"] == small_pipeline.head
    param_keys = {frozenset(child.data.params) for child in children}
    assert len(param_keys) == 1, "children differ in their param keys"
    by_job = {}
    for child in children:
        tags = child.data.tags
        assert child.info.status == "FINISHED", child.info.run_name
        assert tags[PARENT_TAG] == parent.info.run_id
        assert tags["git_commit"] == small_pipeline.head
        assert tags["data_hash"] == data_hash
        assert tags["sweep_id"] == parent.data.tags["sweep_id"]
        job = re.fullmatch(r"job-(\d+)", child.info.run_name).group(1)
        by_job[int(job)] = child
    assert sorted(by_job) == [0, 1, 2, 3]

    for job, child in by_job.items():
        params = child.data.params
        assert params["optim.epochs"] == str(SMALL_EPOCHS)
        assert params["data.n_samples"] == "200"
        assert params["model.activation"] == "sigmoid"
        overrides = (
            f"model.hidden={params['model.hidden']} optim.lr={params['optim.lr']}"
        )
        assert overrides == table["overrides"][job]
        history = pd.read_csv(project / "models" / "sweep" / str(job) / "history.csv")
        for key in ("train_loss", "val_loss"):
            points = client.get_metric_history(child.info.run_id, key)
            points = sorted(points, key=lambda m: m.step)
            assert [m.step for m in points] == list(range(1, SMALL_EPOCHS + 1))
            assert [m.value for m in points] == history[key].tolist(), key
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert RUN_ARTIFACTS | {"loss_curve.png"} <= artifacts
        logged = client.download_artifacts(child.info.run_id, "final.npz")
        assert sha256(Path(logged)) == sha256(
            project / "models" / "sweep" / str(job) / "final.npz"
        )


@pytest.mark.slow
def test_test_metrics_are_logged_to_the_best_jobs_run(small_pipeline):
    project = small_pipeline.path
    client = small_pipeline.tracking_client()
    _, children = split_runs(all_runs(client))
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    best_sha = sha256(project / "models" / "best" / "final.npz")

    table = sweep_table(project)
    best_job_number = table["job"][table["val_loss"].idxmin()]

    with_test = [c for c in children if "test_loss" in c.data.metrics]
    assert [c.info.run_name for c in with_test] == [f"job-{best_job_number}"]
    (best,) = with_test
    assert best.data.tags["final_sha256"] == best_sha
    for key, value in metrics.items():
        assert best.data.metrics[f"test_{key}"] == value, key


# ---------------------------------------------------------------------------
# Reproducibility


@pytest.mark.slow
def test_two_runs_give_identical_outputs(small_pipeline, small_pipeline_again):
    first, second = small_pipeline, small_pipeline_again

    # Same code, same config: the whole lock file agrees, hashes and commands.
    assert first.lock == second.lock
    assert sorted(first.hashes) == sorted(second.hashes)
    different = [p for p in first.hashes if first.hashes[p] != second.hashes[p]]
    assert different == []


def outs(lock):
    return {
        stage: {o["path"]: o["md5"] for o in entry.get("outs", [])}
        for stage, entry in lock["stages"].items()
    }


@pytest.mark.slow
def test_joblib_launcher_gives_the_basic_launchers_files(
    small_pipeline, small_pipeline_joblib
):
    basic, joblib = small_pipeline, small_pipeline_joblib
    assert "hydra/launcher=joblib" in joblib.lock["stages"]["train"]["cmd"]

    assert sorted(basic.hashes) == sorted(joblib.hashes)
    different = sorted(p for p in basic.hashes if basic.hashes[p] != joblib.hashes[p])
    # Only the job configs differ, and only in the launcher they record (see
    # test_job_config_does_not_depend_on_the_launcher).
    assert all(p.endswith("/config.yaml") for p in different), different
    for name in different:
        a = (basic.path / name).read_text().splitlines()
        b = (joblib.path / name).read_text().splitlines()
        changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        assert changed == [("  launcher: basic", "  launcher: joblib")], name
    basic_outs, joblib_outs = outs(basic.lock), outs(joblib.lock)
    for stage in ("generate", "split", "evaluate"):
        assert basic_outs[stage] == joblib_outs[stage], stage
    sweep_csv = "reports/sweep.csv"
    assert basic_outs["train"][sweep_csv] == joblib_outs["train"][sweep_csv]

    client = joblib.tracking_client()
    parents, children = split_runs(all_runs(client))
    (parent,) = parents
    assert len(children) == len(SMALL_GRID)
    assert {c.data.tags[PARENT_TAG] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in [parent, *children]} == {"FINISHED"}
    for child in children:
        points = client.get_metric_history(child.info.run_id, "val_loss")
        assert sorted(m.step for m in points) == list(range(1, SMALL_EPOCHS + 1))


@pytest.mark.slow
def test_job_config_does_not_depend_on_the_launcher(
    small_pipeline, small_pipeline_joblib
):
    basic, joblib = small_pipeline, small_pipeline_joblib
    assert outs(basic.lock)["train"] == outs(joblib.lock)["train"]
    assert basic.hashes == joblib.hashes


# ---------------------------------------------------------------------------
# DVC experiments and ad hoc sweeps (they change small_pipeline_again)


@pytest.mark.slow
def test_exp_run_reruns_only_what_a_param_reaches(small_pipeline_again):
    project = small_pipeline_again.path
    # Evaluate is always_changed (it logs the test metrics to the new best run);
    # nothing else is out of date.
    status = run(["dvc", "status"], project).stdout
    assert status == "evaluate:\n\talways changed\n"
    before = file_hashes(project)

    # optim.lr is a train param, so train reruns; but the sweep grid sets optim.lr
    # of every job, so the models come out the same (evaluate always runs).
    proc = run(["dvc", "exp", "run", "-S", "optim.lr=0.02"], project)
    assert stage_lines(proc.stdout + proc.stderr) == {
        "generate": "skipped",
        "split": "skipped",
        "train": "ran",
        "evaluate": "ran",
    }
    assert yaml.safe_load((project / "params.yaml").read_text())["optim"]["lr"] == 0.02
    assert file_hashes(project) == before

    # optim.epochs is not swept: the new value reaches every job.
    proc = run(["dvc", "exp", "run", "-S", "optim.epochs=7"], project)
    assert stage_lines(proc.stdout + proc.stderr) == {
        "generate": "skipped",
        "split": "skipped",
        "train": "ran",
        "evaluate": "ran",
    }
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["optim"]["epochs"] == 7
    # Hydra composes conf/ with this run's overrides only: lr is back to conf's.
    assert params["optim"]["lr"] == 0.03
    best = project / "models" / "best"
    history = pd.read_csv(best / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 8))
    assert yaml.safe_load((best / "config.yaml").read_text())["optim"]["epochs"] == 7
    assert (sweep_table(project)["epochs"] == 7).all()
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["loss"] == loss_on_test(project, best / "final.npz")
    for name in ("data/raw/sin.csv", "data/processed/train.csv"):
        assert file_hashes(project)[name] == before[name]

    # sweep=single: one job with the config's own values, so optim.lr reaches it.
    single = ["-S", "sweep=single", "-S", "optim.lr=0.02"]
    proc = run(["dvc", "exp", "run", *single], project)
    assert stage_lines(proc.stdout + proc.stderr) == {
        "generate": "skipped",
        "split": "skipped",
        "train": "ran",
        "evaluate": "ran",
    }
    assert len(sweep_table(project)) == 1
    assert [p.name for p in (project / "models" / "sweep").iterdir()] == ["0"]
    job_cfg = yaml.safe_load((best / "config.yaml").read_text())
    assert job_cfg["optim"]["lr"] == 0.02
    assert job_cfg["optim"]["epochs"] == SMALL_EPOCHS
    assert job_cfg["model"]["hidden"] == [3]
    assert len(pd.read_csv(best / "history.csv")) == SMALL_EPOCHS


@pytest.mark.slow
def test_ad_hoc_sweep_outside_dvc(small_pipeline_again, tmp_path):
    project = small_pipeline_again.path
    client = small_pipeline_again.tracking_client()
    runs_before = {r.info.run_id for r in all_runs(client)}
    sweep_dir = tmp_path / "multirun"

    run(
        [
            "python",
            "-m",
            "backprop_lab.train",
            "-m",
            "model.hidden=[3],[8]",
            "optim.lr=0.1,0.01",
            "optim.epochs=5",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        project,
    )

    for job in range(4):
        for name in JOB_FILES:
            assert (sweep_dir / str(job) / name).is_file(), f"{job}/{name}"
    table = pd.read_csv(sweep_dir / "sweep.csv")
    assert table["job"].tolist() == [0, 1, 2, 3]
    assert table["overrides"].tolist() == [
        f"model.hidden={h} optim.lr={lr} optim.epochs=5"
        for h in ("[3]", "[8]")
        for lr in ("0.1", "0.01")
    ]
    assert (table["epochs"] == 5).all()
    best = int(table["job"][table["val_loss"].idxmin()])
    assert (sweep_dir / "best" / "final.npz").read_bytes() == (
        sweep_dir / str(best) / "final.npz"
    ).read_bytes()

    new = [r for r in all_runs(client) if r.info.run_id not in runs_before]
    parents, children = split_runs(new)
    (parent,) = parents
    assert len(children) == 4
    assert {c.data.tags[PARENT_TAG] for c in children} == {parent.info.run_id}
    assert {c.data.params["optim.epochs"] for c in children} == {"5"}
    assert {r.info.status for r in new} == {"FINISHED"}
    assert parent.data.tags.get("best_job") == str(best)


@pytest.mark.slow
def test_ad_hoc_sweep_into_a_used_folder_sees_only_its_jobs(
    small_pipeline_again, tmp_path
):
    project = small_pipeline_again.path
    sweep_dir = tmp_path / "multirun"
    command = ["python", "-m", "backprop_lab.train", "-m", "tracking.enabled=false"]
    command += ["optim.epochs=5", "model.hidden=[8]", f"hydra.sweep.dir={sweep_dir}"]

    # A good job 0, then a sweep whose only job is worse: today the second sweep
    # collects the first one's copy in best/ as a job, picks it, deletes best/
    # and then fails to copy from it; Hydra turns that error into a warning.
    run([*command, "optim.lr=0.1"], project)
    run([*command, "optim.lr=0.01"], project)

    table = pd.read_csv(sweep_dir / "sweep.csv")
    assert table["job"].astype(str).tolist() == ["0"]
    assert table["overrides"][0].endswith("model.hidden=[8] optim.lr=0.01")
    best = yaml.safe_load((sweep_dir / "best" / "job.yaml").read_text())
    assert best["overrides"][-1] == "optim.lr=0.01"


# ---------------------------------------------------------------------------
# Quality: the project's own sweep against the seed notebook's setting


@pytest.mark.slow
def test_best_job_beats_the_notebooks_setting(default_pipeline):
    project = default_pipeline.path
    table = sweep_table(project)
    assert len(table) == 12
    (notebook_job,) = table["job"][table["overrides"] == NOTEBOOK_JOB]
    metrics = json.loads((project / "reports" / "metrics.json").read_text())

    best = metrics["loss"]
    assert best == loss_on_test(project, project / "models" / "best" / "final.npz")
    notebook = loss_on_test(
        project, project / "models" / "sweep" / str(notebook_job) / "final.npz"
    )
    print(f"\ntest loss: best job {best:.6g}, notebook's setting {notebook:.6g}")

    assert best < 0.01
    assert notebook > 5
    assert notebook / best > 100
