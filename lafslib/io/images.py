"""Robust image decoding: every readable image becomes uint8 RGB; unreadable ones are counted.

Grayscale, palette, RGBA/LA (composited on black), CMYK, 16-bit and other modes are converted
to 8-bit RGB; huge images are decoded at reduced size (JPEG draft mode) and resized so that the
longest side is at most ``max_side``. Photos carrying an EXIF orientation tag (phones) are turned
upright, as every viewer shows them. Truncated, zero-byte and non-image files raise
:class:`BadImageError`, which datasets catch, count and report with a warning naming the file.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lafslib.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "BadImageCounter",
    "decode_image",
    "read_image",
    "is_image_file",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_PIXELS = 12_000 * 12_000  # refuse decompression bombs beyond this many pixels
ORIENTATION_TAG = 0x0112  # EXIF Orientation


class BadImageError(DataError):
    """An image file that cannot be decoded; the message names the file and the reason."""


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the file name has a known image extension."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size else 1.0
        scale = 255.0 / (65535.0 if top > 255 else max(top, 1.0))
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _upright(img: Image.Image) -> Image.Image:
    """The image as displayed: EXIF orientation 2-8 applied (flips and quarter turns)."""
    if img.getexif().get(ORIENTATION_TAG, 1) in (1, None):
        return img
    return ImageOps.exif_transpose(img)


def decode_image(data: bytes, name: str = "<bytes>", max_side: int | None = 4096) -> np.ndarray:
    """Decode encoded image bytes to uint8 RGB ``(H, W, 3)``.

    Args:
        data: the encoded file contents (JPEG, PNG, ...).
        name: file name used in error messages.
        max_side: longest side after decoding (huge images are reduced); None keeps the size.

    Raises:
        BadImageError: empty, truncated or non-image data.
    """
    if not data:
        raise BadImageError(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise BadImageError(
                    f"{name}: {img.width}x{img.height} pixels exceeds the limit of {MAX_PIXELS}"
                )
            if max_side is not None and max(img.size) > max_side and img.format == "JPEG":
                img.draft("RGB", (max_side, max_side))
            img.load()
            img = _to_rgb(_upright(img))
            if max_side is not None and max(img.size) > max_side:
                img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).copy()
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(f"{name}: cannot decode image (not a known image format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"{name}: cannot decode image ({exc})") from None
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"{name}: {exc}") from None


def read_image(path: str | os.PathLike[str], max_side: int | None = 4096) -> np.ndarray:
    """Read and decode an image file to uint8 RGB ``(H, W, 3)``; see :func:`decode_image`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadImageError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    return decode_image(data, str(path), max_side)


class BadImageCounter:
    """Counts skipped images by reason and warns once per file."""

    def __init__(self) -> None:
        self.count = 0
        self.files: list[str] = []
        self.reasons: Counter[str] = Counter()

    def record(self, error: BadImageError, name: str) -> None:
        """Count one unreadable image and warn with its name."""
        self.count += 1
        if len(self.files) < 1000:
            self.files.append(name)
        self.reasons[str(error).split(": ", 1)[-1].split(" (")[0]] += 1
        warnings.warn(f"skipping unreadable image {error}", RuntimeWarning, stacklevel=3)
