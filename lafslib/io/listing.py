"""Folder listing: every image file under a folder, in a stable order."""

from __future__ import annotations

import os
from pathlib import Path

from lafslib.io.images import is_image_file

__all__ = ["list_images"]


def list_images(root: str | os.PathLike[str]) -> list[str]:
    """Sorted relative paths ('/'-separated) of every image file under ``root``."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        out += [(rel / f).as_posix() for f in sorted(filenames) if is_image_file(f)]
    return sorted(out)
