"""The ``lafs`` parser and entry point: the one place where user errors become exit code 2.

Each subcommand is one ``add_<name>(subparsers)`` function in the module of its command group
(:mod:`lafslib.cli.data`, :mod:`lafslib.cli.train`, :mod:`lafslib.cli.eval`,
:mod:`lafslib.cli.show`) that declares its arguments (with examples in the epilog) and a handler
that imports what it needs lazily, so that ``lafs --help`` stays fast and never imports the
training stack.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from lafslib.cli.common import add_debug
from lafslib.cli.data import add_align, add_align_merge, add_data, add_landmarks
from lafslib.cli.eval import add_eval
from lafslib.cli.infer import add_embed, add_search, add_verify
from lafslib.cli.show import (
    add_models,
    add_show_attention,
    add_show_config,
    add_show_landmarks,
    add_show_views,
)
from lafslib.cli.train import add_convert, add_export, add_finetune, add_pretrain

__all__ = ["main", "build_parser"]


# ----------------------------------------------------------------------------- registry

_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_show_config,
    add_data,
    add_pretrain,
    add_export,
    add_convert,
    add_eval,
    add_embed,
    add_verify,
    add_search,
    add_finetune,
    add_show_views,
    add_align,
    add_align_merge,
    add_landmarks,
    add_show_landmarks,
    add_models,
    add_show_attention,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``lafs`` argument parser with every subcommand."""
    from lafslib import __version__

    parser = argparse.ArgumentParser(
        prog="lafs",
        description="lafslib: landmark-aware self-supervised face representation learning.",
        epilog="Run 'lafs COMMAND --help' for the options and examples of each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lafslib {__version__}")
    add_debug(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


# What a user can cause: the lafslib hierarchy, plus the built-in errors of paths and values that
# library code raises for bad inputs. Everything else is a bug and keeps its traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lafs`` console script.

    A user error (:class:`lafslib.errors.LafsUserError` and the path and value errors above)
    and a full disk (``ENOSPC``/``EDQUOT`` anywhere in the error's chain) exit with code 2 and
    one line on stderr naming the file or key; ``--debug`` or ``LAFS_DEBUG=1`` prints the
    traceback first. A training run stopped by a signal after saving its checkpoint exits with
    :data:`lafslib.errors.INTERRUPTED_EXIT_CODE` (it printed where and how to resume).
    """
    from lafslib.errors import (
        ConfigError,
        DiskFullError,
        LafsUserError,
        RunInterrupted,
        disk_full,
        disk_full_message,
        user_message,
    )

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    debug = getattr(args, "debug", False) or os.environ.get("LAFS_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except RunInterrupted as exc:
        return exc.exit_code
    except Exception as exc:
        full = disk_full(exc)
        if full is None and not isinstance(exc, (LafsUserError, *_USER_ERRORS)):
            raise
        if debug:
            traceback.print_exc()
        kind = "invalid recipe" if isinstance(exc, ConfigError) else "error"
        if full is not None and not isinstance(full, DiskFullError):
            message = disk_full_message(full)
        else:
            message = user_message(full if full is not None else exc)
        print(f"lafs {args.command}: {kind}: {message}", file=sys.stderr)
        return 2
