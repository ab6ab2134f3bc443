"""The one exception every door reports as a single line."""


class UserError(Exception):
    """A problem the person running us must fix (a missing file, an unreachable cluster, a bad
    combination of settings), said in one clear line. Any layer may raise it; the CLI prints it
    and exits with ``code`` (default 1), and `serve` refuses to start with it."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
