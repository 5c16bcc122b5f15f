"""``lafs landmarks``: a landmark sidecar for an already-aligned dataset (folder or ``.rec``)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.data.sources import open_dataset
from lafslib.io import BadImageError
from lafslib.landmarks.detectors import FaceDetector
from lafslib.landmarks.store import save_landmarks
from lafslib.landmarks.template import template_for_size

__all__ = ["AnnotateReport", "annotate_dataset"]


@dataclass
class AnnotateReport:
    """Counts of an annotation run; ``fallback`` lists the keys that got the template."""

    images: int = 0
    detected: int = 0
    fallback: list[str | int] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    out: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "images": self.images,
            "detected": self.detected,
            "fallback": [str(k) for k in self.fallback],
            "unreadable": self.unreadable,
            "out": self.out,
        }


def _points(face_landmarks: np.ndarray, layout: str, points: str) -> np.ndarray:
    if points == "native" or layout == "learned":
        return face_landmarks
    if points == "68":
        if layout != "ibug68":
            raise ValueError(f"--points 68 needs a 68-point detector, got {layout} landmarks")
        return face_landmarks
    from lafslib.landmarks.detectors import Face

    return Face(np.zeros(4), 1.0, face_landmarks, layout).five_points()


def annotate_dataset(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    detector: FaceDetector | None,
    points: str = "5",
    fallback: str = "template",
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
    batch_size: int = 64,
) -> AnnotateReport:
    """Write landmarks of every image of an aligned dataset as a sidecar.

    Args:
        data: image folder or ``.rec`` file.
        out: sidecar path (``.csv`` keyed by relative path, ``.npz`` by path or record index;
            a ``.rec`` dataset needs ``.npz``).
        detector: None writes the canonical ArcFace template for every image (the explicit
            ``--template`` choice); else the detector is run on every image.
        points: ``"5"`` (ArcFace order), ``"68"`` (iBUG) or ``"native"`` (what the detector
            gives, e.g. the N points of a learned net).
        fallback: images without a detected face get the ``"template"``, or ``"error"`` stops.
        progress: wraps the index iterator, e.g. ``lambda it, n: tqdm(it, total=n)``.
        batch_size: images per pass for detectors with ``detect_batch`` (learned nets).
    """
    if points not in ("5", "68", "native"):
        raise ValueError(f"points must be '5', '68' or 'native', got {points!r}")
    if fallback not in ("template", "error"):
        raise ValueError(f"fallback must be 'template' or 'error', got {fallback!r}")
    out = Path(out)
    if str(data).endswith(".rec") and out.suffix != ".npz":
        raise ValueError(f"{out}: a .rec dataset is keyed by record index: use an .npz sidecar")
    if detector is None and points != "5":
        raise ValueError("the template gives 5 points: use --points 5 with --template")
    dataset = open_dataset(data, landmarks=None)
    count = len(dataset)
    report = AnnotateReport(images=count, out=str(out))
    keys: list[str | int] = []
    rows: list[np.ndarray] = []
    batched = hasattr(detector, "detect_batch")
    step = batch_size if batched else 1
    starts: Iterable[int] = range(0, count, step)
    if progress is not None:
        starts = progress(starts, math.ceil(count / step))
    for start in starts:
        loaded = []
        for i in range(start, min(start + step, count)):
            try:
                loaded.append((dataset._landmark_key(i), dataset.sample(i)))
            except BadImageError as exc:
                report.unreadable.append(str(exc))
        if not loaded:
            continue
        if detector is None:
            found = [None] * len(loaded)
        elif batched:
            found = [[f] for f in detector.detect_batch([s["image"] for _, s in loaded])]
        else:
            found = [detector.detect(s["image"], key) for key, s in loaded]
        for (key, sample), faces in zip(loaded, found):
            size = sample["image"].shape[0]
            if detector is None:
                rows.append(template_for_size(size))
            elif faces:
                face = max(faces, key=lambda f: f.area)
                rows.append(_points(face.landmarks, face.layout, points))
                report.detected += 1
            elif fallback == "error":
                raise ValueError(f"{data}: no face found in {sample['path']}")
            elif points == "68":
                raise ValueError(
                    f"{data}: no face found in {sample['path']} and the template has 5 points"
                )
            else:
                rows.append(template_for_size(size))
                report.fallback.append(key)
            keys.append(key)
    if not rows:
        raise ValueError(f"{data}: no readable images")
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"{data}: the detector returned different point counts per image")
    save_landmarks(out, keys, np.stack(rows))
    return report
