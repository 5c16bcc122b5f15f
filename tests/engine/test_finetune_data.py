"""Finetuning items: decoded in the loader, converted and flipped on the training device."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import default_collate

from lafslib.data import render_face
from lafslib.engine.finetune_data import FaceTransform, faces_on_device


def test_flip_is_drawn_per_face_and_applied_on_the_device() -> None:
    face = {**render_face(1, 0), "label": 3}
    face["landmarks"] = face["landmarks5"]
    torch.manual_seed(0)
    items = [FaceTransform()(face) for _ in range(16)]
    flips = [bool(item[3]) for item in items]
    assert any(flips) and not all(flips) and items[0][0].dtype == torch.uint8
    x, y, kp = faces_on_device(default_collate(items), torch.device("cpu"))
    plain = torch.from_numpy(face["image"]).permute(2, 0, 1).float() / 127.5 - 1
    w, h = face["image"].shape[1], face["image"].shape[0]
    points = torch.as_tensor(face["landmarks5"], dtype=torch.float32) / torch.tensor([w, h])
    assert y.tolist() == [3] * 16
    for i, flipped in enumerate(flips):
        torch.testing.assert_close(x[i], plain.flip(-1) if flipped else plain)
        if flipped:  # the image-left eye of the mirror image is the right eye, mirrored
            torch.testing.assert_close(kp[i, 0], torch.stack([1 - points[1, 0], points[1, 1]]))
            torch.testing.assert_close(kp[i, 2, 0], 1 - points[2, 0])
        else:
            torch.testing.assert_close(kp[i], points)
    assert (kp[:, 0, 0] < kp[:, 1, 0]).all()  # left/right order survives the flip


def test_no_flip_when_flip_is_off() -> None:
    face = {**render_face(0, 0), "label": 0}
    items = [FaceTransform(flip=False)(face) for _ in range(8)]
    assert not any(bool(item[3]) for item in items)
    x, _, _ = faces_on_device(default_collate(items), torch.device("cpu"))
    expected = torch.from_numpy(np.ascontiguousarray(face["image"])).permute(2, 0, 1)
    torch.testing.assert_close(x[0], expected.float() / 127.5 - 1)
