"""One exception hierarchy for the project, each class with its documented exit code.

Exit codes (also in the README's CLI reference):

| code | class | meaning |
|---|---|---|
| 0 | | success |
| 1 | (uncaught) | internal error: a bug, please report it |
| 2 | UsageError | bad command line or configuration |
| 3 | InputError | input missing, not a video, or unreadable |
| 4 | StreamError | input stream broke mid-way (partial output was finalised) |
| 5 | ServerError | Triton unreachable, failed to start, or died (partial output finalised) |
| 6 | ModelError | model repository or checkpoint missing or invalid |
| 7 | EncodeError | encoder or muxer failed |
| 8 | VerifyError | determinism check found a mismatch |
| 130 | | interrupted (SIGINT) |
| 143 | | terminated (SIGTERM; preedit.signals) |
| 129 | | hung up (SIGHUP; preedit.signals) |
"""

from __future__ import annotations


class PreeditError(Exception):
    """Base class for expected faults: the CLI prints one line and exits with `exit_code`."""

    exit_code = 1


class UsageError(PreeditError):
    exit_code = 2


class InputError(PreeditError):
    exit_code = 3


class StreamError(PreeditError):
    exit_code = 4


class ServerError(PreeditError):
    exit_code = 5


class ModelError(PreeditError):
    exit_code = 6


class EncodeError(PreeditError):
    exit_code = 7


class VerifyError(PreeditError):
    exit_code = 8
