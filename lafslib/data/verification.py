"""insightface ``.bin`` verification sets (LFW, CFP-FP, AgeDB, CALFW, CPLFW): read and write.

A ``.bin`` file is a pickle of ``(bins, issame)``: ``bins`` is a list of ``2 * P`` encoded images
(JPEG/PNG bytes; pair ``i`` is ``bins[2i], bins[2i+1]``) and ``issame`` a list (or numpy bool
array) of ``P`` booleans. Pickles can execute arbitrary code, so the reader uses a restricted
unpickler that resolves no global except the few numpy names needed to rebuild a bool array,
and rejects everything else before it is called.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.errors import DataError, InputNotFoundError, UnsafeFileError
from lafslib.io import BadImageError, decode_image

__all__ = ["UnsafePickleError", "load_bin", "load_bin_raw", "write_bin"]

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class UnsafePickleError(UnsafeFileError):
    """A ``.bin`` pickle asked for something a verification set never contains."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: refusing to load '{module}.{name}': a .bin verification set holds "
            "only lists of image bytes and booleans (the file may be malicious)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in .bin files")


def _check_dtype(obj: Any, source: str) -> None:
    if isinstance(obj, np.ndarray) and obj.dtype != np.bool_:
        raise UnsafePickleError(f"{source}: unexpected array of dtype {obj.dtype} in .bin file")


def load_bin_raw(path: str | os.PathLike[str]) -> tuple[list[bytes], np.ndarray]:
    """Read a ``.bin`` safely without decoding: (encoded images, issame bool (P,))."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f".bin verification set not found: {path}")
    with path.open("rb") as f:
        try:
            obj = _RestrictedUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: not a readable .bin verification set ({exc})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DataError(f"{path}: expected a (bins, issame) pair, got {type(obj).__name__}")
    bins, issame = obj
    _check_dtype(issame, str(path))
    if not isinstance(bins, (list, tuple)) or not all(isinstance(b, bytes) for b in bins):
        raise DataError(f"{path}: 'bins' must be a list of encoded image bytes")
    issame = np.asarray(issame)
    if issame.dtype != np.bool_:
        if not all(isinstance(v, (bool, np.bool_)) for v in issame.tolist()):
            raise DataError(f"{path}: 'issame' must hold booleans")
        issame = issame.astype(bool)
    if len(bins) != 2 * len(issame):
        raise DataError(
            f"{path}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)})"
        )
    return list(bins), issame


def load_bin(
    path: str | os.PathLike[str], image_size: int | None = 112
) -> tuple[np.ndarray, np.ndarray]:
    """Load a verification set as decoded images.

    Args:
        path: the ``.bin`` file.
        image_size: images are resized to this square size when they differ (None: keep).

    Returns:
        images uint8 ``(2P, H, W, 3)`` RGB and issame bool ``(P,)``.
    """
    from PIL import Image

    bins, issame = load_bin_raw(path)
    images = None
    for i, data in enumerate(bins):
        try:
            img = decode_image(data, f"{path}[{i}]")
        except BadImageError as exc:
            raise DataError(f"{exc} (image {i} of pair {i // 2})") from None
        if image_size is not None and img.shape[:2] != (image_size, image_size):
            img = np.asarray(
                Image.fromarray(img).resize((image_size, image_size), Image.Resampling.BILINEAR)
            )
        if images is None:
            images = np.empty((len(bins), *img.shape), dtype=np.uint8)
        if img.shape != images.shape[1:]:
            raise DataError(f"{path}[{i}]: image shape {img.shape} differs from {images.shape}")
        images[i] = img
    if images is None:
        raise DataError(f"{path}: the verification set has no images")
    return images, issame


def write_bin(
    path: str | os.PathLike[str],
    images: np.ndarray | list[bytes],
    issame: np.ndarray | list[bool],
    quality: int = 95,
) -> Path:
    """Write a ``.bin`` verification set in the insightface format.

    Args:
        path: output file.
        images: uint8 ``(2P, H, W, 3)`` RGB arrays (JPEG-encoded here) or encoded bytes.
        issame: ``P`` booleans.
        quality: JPEG quality for array inputs.
    """
    from PIL import Image

    issame_list = [bool(v) for v in np.asarray(issame).tolist()]
    bins: list[bytes] = []
    for img in images:
        if isinstance(img, bytes):
            bins.append(img)
            continue
        buf = io.BytesIO()
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
        bins.append(buf.getvalue())
    if len(bins) != 2 * len(issame_list):
        raise ValueError(f"{len(bins)} images for {len(issame_list)} pairs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        pickle.dump((bins, issame_list), f, protocol=4)
    os.replace(tmp, path)
    return path
