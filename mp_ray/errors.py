"""Expected failures: what a user can cause and fix (config, data, store, storage, Ray
resources, input values), as opposed to bugs.

Every stage raises a subclass of :class:`MpRayError` for an expected failure, with a message
of one line that names the cause and the object (field, option, path, bucket, endpoint).
The command line prints that line and exits with status 2 (a traceback only with
``--debug``); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MpRayError(Exception):
    """An expected failure; its message is one line naming the cause and the object."""


class InputError(MpRayError, ValueError):
    """A value given by the user (an option, indices, a request field) cannot be used."""


class StorageError(MpRayError, OSError):
    """Storage cannot be reached or used; the message names the path, bucket or endpoint."""


def one_line(error: BaseException | str) -> str:
    """``error`` (or a message) on one line, continuation lines joined with "; "."""
    text = ""
    for line in (line.strip() for line in str(error).splitlines()):
        if line:
            text += (" " if text.endswith(":") else "; ") + line if text else line
    return text or type(error).__name__
