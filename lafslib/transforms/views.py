"""LAFS landmark views for DINO-style self-supervision (LAFS, CVPR 2024).

Views are made in two steps, so that a DataLoader worker does only the cheap per-face part and
the training device renders a whole batch: :meth:`LAFSViews.draw` (per face: the landmark grid
moved with every view's crop and flip, and every random draw) and :meth:`LAFSViews.render`
(per batch: one ``grid_sample`` for the crops, one colour pass, one per view size for the
mosaics). :class:`~lafslib.transforms.multicrop.MultiCropViews`, the random-crop baseline,
works the same way with the same colour augmentation, so the two differ only in where the
pixels come from.

A view is a dict ``{"image": float (B, 3, S, S) in [-1, 1], "token_centers": float (B, n, 2)
in [0, 1] (where each token came from, in source-image coordinates), "keypoints": (B, 5, 2),
"is_global": bool}``; global views come first. :mod:`~lafslib.transforms.view_batch` groups
them by size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lafslib.errors import DataError
from lafslib.landmarks.grid import FLIP_5, grid_flip_index, landmark_grid
from lafslib.landmarks.template import template_for_size
from lafslib.transforms.crops import (
    UNIFORMS_PER_CROP,
    crop_axes,
    random_resized_boxes,
    render_crops,
)
from lafslib.transforms.landmark import flip_landmarks
from lafslib.transforms.multicrop import five_points
from lafslib.transforms.photometric import ColourAugment
from lafslib.transforms.relight import relight, relight_uniforms

__all__ = ["LAFSViews"]


class LAFSViews:
    """LAFS landmark views: patches sampled at N landmarks, tiled into token mosaics.

    Per view: RandomResizedCrop(image_size, scale) and flip move the image and its landmarks;
    colour augmentation changes the pixels only; landmarks are perturbed with Gaussian noise
    (``sigma`` px, clipped to the crop); global views keep all N landmarks (a 14x14 mosaic of
    p x p patches), local views draw ``local_landmarks`` of them with replacement (6x6). Patches
    are sampled from the colour-augmented crop at landmarks moved with the geometric transform
    of the clean crop (Sun & Tzimiropoulos, "LAFS: Landmark-based Facial Self-supervised
    Learning for Face Recognition", CVPR 2024).

    With ``local_layout="grid"`` a local view keeps the global N-token layout: it is the full
    sqrt(N) x sqrt(N) mosaic of its own crop with all but ``local_landmarks`` distinct
    landmarks blanked (zero, the mean of the signed pixels), so backbones that need the whole
    token grid (``ssl_pool="flatten"``) can learn from landmark subsets too.

    Landmarks come from ``sample["landmarks"]``: N points, or 5 / 68 detected points expanded
    to the N-point landmark grid; with ``landmark_source="template"`` (or no landmarks) the
    canonical grid of an aligned crop is used.

    Args:
        global_views: 2.
        local_views: 8.
        num_landmarks: N, a square number (196 = 14x14).
        local_landmarks: k landmarks per local view, a square number (36 = 6x6).
        patch_size: p (8).
        sigma: landmark perturbation in pixels (5).
        image_size: crop size (112).
        global_scale: RandomResizedCrop area range (0.4, 1).
        landmark_source: "sidecar" (sample landmarks) or "template".
        grid_method: how 5 / 68 detected points become the N-point grid: "similarity" or
            "tps" (thin-plate spline, :func:`lafslib.landmarks.grid.landmark_grid`).
        colour_strength: scales colour jitter, grayscale and solarisation (1: DINO's).
        local_layout: "mosaic" (a sqrt(k) x sqrt(k) mosaic of k landmarks drawn with
            replacement, as LAFS) or "grid" (k distinct landmarks in their places of the
            global grid, the others blanked; ``local_landmarks`` need not be square).
        relight_strength: largest amplitude of a random directional light ramp per view
            (:func:`lafslib.transforms.relight.relight`; 0: off).
    """

    def __init__(
        self,
        global_views: int = 2,
        local_views: int = 8,
        num_landmarks: int = 196,
        local_landmarks: int = 36,
        patch_size: int = 8,
        sigma: float = 5.0,
        image_size: int = 112,
        global_scale: Sequence[float] = (0.4, 1.0),
        landmark_source: str = "sidecar",
        grid_method: str = "similarity",
        colour_strength: float = 1.0,
        local_layout: str = "mosaic",
        relight_strength: float = 0.0,
    ) -> None:
        if local_layout not in ("mosaic", "grid"):
            raise ValueError(f"local_layout must be 'mosaic' or 'grid', got {local_layout!r}")
        self.grid = int(round(num_landmarks**0.5))
        self.local_grid = int(round(local_landmarks**0.5))
        if self.grid**2 != num_landmarks:
            raise ValueError(f"num_landmarks ({num_landmarks}) must be a square number")
        if local_layout == "mosaic" and self.local_grid**2 != local_landmarks:
            raise ValueError(f"local_landmarks ({local_landmarks}) must be a square number")
        if local_layout == "grid" and local_landmarks > num_landmarks:
            raise ValueError(
                f"local_landmarks ({local_landmarks}) cannot exceed num_landmarks "
                f"({num_landmarks}) with local_layout 'grid'"
            )
        self.local_layout = local_layout
        if relight_strength < 0:
            raise ValueError(f"relight_strength must be >= 0, got {relight_strength}")
        self.relight_strength = relight_strength
        if landmark_source not in ("sidecar", "template"):
            raise ValueError(
                f"landmark_source must be 'sidecar' or 'template' here, got {landmark_source!r}"
            )
        if grid_method not in ("similarity", "tps"):
            raise ValueError(f"grid_method must be 'similarity' or 'tps', got {grid_method!r}")
        self.global_views = global_views
        self.local_views = local_views
        self.num_landmarks = num_landmarks
        self.local_landmarks = local_landmarks
        self.patch_size = patch_size
        self.sigma = sigma
        self.size = image_size
        self.scale = tuple(global_scale)
        self.landmark_source = landmark_source
        n = num_landmarks
        # one flip map for the landmark grid and the 5 keypoints carried along
        self.flip_all = np.concatenate([grid_flip_index(self.grid), n + FLIP_5])
        self.grid_method = grid_method
        self.colour = ColourAugment.with_strength(colour_strength)
        n_views = global_views + local_views
        self.blur_p = torch.tensor(
            [1.0, 0.1][:global_views] + [0.1] * max(global_views - 2, 0) + [0.5] * local_views
        )[:n_views]
        self.solarize_p = torch.tensor(
            [0.0, 0.2 * colour_strength][:global_views]
            + [0.0] * max(global_views - 2, 0)
            + [0.0] * local_views
        )[:n_views]
        # offsets of a patch's pixels from its centre, in grid_sample units: (1, 1, p, 1, p, 2)
        offs = (torch.arange(patch_size, dtype=torch.float32) - (patch_size - 1) / 2) * (
            2 / image_size
        )
        dy, dx = torch.meshgrid(offs, offs, indexing="ij")
        self._offsets = torch.stack([dx, dy], -1).view(1, 1, patch_size, 1, patch_size, 2)

    def _landmarks(self, sample: dict[str, Any], h: int) -> tuple[np.ndarray, np.ndarray]:
        pts = sample.get("landmarks")
        if self.landmark_source == "template" or pts is None:
            five = template_for_size(h)
            return landmark_grid(five, self.grid, h), five
        pts = np.asarray(pts, dtype=np.float64)
        five = five_points(pts, h)
        try:
            return landmark_grid(pts, self.grid, h, method=self.grid_method), five
        except ValueError as exc:  # e.g. a 49-point sidecar for a 14x14 grid
            raise DataError(f"landmarks of {sample.get('path', 'an image')}: {exc}") from None

    def _mosaics(self, images: torch.Tensor, centers: torch.Tensor, side: int) -> torch.Tensor:
        """Patches at ``centers`` tiled into mosaics by one ``grid_sample`` in mosaic layout.

        Equals ``patches_to_mosaic(sample_patches(images, centers, p), side)`` (bilinear, zero
        padding) without the intermediate patch tensor.

        Args:
            images: (B, C, S, S) views.
            centers: (B, side*side, 2) patch centres in [0, 1].

        Returns:
            (B, C, side*p, side*p) mosaics.
        """
        b, p = len(centers), self.patch_size
        c = (centers * 2 - 1).view(b, side, 1, side, 1, 2)
        grid = (c + self._offsets.to(c.device)).view(b, side * p, side * p, 2)
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )

    def draw(self, sample: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The per-sample part of the views (CPU, e.g. in a DataLoader worker): the face as
        uint8, where its landmarks go in every view, and every random draw of the views.

        The draws come from the global torch RNG in one fixed order (crops and flips,
        relighting, colour, landmark noise, local subsets), so seeding it per sample makes a
        sample's views independent of batch, rank and device. :meth:`render` turns a batch
        of these (stacked by ``torch.utils.data.default_collate``) into the views.

        Returns:
            ``image`` uint8 (3, H, W); ``points`` (V, N + 5, 2) grid landmarks and 5 keypoints
            in view pixels; ``gx`` / ``gy`` (V, S) source coordinates of the view pixels in
            [-1, 1]; ``relight`` (V, 2) or (V, 0); ``colour`` float64 (V, 9); ``noise``
            (V, N, 2); ``subset`` int64 (L, k) landmarks of the L local views.
        """
        img = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
        h, w = img.shape[-2:]
        grid_pts, five = self._landmarks(sample, h)
        s, n = self.size, self.num_landmarks
        n_views = self.global_views + self.local_views
        r = torch.rand(n_views, UNIFORMS_PER_CROP, dtype=torch.float64).numpy()
        boxes = random_resized_boxes(r, h, w, self.scale)
        top, left, ch, cw = boxes.T
        flip = r[:, 22] < 0.5
        # landmarks move with the crop (pixels of the s x s view), then with the flip
        pts = np.concatenate([grid_pts, five])
        scale = np.stack([s / cw, s / ch], 1)[:, None]
        moved = (pts - np.stack([left, top], 1)[:, None]) * scale  # (V, P, 2)
        moved[flip] = flip_landmarks(moved[flip], s, self.flip_all)
        gx, gy = crop_axes(boxes, flip, s, h, w)  # crop + resize + flip: one grid_sample
        lit = relight_uniforms(n_views) if self.relight_strength else torch.empty(n_views, 0)
        colour = ColourAugment.draw(n_views)
        noise = torch.randn((n_views, n, 2))
        n_loc, k = self.local_views, self.local_landmarks
        if not n_loc:
            subset = torch.empty((0, k), dtype=torch.long)
        elif self.local_layout == "grid":
            subset = torch.rand((n_loc, n)).argsort(-1)[..., :k]
        else:
            subset = torch.randint(n, (n_loc, k))
        return {
            "image": img,
            "points": torch.from_numpy(moved.astype(np.float32)),
            "gx": gx,
            "gy": gy,
            "relight": lit,
            "colour": colour,
            "noise": noise,
            "subset": subset,
        }

    def render(self, plan: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """The views of a batch of :meth:`draw` results, on their device, in a few batched
        operations (one ``grid_sample`` for every crop, one colour pass, one per view size for
        the mosaics).

        Args:
            plan: :meth:`draw`'s entries stacked over B samples (``image`` (B, 3, H, W), ...).

        Returns:
            One dict per view, global views first: ``image`` (B, 3, S', S'), ``token_centers``
            (B, n, 2) and ``keypoints`` (B, 5, 2) in [0, 1], ``is_global``; as
            :meth:`__call__` gives them for one face.
        """
        img = plan["image"]
        b, s, n, g = len(img), self.size, self.num_landmarks, self.global_views
        n_views = g + self.local_views
        crops = render_crops(img, plan["gx"], plan["gy"])
        lit = plan["relight"].reshape(b * n_views, -1)
        crops = relight(crops, self.relight_strength, uniforms=lit)
        images = self.colour(
            crops, self.blur_p.repeat(b), self.solarize_p.repeat(b), signed=True,
            uniforms=plan["colour"].reshape(b * n_views, -1),
        )  # fmt: skip
        moved = plan["points"].reshape(b * n_views, n + 5, 2)
        keypoints = (moved[:, n:] / s).clamp_(0, 1).view(b, n_views, 5, 2)
        noise = plan["noise"].reshape(b * n_views, n, 2)
        centers = (moved[:, :n] + self.sigma * noise).clamp_(0.0, float(s)).div_(s)
        centers = centers.view(b, n_views, n, 2)
        images = images.view(b, n_views, *images.shape[1:])
        views = []
        if g:
            c = centers[:, :g].reshape(b * g, n, 2)
            mosaics = self._mosaics(images[:, :g].reshape(b * g, *images.shape[2:]), c, self.grid)
            views += self._split(mosaics, c, keypoints[:, :g], True)
        if self.local_views:
            views += self._locals(images[:, g:], centers[:, g:], keypoints[:, g:], plan["subset"])
        return views

    def _locals(
        self,
        images: torch.Tensor,
        centers: torch.Tensor,
        keypoints: torch.Tensor,
        subset: torch.Tensor,
    ) -> list[dict[str, Any]]:
        """Local views of (B, L, C, S, S) crops from their (B, L, k) landmark subsets."""
        b, n_loc, n, p = len(images), images.shape[1], self.num_landmarks, self.patch_size
        flat_images = images.reshape(b * n_loc, *images.shape[2:])
        flat_centers = centers.reshape(b * n_loc, n, 2)
        index = subset.reshape(b * n_loc, -1)
        if self.local_layout == "grid":  # the global layout, all but k landmarks blanked
            mosaics = self._mosaics(flat_images, flat_centers, self.grid)
            visible = torch.zeros(b * n_loc, n, device=images.device).scatter_(1, index, 1.0)
            visible = visible.view(b * n_loc, 1, self.grid, self.grid)
            mosaics = mosaics * visible.repeat_interleave(p, 2).repeat_interleave(p, 3)
            return self._split(mosaics, flat_centers, keypoints, False)
        local = torch.gather(flat_centers, -2, index[..., None].expand(*index.shape, 2))
        mosaics = self._mosaics(flat_images, local, self.local_grid)
        return self._split(mosaics, local, keypoints, False)

    @staticmethod
    def _split(
        mosaics: torch.Tensor, centers: torch.Tensor, keypoints: torch.Tensor, is_global: bool
    ) -> list[dict[str, Any]]:
        """(B * V', ...) mosaics and centres and (B, V', 5, 2) keypoints -> V' view dicts."""
        b, n_views = keypoints.shape[:2]
        mosaics = mosaics.view(b, n_views, *mosaics.shape[1:])
        centers = centers.view(b, n_views, *centers.shape[1:])
        return [
            {
                "image": mosaics[:, v],
                "token_centers": centers[:, v],
                "keypoints": keypoints[:, v],
                "is_global": is_global,
            }
            for v in range(n_views)
        ]

    def __call__(self, sample: dict[str, Any]) -> list[dict[str, Any]]:
        """Views of ``sample["image"]`` (uint8 HxWx3) with its landmarks: :meth:`draw` then
        :meth:`render` of a batch of one (the code a training step runs)."""
        plan = {k: v[None] for k, v in self.draw(sample).items()}
        return [
            {k: (v[0] if torch.is_tensor(v) else v) for k, v in view.items()}
            for view in self.render(plan)
        ]
