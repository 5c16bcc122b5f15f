"""``open_dataset``: one entry point for folders, RecordIO files and synthetic faces."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lafslib.data.base import FaceDataset
from lafslib.data.folder import ImageFolderDataset, find_sidecar
from lafslib.data.recordio import RecordIODataset
from lafslib.data.synthetic import SyntheticFaces
from lafslib.errors import InputNotFoundError

__all__ = ["open_dataset"]


def open_dataset(
    source: str | os.PathLike[str],
    labelled: bool = False,
    landmarks: str | os.PathLike[str] | None = "auto",
    transform: Callable[[dict[str, Any]], Any] | None = None,
    synthetic_identities: int = 64,
    synthetic_per_identity: int = 8,
    synthetic_size: int = 112,
    seed: int = 0,
) -> FaceDataset | SyntheticFaces:
    """Open a training source.

    Args:
        source: an image folder, a ``.rec`` file, or ``"synthetic"``.
        labelled: folders only: one sub-folder per identity.
        landmarks: sidecar path; ``"auto"`` uses ``landmarks*.csv|npz`` next to the data when
            present; None attaches none. Synthetic faces always carry exact 5-point landmarks.
        transform: callable applied to each sample dict.
        synthetic_identities, synthetic_per_identity, synthetic_size, seed: synthetic options.
    """
    if str(source) == "synthetic":
        return SyntheticFaces(
            synthetic_identities, synthetic_per_identity, synthetic_size, seed, transform
        )
    path = Path(source)
    if landmarks == "auto":
        landmarks = find_sidecar(path)
    if path.suffix == ".rec":
        return RecordIODataset(path, landmarks=landmarks, transform=transform)
    if path.is_dir():
        return ImageFolderDataset(path, labelled=labelled, landmarks=landmarks, transform=transform)
    raise InputNotFoundError(
        f"training data not found or not supported: {path} (expected a folder, a .rec file, "
        "or 'synthetic')"
    )
