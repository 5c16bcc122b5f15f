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

import errno
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
    "DiskFullError",
    "DivergedError",
    "RunInterrupted",
    "INTERRUPTED_EXIT_CODE",
    "disk_full",
    "disk_full_message",
    "user_message",
]

INTERRUPTED_EXIT_CODE = 75
"""Exit code of a training run stopped by SIGTERM, SIGINT or SIGUSR1 after saving a checkpoint
(``EX_TEMPFAIL`` of sysexits.h: resume it with ``--resume auto``)."""

_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = (
    "no space left on device",
    "disk quota exceeded",
    "os error 28",
    "os error 122",
    "storagefull",  # Rust std::io::ErrorKind (safetensors)
    "filesystemquotaexceeded",
)


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


class DiskFullError(LafsUserError, OSError):
    """A write failed because the disk (or the user's quota) is full; the message names the file
    and says that what was written before is intact."""


class DivergedError(LafsUserError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the step and the way on."""


class RunInterrupted(Exception):  # noqa: N818 (not an error: a requested, clean stop)
    """A training run stopped on a signal after writing a checkpoint of its last step.

    Attributes:
        exit_code: :data:`INTERRUPTED_EXIT_CODE`.
    """

    exit_code = INTERRUPTED_EXIT_CODE


def disk_full(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain (itself, its cause or context) that says the disk or the
    quota is full: an ``OSError`` with ``ENOSPC``/``EDQUOT``, or an error of a native writer
    (safetensors, torch's zip writer) whose message says so; None when there is none."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError):
            return exc
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return exc
        if any(t in str(exc).lower() for t in _FULL_TEXT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_message(exc: BaseException, path: object = None) -> str:
    """One line for a full disk: the file (``path``, or the error's own file name), the cause,
    and what to do."""
    name = path if path is not None else getattr(exc, "filename", None)
    quota = (isinstance(exc, OSError) and exc.errno == errno.EDQUOT) or "quota" in str(exc).lower()
    cause = "disk quota exceeded" if quota else "no space left on device"
    where = f"{name}: " if name else ""
    return (
        f"{where}{cause}; nothing written before was changed: free space (or write elsewhere) "
        "and run the command again"
    )


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
