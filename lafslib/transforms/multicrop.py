"""DINO random multi-crop views, drawn per face and rendered per batch on the training device.

The DINO random-crop recipe adapted to 112x112 faces: 2 global crops (112 px, scale 0.4-1) and
8 local crops (48 px, 6x6 tokens of 8 px, scale 0.05-0.4), each with flip, colour jitter (0.4,
0.4, 0.2, 0.1, p 0.8), grayscale (p 0.2) and Gaussian blur (p 1.0 / 0.1 for the globals, 0.5
for the locals) plus solarisation (p 0.2) on the second global view (Caron et al., ICCV 2021;
the random-crop baseline of LAFS, CVPR 2024). As :class:`~lafslib.transforms.views.LAFSViews`:
:meth:`MultiCropViews.draw` per face, :meth:`MultiCropViews.render` per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lafslib.landmarks.grid import FLIP_5
from lafslib.landmarks.template import landmarks68_to_5, template_for_size
from lafslib.transforms.crops import (
    UNIFORMS_PER_CROP,
    crop_axes,
    random_resized_boxes,
    render_crops,
)
from lafslib.transforms.photometric import ColourAugment
from lafslib.transforms.relight import relight, relight_uniforms

__all__ = ["MultiCropViews"]


def grid_centers(grid: int) -> torch.Tensor:
    """(grid * grid, 2) token centres of a square view in [0, 1], row by row, as (x, y)."""
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def five_points(landmarks: np.ndarray | None, size: int) -> np.ndarray:
    """ArcFace-order 5 points (pixels) from 5 or 68 landmarks, else the template."""
    pts = None if landmarks is None else np.asarray(landmarks, dtype=np.float64)
    if pts is not None and len(pts) == 68:
        pts = landmarks68_to_5(pts)
    if pts is None or len(pts) != 5:
        pts = template_for_size(size)
    return np.asarray(pts, dtype=np.float64)


class MultiCropViews:
    """DINO random multi-crop views (the random-crop baseline of LAFS).

    Args:
        global_views: number of global crops (2).
        local_views: number of local crops (8).
        image_size: global crop size in pixels (112).
        local_size: local crop size in pixels (48: 6x6 tokens of 8 px).
        global_scale: RandomResizedCrop area range of the globals.
        local_scale: RandomResizedCrop area range of the locals.
        patch_size: token size, for ``token_centers``.
        colour_strength: scales colour jitter, grayscale and solarisation (1: DINO's).
        relight_strength: largest amplitude of a random directional light ramp per view
            (:func:`lafslib.transforms.relight.relight`; 0: off).
    """

    def __init__(
        self,
        global_views: int = 2,
        local_views: int = 8,
        image_size: int = 112,
        local_size: int = 48,
        global_scale: Sequence[float] = (0.4, 1.0),
        local_scale: Sequence[float] = (0.05, 0.4),
        patch_size: int = 8,
        colour_strength: float = 1.0,
        relight_strength: float = 0.0,
    ) -> None:
        if global_views < 1:
            raise ValueError(f"need at least one global view, got {global_views}")
        if relight_strength < 0:
            raise ValueError(f"relight_strength must be >= 0, got {relight_strength}")
        self.global_views = global_views
        self.local_views = local_views
        self.sizes = (image_size, local_size)
        self.scales = (tuple(global_scale), tuple(local_scale))
        self.patch_size = patch_size
        self.colour = ColourAugment.with_strength(colour_strength)
        self.relight_strength = relight_strength
        # per global view: blur p 1.0 then 0.1, solarisation only on the second; locals 0.5, 0
        self.global_blur_p = torch.tensor([1.0] + [0.1] * (global_views - 1))
        self.global_solarize_p = torch.tensor([0.0] + [0.2 * colour_strength] * (global_views - 1))
        self.local_blur_p = torch.full((local_views,), 0.5)
        self.local_solarize_p = torch.zeros(local_views)
        self.centers = (
            grid_centers(image_size // patch_size),
            grid_centers(local_size // patch_size),
        )

    def draw(self, sample: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The per-sample part of the views (CPU, e.g. in a DataLoader worker): the face as
        uint8, its 5 keypoints in every view, and every random draw, from the global torch RNG
        in one fixed order (crops and flips, relighting, colour), so that seeding it per sample
        makes a sample's views independent of batch, rank and device.

        Returns:
            ``image`` uint8 (3, H, W); ``keypoints`` (V, 5, 2) in [0, 1]; ``gx``/``gy`` (G, S)
            and ``local_gx``/``local_gy`` (L, S') sampling axes (:func:`crop_axes`);
            ``relight`` (V, 2) or (V, 0); ``colour`` float64 (V, 9).
        """
        img = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
        h, w = img.shape[-2:]
        five = five_points(sample.get("landmarks"), h)
        g, n_views = self.global_views, self.global_views + self.local_views
        r = torch.rand(n_views, UNIFORMS_PER_CROP, dtype=torch.float64).numpy()
        flip = r[:, 22] < 0.5
        plan: dict[str, torch.Tensor] = {"image": img}
        keypoints = []
        parts = (
            ("", slice(0, g), self.sizes[0], self.scales[0]),
            ("local_", slice(g, n_views), self.sizes[1], self.scales[1]),
        )
        for prefix, part, size, scale in parts:
            boxes = random_resized_boxes(r[part], h, w, scale)
            top, left, ch, cw = boxes.T
            kp = (five[None] - np.stack([left, top], 1)[:, None]) / np.stack([cw, ch], 1)[:, None]
            kp[flip[part]] = kp[flip[part]][:, FLIP_5] * [-1, 1] + [1, 0]
            keypoints.append(kp)
            plan[prefix + "gx"], plan[prefix + "gy"] = crop_axes(boxes, flip[part], size, h, w)
        plan["keypoints"] = torch.from_numpy(
            np.concatenate(keypoints).clip(0, 1).astype(np.float32)
        )
        plan["relight"] = (
            relight_uniforms(n_views) if self.relight_strength else torch.empty(n_views, 0)
        )
        plan["colour"] = ColourAugment.draw(n_views)
        return plan

    def render(self, plan: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """The views of a batch of :meth:`draw` results (stacked by ``default_collate``), on
        their device: one ``grid_sample`` and one colour pass per crop size.

        Returns:
            One dict per view, global views first: ``image`` (B, 3, S, S) in [-1, 1],
            ``token_centers`` (B, n, 2), ``keypoints`` (B, 5, 2), ``is_global``.
        """
        img = plan["image"]
        b, g = len(img), self.global_views
        n_views = g + self.local_views
        lit = plan["relight"]
        colour = plan["colour"]
        views: list[dict[str, Any]] = []
        for part, prefix, blur_p, solarize_p, centers in (
            (slice(0, g), "", self.global_blur_p, self.global_solarize_p, self.centers[0]),
            (slice(g, n_views), "local_", self.local_blur_p, self.local_solarize_p,
             self.centers[1]),
        ):  # fmt: skip
            v = part.stop - part.start
            if not v:
                continue
            crops = render_crops(img, plan[prefix + "gx"], plan[prefix + "gy"])
            crops = relight(crops, self.relight_strength, uniforms=lit[:, part].flatten(0, 1))
            images = self.colour(
                crops, blur_p.repeat(b), solarize_p.repeat(b), signed=True,
                uniforms=colour[:, part].flatten(0, 1),
            ).view(b, v, *crops.shape[1:])  # fmt: skip
            token_centers = centers.to(img.device).expand(b, -1, -1)
            views += [
                {
                    "image": images[:, i],
                    "token_centers": token_centers,
                    "keypoints": plan["keypoints"][:, part.start + i],
                    "is_global": part.start == 0,
                }
                for i in range(v)
            ]
        return views

    def __call__(self, sample: dict[str, Any]) -> list[dict[str, Any]]:
        """Views of ``sample["image"]`` (uint8 HxWx3 RGB), each with the 5 keypoints of
        ``sample["landmarks"]`` (5 or 68 points; the template when absent) for KP-RPE models:
        :meth:`draw` then :meth:`render` of a batch of one."""
        plan = {k: v[None] for k, v in self.draw(sample).items()}
        return [
            {k: (v[0] if torch.is_tensor(v) else v) for k, v in view.items()}
            for view in self.render(plan)
        ]
