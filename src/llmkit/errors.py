"""Errors meant for people.

Any mistake a user can make (a missing file, a bad config field, a corrupt checkpoint) raises an
``LLMKitError`` whose message is one line that names the file, line or field and says what to do.
The CLI prints that line and exits with status 2, without a traceback (unless ``--debug``).
Everything else is a bug and keeps its traceback.
"""


class LLMKitError(Exception):
    """A user-facing error: its message is a single line that names the problem and the fix."""

    exit_code = 2


class ConfigError(LLMKitError):
    """A preset, override or config field is unknown, mistyped or describes an impossible shape."""


class DataError(LLMKitError):
    """Input text is missing, empty, malformed or too small for the job asked of it."""


class CheckpointError(LLMKitError):
    """A checkpoint directory is missing files, corrupt, or from an incompatible version."""


def os_error_line(e: OSError) -> str:
    """An OSError on a user's path (a file where a directory is needed, no permission, a full
    disk) as one line that names the path."""
    what = (e.strerror or type(e).__name__).lower()
    return f"{e.filename}: {what}; check the path and its permissions" if e.filename else f"{what}"
