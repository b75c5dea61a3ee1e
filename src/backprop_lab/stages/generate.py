"""DVC stage `generate`: draw the sin dataset and write it to ``paths.raw``."""

import logging

import hydra

from backprop_lab.config import validate
from backprop_lab.data import make_sin, write_table
from backprop_lab.stages import one_line_errors

log = logging.getLogger(__name__)


def generate(cfg):
    """Draw ``cfg.data`` and write it to ``cfg.paths.raw``."""
    frame = make_sin(**cfg.data)
    write_table(frame, cfg.paths.raw)
    log.info("wrote %d samples to %s", len(frame), cfg.paths.raw)


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="config")
def main(cfg):
    with one_line_errors("generate"):
        generate(validate(cfg, "generate"))


if __name__ == "__main__":
    main()
