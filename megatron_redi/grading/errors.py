"""Errors of the grading package a user can fix (the evaluation CLI reports them and exits 2)."""


class ConfigError(ValueError):
    """A flag value that cannot work."""
