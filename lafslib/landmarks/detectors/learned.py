"""The landmark CNN of an exported Part fViT, run on aligned crops."""

from __future__ import annotations

import os

import numpy as np

from lafslib.landmarks.detectors.base import Face, FaceDetector, full_box

__all__ = ["LearnedLandmarkDetector"]


class LearnedLandmarkDetector(FaceDetector):
    """The landmark CNN of an exported Part fViT, run on aligned crops.

    Args:
        export: a folder written by ``lafs export`` / ``lafs finetune`` holding a model with a
            ``landmark_net`` (Part fViT).
        device: torch device.
    """

    name = "learned"

    def __init__(self, export: str | os.PathLike[str], device: str = "cpu") -> None:
        import torch

        from lafslib.models.export import load_export

        model = load_export(export)
        net = getattr(model, "landmark_net", None)
        if net is None:
            raise ValueError(f"{export}: the exported model has no landmark network (Part fViT)")
        info = model.pretrained_cfg
        self._net = net.to(device).eval()
        self._device = device
        self._mean = torch.tensor(info.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(info.std).view(1, 3, 1, 1)
        self._size = info.input_size[1:]
        self.num_points = int(net.num_landmarks)

    def detect(self, image: np.ndarray, key: str | int | None = None) -> list[Face]:
        return [self.detect_batch([image])[0]]

    def detect_batch(self, images: list[np.ndarray]) -> list[Face]:
        """One face per image (the whole crop), predicted in one batched pass; images of the
        same size (aligned crops)."""
        import torch
        import torch.nn.functional as F

        h, w = images[0].shape[:2]
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        if (h, w) != tuple(self._size):
            x = F.interpolate(x, size=self._size, mode="bilinear", align_corners=False)
        x = (x - self._mean) / self._std
        with torch.no_grad():
            pts = self._net(x.to(self._device)).cpu().double().numpy()
        return [Face(full_box(images[0]), 1.0, p * np.array([w, h]), "learned") for p in pts]
