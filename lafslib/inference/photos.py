"""Photos as users hand them over: file paths, numpy arrays or PIL images, one or many.

Every photo becomes a uint8 RGB ``(H, W, 3)`` array. Files are read with
:func:`lafslib.io.read_image` (upright, as their EXIF orientation says where it applies); PIL
images are turned upright too; arrays are taken as RGB. What cannot be a photo raises a
:class:`~lafslib.errors.DataError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.errors import DataError

__all__ = ["Photo", "as_rgb", "photo_name", "split_batch"]

Photo = Any
"""A path, a uint8 RGB array ``(H, W, 3)`` or a PIL image."""


def photo_name(photo: Photo, index: int = 0) -> str:
    """What messages call a photo: its path, or ``<array i>`` / ``<image i>``."""
    if isinstance(photo, (str, os.PathLike)):
        return str(photo)
    return f"<{'array' if isinstance(photo, np.ndarray) else 'image'} {index}>"


def as_rgb(photo: Photo, index: int = 0) -> np.ndarray:
    """One photo as uint8 RGB ``(H, W, 3)``.

    Args:
        photo: a path, a uint8 array ``(H, W, 3)`` RGB (``(H, W)`` grey and ``(H, W, 4)``
            RGBA are converted), or a PIL image.
        index: its position in a batch, for messages.

    Raises:
        BadImageError: a file that cannot be read or decoded.
        DataError: an array or object that is not an image.
    """
    if isinstance(photo, (str, os.PathLike)):
        from lafslib.io import read_image

        path = Path(photo)
        if not path.is_file():
            from lafslib.errors import InputNotFoundError

            raise InputNotFoundError(f"photo not found: {path}")
        return read_image(path)
    if isinstance(photo, np.ndarray):
        if photo.dtype != np.uint8:
            raise DataError(
                f"{photo_name(photo, index)}: expected a uint8 RGB array, got dtype {photo.dtype}"
            )
        if photo.ndim == 2:
            return np.repeat(photo[:, :, None], 3, axis=2)
        if photo.ndim == 3 and photo.shape[2] in (3, 4) and min(photo.shape[:2]) > 0:
            return np.ascontiguousarray(photo[:, :, :3])
        raise DataError(
            f"{photo_name(photo, index)}: expected an (H, W, 3) RGB array, got shape {photo.shape}"
        )
    from PIL import Image, ImageOps

    if isinstance(photo, Image.Image):
        return np.asarray(ImageOps.exif_transpose(photo).convert("RGB"), dtype=np.uint8).copy()
    raise DataError(
        f"{photo_name(photo, index)}: not a photo ({type(photo).__name__}); give a path, a uint8 "
        "RGB array or a PIL image"
    )


def split_batch(photos: Photo | Sequence[Photo]) -> tuple[list[Photo], bool]:
    """``(photos as a list, True when one photo was given)``: a path, a PIL image or a 3-D
    array is one photo; a list or tuple, or a 4-D array ``(N, H, W, 3)``, is many."""
    if isinstance(photos, np.ndarray):
        return (list(photos), False) if photos.ndim == 4 else ([photos], True)
    if isinstance(photos, (list, tuple)):
        return list(photos), False
    return [photos], True
