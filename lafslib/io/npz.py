"""Memory maps of the arrays of an uncompressed ``.npz`` (what :func:`numpy.savez` writes).

:func:`numpy.load` reads ``.npz`` members into memory; a member stored without compression is
one ``.npy`` inside the zip file, so it can be memory-mapped at its offset instead: nothing is
read until touched, and every process that maps it shares the same page-cache pages.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["npz_member_map"]


def npz_member_map(
    path: str | os.PathLike[str], name: str, min_bytes: int = 0
) -> np.ndarray | None:
    """A read-only memory map of array ``name`` of the ``.npz`` at ``path``.

    Args:
        path: the ``.npz`` file.
        name: the array's name (its member is ``name + ".npy"``).
        min_bytes: a smaller member is not mapped (None is returned: read it instead).

    Returns:
        The array as a :class:`numpy.memmap`, or None when it is compressed, smaller than
        ``min_bytes``, Fortran-ordered or holds Python objects.

    Raises:
        KeyError: the archive holds no such array.
        zipfile.BadZipFile, ValueError: the archive or the ``.npy`` header is malformed.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name + ".npy")
    if info.compress_type != zipfile.ZIP_STORED or info.file_size < min_bytes:
        return None
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the local file header: its name and extra field precede the data
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"bad local header of {info.filename}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject or fortran:
        return None
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=tuple(shape), offset=offset)
