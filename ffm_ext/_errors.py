"""Errors raised by ffm_ext."""

from __future__ import annotations

__all__ = [
    "FFMDatasetError",
    "FFMDivergenceError",
    "FFMFormatError",
    "FFMModelFileError",
    "shorten",
    "shown",
]

#: How much of a bad token or value an error message quotes; the rest is summarised by length.
TOKEN_PREFIX = 60


def shorten(text: str, length: int | None = None) -> str:
    """`text` quoted for a message: whole when short, else a prefix and the whole length in
    bytes (`length`, when the caller only holds a prefix), so a multi-megabyte token does not
    flood a terminal or a log line."""
    whole = len(text.encode("utf-8", "replace"))
    if len(text) <= TOKEN_PREFIX and (length is None or length <= whole):
        return repr(text)
    return f"{text[:TOKEN_PREFIX]!r}... ({max(whole, length or 0):,} bytes)"


def shown(value: object) -> str:
    """repr(value) for a message, cut like `shorten` when long (e.g. a huge string in JSON)."""
    text = repr(value)
    return text if len(text) <= TOKEN_PREFIX else f"{text[:TOKEN_PREFIX]}... ({len(text):,} chars)"


class FFMFormatError(ValueError):
    """A malformed LIBFFM text file: names the file, 1-based line and column, and the token."""

    def __init__(
        self,
        path: str,
        line: int,
        column: int,
        token: str,
        reason: str,
        *,
        token_length: int | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.token = token
        self.reason = reason
        location = f"{path}:{line}" + (f":{column}" if column else "")
        detail = f" (token {shorten(token, token_length)})" if token else ""
        super().__init__(f"{location}: {reason}{detail}")


class FFMDatasetError(ValueError):
    """A dataset that breaks the contract (docs/architecture.md, Contracts). The message names
    the array and the index; `path` (set when loading from disk) names the file as well."""

    def __init__(
        self, reason: str, *, array: str, index: int | None = None, path: str | None = None
    ) -> None:
        self.reason = reason
        self.array = array
        self.index = index
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)

    def in_file(self, path: str) -> FFMDatasetError:
        """The same error, naming the file it came from."""
        return FFMDatasetError(self.reason, array=self.array, index=self.index, path=path)


class FFMModelFileError(ValueError):
    """A model file that is truncated, corrupted or not an FFM model at all."""


class FFMDivergenceError(FloatingPointError):
    """Training produced a non-finite loss or weights; the model is unusable."""
