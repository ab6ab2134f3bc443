"""The one exception the CLI turns into a single error line."""


class CLIError(Exception):
    """One clear line for the user; exit code in ``.code`` (default 1)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
