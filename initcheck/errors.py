"""The one exception that the CLI turns into exit code 2."""


class InputError(Exception):
    """The input could not be checked: a usage error, or a missing, corrupt or unsupported file.

    Args:
        path: the file or folder at fault (shown first in the one-line message).
        problem: what is wrong with it, in a few words.
    """

    def __init__(self, path, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def line(self) -> str:
        """The one line the CLI prints: file names and values from the checkpoint may hold
        control characters, escaped here so that none reaches the terminal raw."""
        from .report.terminal import printable

        return printable(str(self))
