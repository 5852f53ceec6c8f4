"""One base class for every error a user can fix (papermill's exceptions.py does the same)."""


def test_every_error_a_user_can_fix_derives_from_one_base():
    """The CLI catches LabkitError alone: each of these must be one, and keep the built-in type callers catch."""
    from labkit.data.core import DatasetNotFoundError
    from labkit.data.download import ChecksumError, UnsafeArchiveError
    from labkit.errors import LabkitError, MissingFileError, NetworkError, ParameterError
    from labkit.models import WeightsUnavailableError
    from labkit.paths import DiskSpaceError
    from labkit.report.compare import CompareError
    from labkit.sweep.cluster import ClusterError
    for error, builtin in [(ParameterError, ValueError), (MissingFileError, FileNotFoundError),
                           (NetworkError, ConnectionError), (DatasetNotFoundError, FileNotFoundError),
                           (ChecksumError, RuntimeError), (UnsafeArchiveError, RuntimeError),
                           (WeightsUnavailableError, RuntimeError), (DiskSpaceError, OSError),
                           (CompareError, ValueError), (ClusterError, RuntimeError)]:
        assert issubclass(error, LabkitError) and issubclass(error, builtin), error
    import labkit.params
    assert labkit.params.ParameterError is ParameterError  # the old import path still works
