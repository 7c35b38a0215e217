"""The one error a request can earn: a 4xx with a one-line reason."""

from __future__ import annotations


class BadRequestError(ValueError):
    """A request ctrflow cannot answer. The message is one line naming the row and column (or the
    part of the request) at fault; servers answer it with HTTP `status`, never with a trace."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever a parser said
        self.status = status
