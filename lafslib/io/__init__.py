"""Image reading and folder listing, used by ``landmarks`` and ``data`` alike.

The lowest layer that touches files of faces: it imports nothing of lafslib but
:mod:`lafslib.errors`.
"""

from lafslib.io.images import (
    IMAGE_EXTENSIONS,
    BadImageCounter,
    BadImageError,
    decode_image,
    is_image_file,
    read_image,
)
from lafslib.io.listing import list_images

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageCounter",
    "BadImageError",
    "decode_image",
    "is_image_file",
    "list_images",
    "read_image",
]
