"""The ``.idx`` of a RecordIO file held as numpy arrays: record key -> byte offset."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

__all__ = ["RecordIndex"]

_CHUNK = 1 << 16


class RecordIndex(Mapping[int, int]):
    """The ``.idx`` of a RecordIO file as numpy arrays: record key -> byte offset.

    Keys are kept sorted in one int64 array (or as a start value alone when they are
    consecutive, as insightface writes them) beside an int64 array of offsets, and looked up
    with :func:`numpy.searchsorted`: no Python object per record, so the pages are shared, not
    copied, by DataLoader workers.

    Args:
        keys: (N,) record keys; a key given twice keeps its last offset (like the text file).
        offsets: (N,) byte offset of each record.
    """

    def __init__(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        if len(keys) and not bool(np.all(keys[1:] > keys[:-1])):
            order = np.argsort(keys, kind="stable")
            keys, offsets = keys[order], offsets[order]
            last = np.append(keys[1:] != keys[:-1], True)  # the last of equal keys wins
            keys, offsets = keys[last], offsets[last]
        self.offsets = np.ascontiguousarray(offsets)  # not a view that keeps the keys alive
        self._start: int | None = None
        self._keys: np.ndarray | None = keys
        if len(keys) and int(keys[-1]) - int(keys[0]) == len(keys) - 1:
            self._start, self._keys = int(keys[0]), None
        elif len(keys):
            self._keys = np.ascontiguousarray(keys)

    @property
    def keys_array(self) -> np.ndarray:
        """(N,) the sorted keys, int64."""
        if self._start is not None:
            return np.arange(self._start, self._start + len(self.offsets), dtype=np.int64)
        assert self._keys is not None
        return self._keys

    def key_sequence(self) -> Sequence[int]:
        """The sorted keys as a sequence: a ``range`` when consecutive, else the int64 array."""
        if self._start is not None:
            return range(self._start, self._start + len(self.offsets))
        assert self._keys is not None
        return self._keys

    def position(self, key: object) -> int:
        """Row of ``key`` in :attr:`offsets` (-1 when absent)."""
        if not isinstance(key, (int, np.integer)) or isinstance(key, bool):
            return -1
        key = int(key)
        if self._start is not None:
            i = key - self._start
            return i if 0 <= i < len(self.offsets) else -1
        assert self._keys is not None
        i = int(np.searchsorted(self._keys, key))
        return i if i < len(self._keys) and int(self._keys[i]) == key else -1

    def __getitem__(self, key: int) -> int:
        i = self.position(key)
        if i < 0:
            raise KeyError(key)
        return int(self.offsets[i])

    def __contains__(self, key: object) -> bool:
        return self.position(key) >= 0

    def __iter__(self) -> Iterator[int]:
        for lo in range(0, len(self), _CHUNK):
            yield from self.keys_array[lo : lo + _CHUNK].tolist()

    def __len__(self) -> int:
        return len(self.offsets)
