"""Folder listings of millions of files as arrays, cached beside the folder.

A listing is a :class:`PathArray`: every relative path in one UTF-8 byte array plus an array
of end offsets, so a folder of millions of images costs about ``len(path) + 8`` bytes per file
and no Python object per file (DataLoader workers share the pages instead of copying them).

:func:`cached_listing` lists a folder with :func:`~lafslib.io.listing.list_images` and, for a
large folder, stores the listing in ``<folder>.lafs-listing.npz`` beside it, together with
the modification time of every sub-folder. The next opening memory-maps the cache after one
``stat`` per folder (adding, removing or renaming a file changes its folder's time), instead of
walking millions of files. A cache that cannot be written (read-only disk) is skipped.
"""

from __future__ import annotations

import array
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np

from lafslib.io.images import IMAGE_EXTENSIONS
from lafslib.io.listing import list_images
from lafslib.io.npz import npz_member_map

__all__ = ["LISTING_CACHE_MIN_FILES", "PathArray", "cached_listing", "listing_cache_path"]

LISTING_CACHE_MIN_FILES = 100_000  # smaller folders are listed every time, never cached
# Bump when list_images changes what it lists: caches of another format are rebuilt.
_FORMAT = "lafs-listing-1 " + ",".join(sorted(IMAGE_EXTENSIONS))
_CHUNK = 1 << 16


class PathArray(Sequence[str]):
    """Strings as one UTF-8 byte array and end offsets (no Python object per string).

    Args:
        blob: (total bytes,) uint8, the strings one after another.
        ends: (N,) int64 end offset of each string in ``blob``.
    """

    def __init__(self, blob: np.ndarray, ends: np.ndarray) -> None:
        self.blob = blob
        self.ends = ends

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> PathArray:
        """Pack strings (e.g. the list of :func:`list_images`)."""
        blob, ends, total = bytearray(), array.array("q"), 0
        for s in strings:
            b = s.encode("utf-8")
            blob += b
            total += len(b)
            ends.append(total)
        return cls(
            np.frombuffer(bytes(blob), np.uint8).copy(), np.frombuffer(ends, np.int64).copy()
        )

    def __len__(self) -> int:
        return len(self.ends)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} paths")
        index %= n
        start = int(self.ends[index - 1]) if index else 0
        return self.blob[start : int(self.ends[index])].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        for lo in range(0, len(self), _CHUNK):
            yield from (b.decode("utf-8") for b in self.encoded(lo, lo + _CHUNK).tolist())

    def encoded(self, lo: int, hi: int) -> np.ndarray:
        """(min(hi, N) - lo,) the strings ``lo .. hi-1`` as a fixed-width bytes array (for
        vectorised lookups such as :func:`numpy.searchsorted`), built without a loop."""
        hi = min(hi, len(self))
        if hi <= lo:
            return np.zeros(0, dtype="S1")
        ends = self.ends[lo:hi]
        starts = np.concatenate([self.ends[lo - 1 : lo] if lo else [0], ends[:-1]])
        lengths = ends - starts
        width = max(int(lengths.max()), 1)
        cols = np.arange(width)
        take = cols[None, :] < lengths[:, None]
        out = np.zeros((hi - lo, width), dtype=np.uint8)
        out[take] = self.blob[(starts[:, None] + cols[None, :])[take]]
        return out.view(f"S{width}").reshape(-1)


def listing_cache_path(root: str | os.PathLike[str]) -> Path:
    """Where the listing of folder ``root`` is cached: ``<root>.lafs-listing.npz`` beside it."""
    root = Path(root).absolute()
    return root.parent / f"{root.name}.lafs-listing.npz"


def _folder_times(root: Path) -> tuple[list[str], list[int]] | None:
    """Every folder under ``root`` (itself as ``.``, symbolic links followed once) and its
    modification time in nanoseconds; None when one cannot be read (then nothing is cached)."""
    names, times, seen = [], [], set()
    stack = ["."]
    try:
        while stack:
            rel = stack.pop()
            path = root / rel
            st = path.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            names.append(rel)
            times.append(st.st_mtime_ns)
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=True):
                        stack.append(entry.name if rel == "." else f"{rel}/{entry.name}")
    except OSError:
        return None
    return names, times


def _load_cache(cache: Path, root: Path) -> PathArray | None:
    """The cached listing, or None when it is absent, unreadable or stale."""
    try:
        with np.load(cache, allow_pickle=False) as data:
            if str(data["format"]) != _FORMAT:
                return None
            folders = PathArray(data["folder_blob"], data["folder_ends"])
            times = data["folder_times"]
        for rel, t in zip(folders, times.tolist()):
            if (root / rel).stat().st_mtime_ns != t:
                return None
        blob = npz_member_map(cache, "blob")
        ends = npz_member_map(cache, "ends")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    if blob is None or ends is None or (len(ends) and int(ends[-1]) != len(blob)):
        return None
    return PathArray(blob, ends)


def _write_cache(cache: Path, listing: PathArray, folders: list[str], times: list[int]) -> None:
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    names = PathArray.from_strings(folders)
    try:
        with tmp.open("wb") as f:
            np.savez(
                f,
                format=np.array(_FORMAT),
                blob=listing.blob,
                ends=listing.ends,
                folder_blob=names.blob,
                folder_ends=names.ends,
                folder_times=np.asarray(times, dtype=np.int64),
            )
        os.replace(tmp, cache)
    except OSError:  # a read-only disk: list again next time
        tmp.unlink(missing_ok=True)


def cached_listing(root: str | os.PathLike[str], min_files: int | None = None) -> PathArray:
    """Sorted relative paths of every image under ``root`` (as :func:`list_images`), from the
    cache beside it when no folder has changed since it was written.

    Args:
        root: the folder.
        min_files: write a cache only for at least this many images (default
            :data:`LISTING_CACHE_MIN_FILES`).
    """
    root = Path(root)
    cache = listing_cache_path(root)
    if cache.is_file():
        listing = _load_cache(cache, root)
        if listing is not None:
            return listing
    folders = _folder_times(root)  # before listing: a change meanwhile makes it stale
    listing = PathArray.from_strings(list_images(root))
    limit = LISTING_CACHE_MIN_FILES if min_files is None else min_files
    if folders is not None and len(listing) >= limit:
        _write_cache(cache, listing, *folders)
    return listing
