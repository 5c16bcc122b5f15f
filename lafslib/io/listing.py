"""Folder listing: every image file under a folder, in a stable order, each real file once."""

from __future__ import annotations

import os
from pathlib import Path

from lafslib.io.images import is_image_file

__all__ = ["list_images"]


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` points to, or None when it cannot be reached."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def list_images(root: str | os.PathLike[str]) -> list[str]:
    """Sorted relative paths ('/'-separated) of every image file under ``root``.

    Symbolic links are followed, but each real folder is entered once and each real file is
    listed once (under the first path met in a sorted, top-down walk), so a link back to a
    parent (``ln -s . loop``) or two links to one photo add nothing. A link that points nowhere
    is listed (reading it then fails and is reported), since nothing else names the problem.
    """
    root = Path(root)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = _identity(dirpath)
        if here is not None and here in seen_dirs:
            dirnames.clear()
            continue
        if here is not None:
            seen_dirs.add(here)
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            if not is_image_file(name):
                continue
            real = _identity(os.path.join(dirpath, name))
            if real is not None:
                if real in seen_files:
                    continue
                seen_files.add(real)
            out.append((rel / name).as_posix())
    return sorted(out)
