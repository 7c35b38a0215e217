"""Errors raised by ffm_ext."""

from __future__ import annotations

__all__ = ["FFMDivergenceError", "FFMFormatError", "FFMModelFileError"]


class FFMFormatError(ValueError):
    """A malformed LIBFFM text file: names the file, 1-based line and column, and the token."""

    def __init__(self, path: str, line: int, column: int, token: str, reason: str) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.token = token
        self.reason = reason
        location = f"{path}:{line}" + (f":{column}" if column else "")
        detail = f" (token {token!r})" if token else ""
        super().__init__(f"{location}: {reason}{detail}")


class FFMModelFileError(ValueError):
    """A model file that is truncated, corrupted or not an FFM model at all."""


class FFMDivergenceError(FloatingPointError):
    """Training produced a non-finite loss or weights; the model is unusable."""
