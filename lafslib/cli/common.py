"""Helpers shared by the ``lafs`` subcommands: formatter, --debug, --set, run-directory options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = [
    "command",
    "add_debug",
    "add_overrides",
    "add_run_dir_options",
    "progress_bar",
    "sidecar_points",
]


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def command(
    sub: argparse._SubParsersAction, name: str, help_text: str, examples: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=_Formatter,
    )
    add_debug(p, argparse.SUPPRESS)  # SUPPRESS: 'lafs --debug CMD' is not reset by CMD
    return p


def add_debug(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the traceback of an error (also: LAFS_DEBUG=1)",
    )


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set optim.lr=1e-3 (repeatable)",
    )


def add_run_dir_options(p: argparse.ArgumentParser) -> None:
    """--resume / --overwrite: what to do with a run directory that already holds a run."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        default=None,
        metavar="auto|PATH",
        help="continue from the run's latest checkpoint (auto) or from a checkpoint file; "
        "without it, run.output_dir must be empty or new",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a run directory that holds a run: the old run is moved to "
        "<dir>.replaced-<time> (never deleted)",
    )


def progress_bar(quiet: bool, desc: str) -> Callable | None:
    if quiet:
        return None
    from tqdm import tqdm

    return lambda it, n: tqdm(it, total=n, desc=desc, unit="img")


def sidecar_points(table: Any, image_path: Any) -> Any:
    """The points of ``image_path`` in a landmark table keyed by paths relative to any parent."""
    for parent in image_path.parents:
        key = image_path.relative_to(parent).as_posix()
        if key in table:
            return table[key]
    return None
