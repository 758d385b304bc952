"""Errors a user can fix. The CLI prints their message (which names the flag, file or row) and exits 2;
anything else is a bug and keeps its traceback."""

from megatron_redi.grading.errors import ConfigError  # raised by answer extraction as well


class EvalError(RuntimeError):
    """A problem with the input files or the output directory."""


class BenchmarkError(ValueError):
    """A benchmark name, file or row that cannot be used."""


class BackendUnavailable(RuntimeError):
    """The requested generation backend is not installed or has no device."""


USER_ERRORS = (EvalError, ConfigError, BenchmarkError, BackendUnavailable)
