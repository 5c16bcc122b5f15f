"""``open_dataset``: one entry point for folders, RecordIO files and synthetic faces;
``open_pool``: several of them as one pretraining pool."""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset

from lafslib.data.base import FaceDataset
from lafslib.data.folder import ImageFolderDataset, find_sidecar
from lafslib.data.recordio import RecordIODataset
from lafslib.data.synthetic import SyntheticFaces
from lafslib.errors import DataError, InputNotFoundError

__all__ = ["open_dataset", "open_pool", "SourcePool"]


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


class SourcePool(ConcatDataset):
    """Several unlabelled sources read as one dataset (index ``i`` of the pool is an index of
    the source it falls in), for pretraining on, e.g., WebFace4M plus extra unlabelled faces.

    Args:
        sources: the opened datasets, in order.
        names: their paths, for messages.
    """

    def __init__(self, sources: list[FaceDataset], names: list[str]) -> None:
        super().__init__(sources)
        self.names = names

    def sample(self, index: int) -> dict[str, Any]:
        """The raw sample dict at pool index ``index`` (see :meth:`FaceDataset.sample`)."""
        source = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[source - 1] if source else 0
        return self.datasets[source].sample(index - start)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n} ({len(d)})" for n, d in zip(self.names, self.datasets))
        return f"SourcePool({sizes})"


def _landmark_count(dataset: FaceDataset) -> int | None:
    table = getattr(dataset, "landmarks", None)
    return None if table is None else table.num_points


def open_pool(
    sources: list[str | os.PathLike[str]],
    landmarks: list[str | os.PathLike[str] | None] | None = None,
    transform: Callable[[dict[str, Any]], Any] | None = None,
) -> SourcePool:
    """Open every unlabelled source (folders, ``.rec`` files) and concatenate them.

    Every source is opened before this returns, so a missing source or a sidecar that does not
    match its images fails before any training, naming it.

    Args:
        sources: folders and ``.rec`` files.
        landmarks: one sidecar per source; None (or a None entry): the one beside the source.
        transform: callable applied to each sample dict of every source.

    Raises:
        InputNotFoundError: a source does not exist.
        DataError: the sources carry different numbers of landmarks per face (or a sidecar does
            not match its source's images: the error names it).
    """
    sidecars = list(landmarks) if landmarks is not None else [None] * len(sources)
    if len(sidecars) != len(sources):
        raise DataError(f"{len(sources)} sources but {len(sidecars)} landmark sidecars")
    opened, counts = [], {}
    for source, sidecar in zip(sources, sidecars):
        if str(source) == "synthetic":
            raise DataError("'synthetic' cannot be one source of a pool")
        dataset = open_dataset(source, landmarks="auto" if sidecar is None else sidecar,
                               transform=transform)  # fmt: skip
        opened.append(dataset)
        counts[str(source)] = _landmark_count(dataset)
    if len(set(counts.values())) > 1:
        raise DataError(
            "the sources of data.train carry different landmarks per face: "
            + ", ".join(f"{k}: {v if v is not None else 'none'}" for k, v in counts.items())
        )
    return SourcePool(opened, [str(s) for s in sources])
