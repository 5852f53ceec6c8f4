"""The one base class of every error a user can fix from its message alone (papermill's exceptions.py does the
same): ``python -m labkit`` catches :class:`LabkitError`, prints one line and exits 1; anything else is a bug and
keeps its traceback. A leaf module: it imports nothing, so every layer can raise these."""


class LabkitError(Exception):
    """An error a user can fix; its message names the problem and the fix."""


class ParameterError(LabkitError, ValueError):
    """A parameter is unknown or has a value outside what is allowed."""


class MissingFileError(LabkitError, FileNotFoundError):
    """A file labkit needs is not where it is expected (a parameter file, a dataset); the message says where."""


class NetworkError(LabkitError, ConnectionError):
    """A download failed (no network, a refused connection); the message says what to fetch where."""
