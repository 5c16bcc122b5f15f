"""face-alignment's FAN (Bulat & Tzimiropoulos, ICCV 2017): 68 points, weights from a folder."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lafslib.landmarks.detectors.base import (
    Face,
    FaceDetector,
    MissingWeightsError,
    full_box,
    require,
)
from lafslib.landmarks.detectors.dlib import DlibDetector

__all__ = ["FANDetector"]


def _fan_files(box_source: str) -> list[str]:
    from face_alignment import api

    files = [os.path.basename(api.models_urls["2DFAN-4"])]
    if box_source == "sfd":
        from face_alignment.detection.sfd import sfd_detector

        files.append(os.path.basename(sfd_detector.models_urls["s3fd"]))
    return files


@contextlib.contextmanager
def _hub_dir(weights_dir: str | os.PathLike[str] | None) -> Iterator[Path]:
    """torch.hub's checkpoint folder, or a temporary hub whose checkpoints are ``weights_dir``."""
    import torch.hub

    if weights_dir is None:
        yield Path(torch.hub.get_dir()) / "checkpoints"
        return
    previous = torch.hub._hub_dir
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(Path(weights_dir).resolve(), Path(tmp) / "checkpoints")
        torch.hub.set_dir(tmp)
        try:
            yield Path(weights_dir)
        finally:
            torch.hub._hub_dir = previous


class FANDetector(FaceDetector):
    """face-alignment's FAN (2D, 68 points).

    Args:
        boxes: where face boxes come from: ``"sfd"`` (face-alignment's S3FD, needs its
            weights), ``"full"`` (the whole image: aligned crops), or a :class:`DlibDetector`
            (no detector weights needed).
        weights_dir: folder holding the weight files; default ``$TORCH_HOME/hub/checkpoints``.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        flip_input: average with the prediction on the mirrored crop.

    Raises:
        MissingWeightsError: weights absent and not downloadable (offline); names the files.
    """

    name = "face-alignment"
    num_points = 68

    def __init__(
        self,
        boxes: str | DlibDetector = "sfd",
        weights_dir: str | os.PathLike[str] | None = None,
        device: str = "auto",
        flip_input: bool = False,
    ) -> None:
        import torch

        fa = require("face_alignment", "detect")
        if isinstance(boxes, str) and boxes not in ("sfd", "full"):
            raise ValueError(f"FAN boxes must be 'sfd', 'full' or a DlibDetector, got {boxes!r}")
        self.box_source = boxes
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        needed = _fan_files(boxes if isinstance(boxes, str) else "external")
        with _hub_dir(weights_dir) as folder:
            missing = [f for f in needed if not (folder / f).is_file()]
            try:
                self._fa = fa.FaceAlignment(
                    fa.LandmarksType.TWO_D,
                    device=device,
                    flip_input=flip_input,
                    face_detector="sfd" if boxes == "sfd" else "folder",
                    compile=device.startswith("cuda"),
                )
            except OSError as exc:  # URLError and failed downloads are OSErrors
                if not missing:
                    raise
                raise MissingWeightsError(
                    f"face-alignment weights not found and not downloadable ({exc}). "
                    f"Put {', '.join(missing)} in {folder} (or pass a folder holding them with "
                    f"--weights DIR); download them on a connected machine from "
                    f"https://www.adrianbulat.com/downloads/python-fan/"
                ) from None

    def detect(self, image: np.ndarray, key: str | int | None = None) -> list[Face]:
        image = np.ascontiguousarray(image)
        if isinstance(self.box_source, DlibDetector):
            found = self.box_source.boxes(image)
        elif self.box_source == "full":
            found = [(full_box(image), 1.0)]
        else:
            found = [
                (np.asarray(d[:4], dtype=np.float64), float(d[4]))
                for d in self._fa.face_detector.detect_from_image(image.copy())
            ]
        if not found:
            return []
        boxes = [np.append(b, s) for b, s in found]
        pts = self._fa.get_landmarks_from_image(image, detected_faces=boxes)
        if pts is None:
            return []
        return [
            Face(box, score, np.asarray(p, dtype=np.float64)[:, :2], "ibug68")
            for (box, score), p in zip(found, pts)
        ]
