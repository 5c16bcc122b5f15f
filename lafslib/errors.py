"""User-caused errors: one hierarchy that the ``lafs`` command line reports as one line.

Everything a user can get wrong with a file, a folder, a recipe key or a command-line value
raises a subclass of :class:`LafsUserError` whose message names that file or key and says what
to do. ``lafs`` maps the whole hierarchy, in one place, to exit code 2 and one line on stderr;
``--debug`` (or ``LAFS_DEBUG=1``) shows the traceback as well. Anything else is a bug and
keeps its traceback.

Each class also derives from the built-in exception that code outside lafslib would expect
(``ValueError``, ``FileNotFoundError``, ``KeyError``, ...), so ``except ValueError`` keeps working.

This module imports nothing of lafslib: every layer may raise these errors.

Example:
    >>> try:
    ...     raise DataError("faces/a.jpg: cannot decode image")
    ... except LafsUserError as exc:
    ...     print(user_message(exc))
    faces/a.jpg: cannot decode image
"""

from __future__ import annotations

import pickle

__all__ = [
    "LafsUserError",
    "ConfigError",
    "DataError",
    "UnsafeFileError",
    "CheckpointError",
    "ExportError",
    "RunDirError",
    "PathConflictError",
    "InputNotFoundError",
    "UnknownModelError",
    "ModelArgumentError",
    "user_message",
]


class LafsUserError(Exception):
    """Base of every error a user causes with an input; the message names the file or key."""


class ConfigError(LafsUserError, ValueError):
    """A recipe is invalid: the message names the key and the recipe file."""


class DataError(LafsUserError, ValueError):
    """A data file (image, ``.rec``, ``.bin``, landmark sidecar, IJB meta) is unusable."""


class UnsafeFileError(LafsUserError, pickle.UnpicklingError):
    """A file asked to run code or to build objects it never legitimately contains."""


class CheckpointError(LafsUserError, ValueError):
    """A checkpoint cannot be loaded, or does not fit the recipe or the command."""


class ExportError(LafsUserError, ValueError):
    """An export folder (``model.safetensors`` + ``model.json``) is missing, partial or wrong."""


class RunDirError(LafsUserError, FileExistsError):
    """A run directory holds another run (the message says how to go on)."""


class PathConflictError(LafsUserError, ValueError):
    """An output path would land inside an input (or the other way round)."""


class InputNotFoundError(LafsUserError, FileNotFoundError):
    """A file or folder named by the user does not exist."""


class UnknownModelError(LafsUserError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0]) if self.args else ""


class ModelArgumentError(LafsUserError, TypeError):
    """Model arguments (``model.kwargs``, an export's ``kwargs``) the model does not take."""


def user_message(exc: BaseException) -> str:
    """What ``lafs`` prints for a user error: one line naming the file or key.

    A lafslib error prints its message (one line, except deliberate reports such as the key
    lists of a failed ``lafs convert``); a built-in error only its first line. An error
    re-raised by a DataLoader worker carries the worker's traceback in its message: only the
    original message (its last line) is kept.
    """
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name, sep, rest = last.partition(": ")
        text = rest if sep and name.replace(".", "").replace("_", "").isalnum() else last
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return "\n".join(lines) if isinstance(exc, LafsUserError) else lines[0]
