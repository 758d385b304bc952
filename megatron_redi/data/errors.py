"""The one error type for a malformed input row, raised by the trainer's data parsing and the dataset builder."""

from __future__ import annotations


class DataError(ValueError):
    """A malformed input row; the message names the file and row.

    Raisers that know the parts also set ``path``, ``row``, ``reason`` and ``line`` (see :meth:`at`).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        reason: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path, self.row, self.reason, self.line = path, row, reason, line

    @classmethod
    def at(cls, path: str, row: int, reason: str, line: int | None = None) -> DataError:
        """``malformed input row: FILE: row N (line L): REASON`` with the parts as attributes (the builder's
        form: ``row`` counts the rows of the file from 1, like the trainer's; ``line`` is the 1-based line of a
        JSON-lines file, which differs from the row when the file has blank lines)."""
        where = f"row {row}" + (f" (line {line})" if line is not None else "")
        return cls(f"malformed input row: {path}: {where}: {reason}", path=path, row=row, reason=reason, line=line)
