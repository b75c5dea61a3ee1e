"""The committed dvc.lock matches the code: CI's reproduction check relies on it."""

import hashlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCK = yaml.safe_load((ROOT / "dvc.lock").read_text())
CODE = [
    (stage, dep["path"], dep["md5"])
    for stage, entry in LOCK["stages"].items()
    for dep in entry["deps"]
    if dep["path"].startswith("src/")
]


def test_every_stage_of_dvc_yaml_is_locked():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert sorted(LOCK["stages"]) == sorted(stages)


@pytest.mark.parametrize(("stage", "path", "md5"), CODE)
def test_locked_code_is_the_code(stage, path, md5):
    actual = hashlib.md5((ROOT / path).read_bytes()).hexdigest()
    assert actual == md5, (
        f"dvc.lock is stale for {path} (stage {stage}): run `dvc repro` and "
        "commit dvc.lock"
    )
