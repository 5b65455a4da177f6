"""The one error type of the HTTP parsers, shared by both backends so that callers catch one class."""


class HttpParseError(ValueError):
    """The peer sent a message we refuse. `status` is what to answer, `reason` is safe to show."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"HttpParseError({self.status}, {self.reason!r})"
