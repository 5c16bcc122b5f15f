"""The ``lafs`` command line: argument parsing only; the work happens in the library.

Each subcommand is one ``_add_<name>(subparsers)`` function below that declares its arguments
(with examples in the epilog) and a handler that imports what it needs lazily, so that
``lafs --help`` stays fast and never imports the training stack.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main", "build_parser"]


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _command(
    sub: argparse._SubParsersAction, name: str, help_text: str, examples: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=_Formatter,
    )


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set optim.lr=1e-3 (repeatable)",
    )


# ----------------------------------------------------------------------------- show-config


def _add_show_config(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "show-config",
        "Print a recipe fully resolved (base: inheritance, --set overrides, defaults).",
        """
  lafs show-config recipes/pretrain/cpu_small.yaml
  lafs show-config recipes/pretrain/cpu_small.yaml --set optim.epochs=2 --set run.seed=1
""",
    )
    p.add_argument("recipe", help="YAML recipe file")
    _add_overrides(p)
    p.set_defaults(func=_run_show_config)


def _run_show_config(args: argparse.Namespace) -> int:
    from lafslib.config import dump_config, load_recipe

    print(dump_config(load_recipe(args.recipe, args.overrides)), end="")
    return 0


# ----------------------------------------------------------------------------- registry

_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_show_config,
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lafs`` console script."""
    from lafslib.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"lafs {args.command}: invalid recipe: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"lafs {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
