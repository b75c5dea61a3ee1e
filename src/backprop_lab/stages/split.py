"""DVC stage `split`: train, validation and test tables under ``paths.processed``."""

import logging
from pathlib import Path

import hydra

from backprop_lab.config import split_sizes, validate
from backprop_lab.data import (
    SPLITS,
    DataFileError,
    read_table,
    split_frame,
    write_table,
)
from backprop_lab.stages import one_line_errors

log = logging.getLogger(__name__)


def split(cfg):
    """Split ``cfg.paths.raw`` into ``{train,val,test}.csv`` in ``paths.processed``."""
    frame = read_table(cfg.paths.raw)
    sizes = split_sizes(len(frame), cfg.split.test_size, cfg.split.val_size)
    if min(sizes) < 1:
        raise DataFileError(
            f"{cfg.paths.raw}: {len(frame)} rows leave (train, val, test) = {sizes} "
            f"with split.test_size={cfg.split.test_size} and "
            f"split.val_size={cfg.split.val_size}; each needs at least 1 row"
        )
    parts = split_frame(frame, cfg.split.test_size, cfg.split.val_size, cfg.split.seed)
    for name in SPLITS:
        write_table(parts[name], Path(cfg.paths.processed) / f"{name}.csv")
    log.info("split sizes: %s", {name: len(parts[name]) for name in SPLITS})


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="config")
def main(cfg):
    with one_line_errors("split"):
        split(validate(cfg, "split"))


if __name__ == "__main__":
    main()
