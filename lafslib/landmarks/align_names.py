"""Names of aligned crops: a pure function of the photo listing, so that every shard of a run
names every crop as one run would, and no two faces ever share a file.

A photo's first face keeps the photo's relative path (``.jpg``/``.jpeg``/``.png`` kept, other
formats become ``.png``); a later photo (in sorted order) whose name is already taken (``a.bmp``
and ``a.png`` both give ``a.png``; a name written by an earlier source) gets ``a~1.png``, ... .
Extra faces (``--faces all``) are ``<stem>_face1.<ext>``, ... of the first face's name, with
``_`` appended while that name is some photo's first-face name.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import PurePosixPath

__all__ = ["crop_suffix", "extra_name", "natural_name", "plan_names"]

KEPT_SUFFIXES = (".jpg", ".jpeg", ".png")


def crop_suffix(rel: str) -> str:
    """File suffix of the crops of photo ``rel``: its own for JPEG/PNG, else ``.png``."""
    suffix = PurePosixPath(rel).suffix.lower()
    return suffix if suffix in KEPT_SUFFIXES else ".png"


def natural_name(rel: str) -> str:
    """The first face's name before collisions: ``rel`` with :func:`crop_suffix`."""
    path = PurePosixPath(rel)
    return str(path.with_name(path.stem + crop_suffix(rel)))


def plan_names(photos: Iterable[str], taken: Collection[str] = ()) -> dict[str, str]:
    """First-face names of ``photos`` (sorted relative paths), unique among themselves and
    distinct from ``taken`` (names written before, by another source).

    Returns:
        ``{photo: name}``.
    """
    used = set(taken)
    out = {}
    for rel in photos:
        name = natural_name(rel)
        if name in used:
            path = PurePosixPath(name)
            i = 1
            while (name := str(path.with_name(f"{path.stem}~{i}{path.suffix}"))) in used:
                i += 1
        used.add(name)
        out[rel] = name
    return out


def extra_name(first: str, index: int, reserved: Collection[str]) -> str:
    """Name of face ``index`` (>= 1) of the photo whose first face is ``first``; ``reserved``
    holds every first-face name of the dataset."""
    path = PurePosixPath(first)
    stem = f"{path.stem}_face{index}"
    while (name := str(path.with_name(stem + path.suffix))) in reserved:
        stem += "_"
    return name
