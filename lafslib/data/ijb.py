"""IJB-B / IJB-C 1:1 meta files, loose crops and their alignment; a writer for small test sets.

Layout of an IJB folder (as distributed with insightface's ``eval_ijbc.py``), for ``name`` in
``IJBB`` / ``IJBC`` (file names use the lower-case name)::

    <root>/meta/<name>_face_tid_mid.txt        image_name template_id media_id      (one face a line)
    <root>/meta/<name>_name_5pts_score.txt     image_name x0 y0 ... x4 y4 detector_score
    <root>/meta/<name>_template_pair_label.txt template_id_1 template_id_2 label (1 same, 0 not)
    <root>/loose_crop/<image_name>             loose face crops

The two per-face files list the same faces in the same order. A loose crop is aligned by its
5 points (insightface order, pixels) to the 112x112 ArcFace template; that template is the
96x112 one of the original protocol shifted by +8 px on x, which is how ``eval_ijbc.py`` builds
its target points. Malformed files raise :class:`IJBMetaError` naming the file and the line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lafslib.errors import DataError
from lafslib.landmarks.template import (
    similarity_transform,
    template_for_size,
    transform_points,
    warp_image,
)

__all__ = [
    "IJBMetaError",
    "IJBMeta",
    "ijb_meta_paths",
    "read_face_tid_mid",
    "read_name_5pts_score",
    "read_template_pair_label",
    "load_ijb_meta",
    "align_loose_crop",
    "load_aligned_faces",
    "write_ijb",
]


class IJBMetaError(DataError):
    """A malformed IJB meta file; the message names the file and the line."""


@dataclass
class IJBMeta:
    """The faces, templates and template pairs of an IJB-B/C 1:1 protocol.

    Attributes:
        root: the IJB folder.
        name: ``IJBB`` or ``IJBC`` (any name whose meta files exist).
        images: (N,) loose-crop file names, relative to ``root/loose_crop``.
        templates: (N,) template id of each face.
        medias: (N,) media id of each face (frames of one video share it).
        landmarks: (N, 5, 2) float32 5 points in loose-crop pixels, insightface order.
        scores: (N,) float32 detector (faceness) scores.
        pairs: (P, 2) template ids of each pair.
        labels: (P,) bool, True for a mated pair.
    """

    root: Path
    name: str
    images: list[str]
    templates: np.ndarray
    medias: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    pairs: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        """Path of the loose crop of face ``index``."""
        return self.root / "loose_crop" / self.images[index]


def ijb_meta_paths(root: str | os.PathLike[str], name: str = "IJBC") -> dict[str, Path]:
    """Paths of the three meta files and the loose-crop folder of an IJB set."""
    root = Path(root)
    low = name.lower()
    return {
        "face_tid_mid": root / "meta" / f"{low}_face_tid_mid.txt",
        "name_5pts_score": root / "meta" / f"{low}_name_5pts_score.txt",
        "template_pair_label": root / "meta" / f"{low}_template_pair_label.txt",
        "loose_crop": root / "loose_crop",
    }


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines of a file."""
    with open(path, encoding="utf-8") as f:
        return [(i, line.strip()) for i, line in enumerate(f, 1) if line.strip()]


def _has_data(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        return any(line.strip() for line in f)


def _locate(path: Path, row: int) -> int:
    """1-based line number of the ``row``-th (0-based) non-blank line."""
    return _data_lines(path)[row][0]


def _scan(path: Path, kinds: Sequence[type], what: str) -> None:
    """Find the first malformed line (slow path, only after a fast parse failed) and raise."""
    for lineno, line in _data_lines(path):
        fields = line.split()
        if len(fields) != len(kinds):
            raise IJBMetaError(
                f"{path}:{lineno}: expected {len(kinds)} fields ({what}), "
                f"got {len(fields)}: {line[:120]!r}"
            )
        for col, (kind, text) in enumerate(zip(kinds, fields), 1):
            try:
                kind(text)
            except ValueError:
                raise IJBMetaError(
                    f"{path}:{lineno}: field {col} ({what}) is not {kind.__name__}: {text!r}"
                ) from None
    raise IJBMetaError(f"{path}: could not be parsed as {what}")


def _load_table(path: Path, kinds: Sequence[type], what: str) -> np.ndarray:
    """A whitespace-separated table with a fixed number of columns, as strings (R, C)."""
    if not path.is_file():
        raise FileNotFoundError(f"IJB meta file not found: {path}")
    if not _has_data(path):
        raise IJBMetaError(f"{path}: empty file (expected lines '{what}')")
    try:
        table = np.loadtxt(path, dtype=str, ndmin=2, comments=None)
    except ValueError:
        _scan(path, kinds, what)
        raise  # pragma: no cover - _scan always raises
    if table.shape[1] != len(kinds):
        _scan(path, kinds, what)
    return table


def _column(path: Path, table: np.ndarray, col: int, kinds: Sequence[type], what: str):
    kind = kinds[col]
    try:
        return table[:, col].astype(np.int64 if kind is int else np.float64)
    except ValueError:
        _scan(path, kinds, what)
        raise  # pragma: no cover


def read_face_tid_mid(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``image_name tid mid`` lines -> (names, template ids (N,), media ids (N,))."""
    path = Path(path)
    kinds, what = (str, int, int), "image_name template_id media_id"
    table = _load_table(path, kinds, what)
    tids = _column(path, table, 1, kinds, what)
    mids = _column(path, table, 2, kinds, what)
    return table[:, 0].tolist(), tids, mids


def read_name_5pts_score(
    path: str | os.PathLike[str],
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``image_name x0 y0 ... x4 y4 score`` lines -> (names, (N, 5, 2) points, (N,) scores)."""
    path = Path(path)
    kinds, what = (str,) + (float,) * 11, "image_name x0 y0 x1 y1 x2 y2 x3 y3 x4 y4 score"
    table = _load_table(path, kinds, what)
    values = np.stack([_column(path, table, c, kinds, what) for c in range(1, 12)], axis=1)
    bad = np.nonzero(~np.isfinite(values).all(axis=1))[0]
    if len(bad):
        raise IJBMetaError(f"{path}:{_locate(path, int(bad[0]))}: non-finite landmark or score")
    points = values[:, :10].reshape(-1, 5, 2).astype(np.float32)
    return table[:, 0].tolist(), points, values[:, 10].astype(np.float32)


def read_template_pair_label(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``tid1 tid2 label`` lines -> ((P, 2) template ids, (P,) bool labels).

    Parsed in C (``np.loadtxt``) so that the 15.6M pairs of IJB-C load in seconds; a malformed
    line is then located and reported by a slower scan.
    """
    path = Path(path)
    what = "template_id_1 template_id_2 label"
    if not path.is_file():
        raise FileNotFoundError(f"IJB meta file not found: {path}")
    if not _has_data(path):
        raise IJBMetaError(f"{path}: empty file (expected lines '{what}')")
    try:
        table = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
    except ValueError:
        _scan(path, (int, int, int), what)
        raise  # pragma: no cover
    if table.shape[1] != 3 or len(table) == 0:
        _scan(path, (int, int, int), what)
    bad = np.nonzero((table[:, 2] != 0) & (table[:, 2] != 1))[0]
    if len(bad):
        row = int(bad[0])
        raise IJBMetaError(
            f"{path}:{_locate(path, row)}: label must be 0 or 1, got {int(table[row, 2])}"
        )
    return table[:, :2].copy(), table[:, 2] == 1


def load_ijb_meta(root: str | os.PathLike[str], name: str = "IJBC") -> IJBMeta:
    """Read and cross-check the meta files of an IJB set (see the module docstring)."""
    root = Path(root)
    paths = ijb_meta_paths(root, name)
    if not paths["face_tid_mid"].parent.is_dir():
        raise FileNotFoundError(
            f"{root}: no meta/ folder; expected meta/{name.lower()}_face_tid_mid.txt, "
            f"meta/{name.lower()}_name_5pts_score.txt, meta/{name.lower()}_template_pair_label.txt"
        )
    names, tids, mids = read_face_tid_mid(paths["face_tid_mid"])
    names5, points, scores = read_name_5pts_score(paths["name_5pts_score"])
    if len(names5) != len(names):
        raise IJBMetaError(
            f"{paths['name_5pts_score']} lists {len(names5)} faces but "
            f"{paths['face_tid_mid']} lists {len(names)}; they must list the same faces in order"
        )
    mismatch = next((i for i, (a, b) in enumerate(zip(names, names5)) if a != b), None)
    if mismatch is not None:
        raise IJBMetaError(
            f"{paths['name_5pts_score']}:{_locate(paths['name_5pts_score'], mismatch)}: face "
            f"{names5[mismatch]!r} but {paths['face_tid_mid']} has {names[mismatch]!r} at the "
            "same position"
        )
    pairs, labels = read_template_pair_label(paths["template_pair_label"])
    known = np.unique(tids)
    unknown = ~np.isin(pairs, known).all(axis=1)
    if unknown.any():
        row = int(np.nonzero(unknown)[0][0])
        raise IJBMetaError(
            f"{paths['template_pair_label']}:{_locate(paths['template_pair_label'], row)}: "
            f"template {pairs[row].tolist()} not in {paths['face_tid_mid']} "
            f"({int(unknown.sum())} pairs reference unknown templates)"
        )
    return IJBMeta(root, name, names, tids, mids, points, scores, pairs, labels)


def align_loose_crop(
    image: np.ndarray, landmarks: np.ndarray, size: int = 112
) -> tuple[np.ndarray, np.ndarray]:
    """Align a loose crop by its 5 points to the ArcFace template.

    The ArcFace 112x112 template is the 96x112 template of the IJB protocol with +8 px on x
    (``eval_ijbc.py``); the warp is bilinear with a black border, as ``cv2.warpAffine``.

    Args:
        image: (H, W, 3) uint8 RGB loose crop.
        landmarks: (5, 2) points in crop pixels, insightface order.
        size: output side (the template is scaled from 112).

    Returns:
        The (size, size, 3) aligned face and its (5, 2) points in aligned pixels.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2):
        raise ValueError(f"need (5, 2) landmarks, got {landmarks.shape}")
    m = similarity_transform(landmarks, template_for_size(size))
    return warp_image(image, m, size), transform_points(landmarks, m)


def load_aligned_faces(
    meta: IJBMeta, indices: Sequence[int], size: int = 112, workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Read and align faces of an IJB set.

    Args:
        meta: the set.
        indices: faces to load.
        size: aligned side.
        workers: decoding threads (0: in this thread).

    Returns:
        uint8 (B, size, size, 3) RGB faces and float32 (B, 5, 2) keypoints in [0, 1].
    """
    from lafslib.io import read_image

    def one(i: int) -> tuple[np.ndarray, np.ndarray]:
        return align_loose_crop(read_image(meta.image_path(i)), meta.landmarks[i], size)

    if workers > 0:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(one, indices))
    else:
        done = [one(int(i)) for i in indices]
    if not done:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, 5, 2), np.float32)
    images = np.stack([d[0] for d in done])
    keypoints = (np.stack([d[1] for d in done]) / size).astype(np.float32)
    return images, keypoints


def write_ijb(
    root: str | os.PathLike[str],
    name: str,
    crops: Sequence[np.ndarray],
    templates: Sequence[int],
    medias: Sequence[int],
    landmarks: np.ndarray,
    scores: Sequence[float],
    pairs: np.ndarray,
    labels: Sequence[bool | int],
    ext: str = ".jpg",
) -> Path:
    """Write an IJB-like folder (meta files + loose crops named ``1.jpg``, ``2.jpg``, ...).

    Used by tests and demos to build small sets in the layout that :func:`load_ijb_meta` reads.

    Args:
        root: output folder.
        name: set name (``IJBC``); the meta files use its lower-case form.
        crops: N uint8 (H, W, 3) RGB loose crops.
        templates, medias: (N,) ids.
        landmarks: (N, 5, 2) points in crop pixels.
        scores: (N,) detector scores.
        pairs: (P, 2) template ids; labels (P,) 1 for mated.
        ext: image format of the crops (``.jpg`` at quality 95, or lossless ``.png``).

    Returns:
        ``root``.
    """
    from PIL import Image

    root = Path(root)
    paths = ijb_meta_paths(root, name)
    paths["loose_crop"].mkdir(parents=True, exist_ok=True)
    paths["face_tid_mid"].parent.mkdir(parents=True, exist_ok=True)
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(len(crops), 10)
    n = len(crops)
    if not (len(templates) == len(medias) == len(scores) == n):
        raise ValueError("crops, templates, medias, landmarks and scores need the same length")
    names = [f"{i + 1}{ext}" for i in range(n)]
    for file, crop in zip(names, crops):
        Image.fromarray(np.asarray(crop, dtype=np.uint8)).save(
            paths["loose_crop"] / file, quality=95
        )
    paths["face_tid_mid"].write_text(
        "".join(f"{f} {int(t)} {int(m)}\n" for f, t, m in zip(names, templates, medias))
    )
    paths["name_5pts_score"].write_text(
        "".join(
            f"{f} " + " ".join(f"{v:.4f}" for v in pts) + f" {float(s):.6f}\n"
            for f, pts, s in zip(names, landmarks, scores)
        )
    )
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    paths["template_pair_label"].write_text(
        "".join(f"{int(a)} {int(b)} {int(bool(y))}\n" for (a, b), y in zip(pairs, labels))
    )
    return root
