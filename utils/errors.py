"""The one exception type for user mistakes (bad flags, files, data).

run.py turns it into a one-line message and exit code 2; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the flag, file, column or row."""


class OutputError(Exception):
    """An output file could not be written (disk full, permission lost); exit code 1. Files
    are replaced atomically, so the previous complete version is still in place."""

    exit_code = 1

    def __init__(self, path, exc: OSError):
        reason = exc.strerror or type(exc).__name__
        super().__init__(f"cannot write {path}: {reason}; the previous complete file is kept")
