"""train_job in process: the job folder of a run that diverges part way."""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir

from backprop_lab.data import make_sin, split_frame, write_table
from backprop_lab.train import train_job

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture
def job_cfg(tmp_path):
    """The project's config on 200 seed samples split into tmp_path."""
    frame = make_sin(200, 2, 15.0, 0.0, 0)
    for name, part in split_frame(frame, 0.33, 0.2, 42).items():
        write_table(part, tmp_path / "processed" / f"{name}.csv")

    def make(*overrides):
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose(
                "config",
                overrides=[
                    f"paths.processed={tmp_path / 'processed'}",
                    f"checkpoint.dir={tmp_path / 'checkpoints'}",
                    "tracking.enabled=false",
                    *overrides,
                ],
            )

    return make


@pytest.mark.parametrize("every", [0, 2])
def test_a_job_that_diverges_part_way_records_each_epoch_once(job_cfg, tmp_path, every):
    # On this data the train loss of this net runs 11.9, 9.9, 8.5, 13.2, ...:
    # it passes max_loss=12 at epoch 4, after a block (and a checkpoint) or more.
    cfg = job_cfg(
        "model.activation=relu",
        "model.init=he",
        "optim.lr=0.1",
        "optim.max_loss=12",
        "optim.epochs=40",
        "optim.engine=numpy",
        f"checkpoint.every={every}",
    )
    result = train_job(cfg, tmp_path / "job")

    history = pd.read_csv(tmp_path / "job" / "history.csv")
    assert result["status"] == "failed"
    assert result["reason"].startswith("training diverged at epoch 4: ")
    assert "exceeds max_loss=12" in result["reason"]
    assert result["epochs"] == 4
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["train_loss"].iloc[-1] > 12
    assert (history["train_loss"].iloc[:-1] <= 12).all()
    job = yaml.safe_load((tmp_path / "job" / "job.yaml").read_text())
    assert job == result
    assert not (tmp_path / "job" / "final.npz").exists()
    assert not any((tmp_path / "checkpoints").glob("*.npz"))
