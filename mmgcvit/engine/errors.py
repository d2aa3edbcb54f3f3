"""The errors about the user's input that our tools report in one line
(naming the problem and the fix) instead of a traceback."""
import sys
from contextlib import contextmanager

from mmgcvit.checkpoint import CheckpointError


class PreflightError(FileNotFoundError):
    """A file the config or command line names does not exist."""


class DataError(ValueError):
    """Data the dataset class cannot load."""


class EvaluationError(RuntimeError):
    """An evaluation produced nothing to report."""


ONE_LINE_ERRORS = (CheckpointError, PreflightError, DataError,
                   EvaluationError)


@contextmanager
def one_line_errors(prog):
    """Within: the errors of ``ONE_LINE_ERRORS`` end the program with
    ``{prog}: error: {message}`` and exit status 1 (argparse's style)."""
    try:
        yield
    except ONE_LINE_ERRORS as error:
        sys.exit(f'{prog}: error: {error}')
