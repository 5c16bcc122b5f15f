"""The ``lafs`` command line: argument parsing only; the work happens in the library."""

from lafslib.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
