"""Multi-view generation for DINO-style self-supervision.

``MultiCropViews`` is the DINO random-crop recipe adapted to 112x112 faces: 2 global crops
(112 px, scale 0.4-1) and 8 local crops (48 px, 6x6 tokens of 8 px, scale 0.05-0.4), each with
flip, colour jitter (0.4, 0.4, 0.2, 0.1, p 0.8), grayscale (p 0.2) and Gaussian blur (p 1.0 /
0.1 for the globals, 0.5 for the locals) plus solarisation (p 0.2) on the second global view
(Caron et al., ICCV 2021; LAFS, CVPR 2024). Both view makers colour their views with the same
batched :class:`~lafslib.transforms.photometric.ColourAugment`, so the random-crop baseline and
LAFS differ only in where the pixels come from.

A view is a dict ``{"image": float (3, S, S) in [-1, 1], "token_centers": float (n, 2) in [0, 1]
(where each token came from, in source-image coordinates), "is_global": bool}``; global views
come first. :mod:`~lafslib.transforms.view_batch` stacks, moves and groups them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from lafslib.errors import DataError
from lafslib.landmarks.grid import FLIP_5, grid_flip_index, landmark_grid
from lafslib.landmarks.template import landmarks68_to_5, template_for_size
from lafslib.transforms.landmark import flip_landmarks
from lafslib.transforms.photometric import ColourAugment
from lafslib.transforms.relight import relight, relight_uniforms

__all__ = ["LAFSViews", "MultiCropViews"]


def _grid_centers(grid: int) -> torch.Tensor:
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


class MultiCropViews:
    """DINO random multi-crop views of one face (the random-crop baseline of LAFS).

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
        self.global_views = global_views
        self.local_views = local_views
        self.patch_size = patch_size
        self.global_crop = v2.RandomResizedCrop(
            image_size, scale=tuple(global_scale), antialias=True
        )
        self.local_crop = v2.RandomResizedCrop(local_size, scale=tuple(local_scale), antialias=True)
        self.colour = ColourAugment.with_strength(colour_strength)
        if relight_strength < 0:
            raise ValueError(f"relight_strength must be >= 0, got {relight_strength}")
        self.relight_strength = relight_strength
        # per global view: blur p 1.0 then 0.1, solarisation only on the second; locals 0.5, 0
        self.global_blur_p = torch.tensor([1.0] + [0.1] * (global_views - 1))
        self.global_solarize_p = torch.tensor([0.0] + [0.2 * colour_strength] * (global_views - 1))
        self.local_blur_p = torch.full((local_views,), 0.5)
        self.local_solarize_p = torch.zeros(local_views)
        self.global_centers = _grid_centers(image_size // patch_size)
        self.local_centers = _grid_centers(local_size // patch_size)

    def _crop(
        self, img: torch.Tensor, five: torch.Tensor, crop: v2.Transform
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One crop + flip (uint8) and its 5 keypoints moved with the pixels, in [0, 1]."""
        x, kp = crop(img, tv_tensors.KeyPoints(five, canvas_size=tuple(img.shape[-2:])))
        kp = kp.as_subclass(torch.Tensor)
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
            kp = kp[FLIP_5]
            kp[:, 0] = x.shape[-1] - kp[:, 0]
        return x, (kp / x.shape[-1]).clamp_(0.0, 1.0)

    def _group(
        self,
        img: torch.Tensor,
        five: torch.Tensor,
        n: int,
        crop: v2.Transform,
        blur_p: torch.Tensor,
        solarize_p: torch.Tensor,
        centers: torch.Tensor,
        is_global: bool,
    ) -> list[dict[str, Any]]:
        """``n`` views of one crop size, colour-augmented together in [-1, 1]."""
        crops, kps = zip(*(self._crop(img, five, crop) for _ in range(n)))
        crops = relight(torch.stack(crops).float().div_(255.0), self.relight_strength)
        images = self.colour(crops, blur_p, solarize_p, True)
        return [
            {"image": x, "token_centers": centers, "keypoints": kp, "is_global": is_global}
            for x, kp in zip(images.unbind(0), kps)
        ]

    def __call__(self, sample: dict[str, Any]) -> list[dict[str, Any]]:
        """Views of ``sample["image"]`` (uint8 HxWx3 RGB), each with the 5 keypoints of
        ``sample["landmarks"]`` (5 or 68 points; the template when absent) for KP-RPE models."""
        img = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
        five = _five_points(sample.get("landmarks"), img.shape[-1])
        views = self._group(
            img,
            five,
            self.global_views,
            self.global_crop,
            self.global_blur_p,
            self.global_solarize_p,
            self.global_centers,
            True,
        )
        if self.local_views:
            views += self._group(
                img,
                five,
                self.local_views,
                self.local_crop,
                self.local_blur_p,
                self.local_solarize_p,
                self.local_centers,
                False,
            )
        return views


def _five_points(landmarks: np.ndarray | None, size: int) -> torch.Tensor:
    """ArcFace-order 5 points (pixels) from 5 or 68 landmarks, else the template."""
    pts = None if landmarks is None else np.asarray(landmarks, dtype=np.float64)
    if pts is not None and len(pts) == 68:
        pts = landmarks68_to_5(pts)
    if pts is None or len(pts) != 5:
        pts = template_for_size(size)
    return torch.as_tensor(pts, dtype=torch.float32)


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
        self._pix = (np.arange(image_size) + 0.5) / image_size  # view pixel centres, [0, 1]
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
        five = landmarks68_to_5(pts) if len(pts) == 68 else pts
        if len(five) != 5:
            five = template_for_size(h)
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

    def _crop_boxes(self, r: np.ndarray, h: int, w: int) -> np.ndarray:
        """RandomResizedCrop boxes ``(top, left, height, width)`` from uniforms: (n, 4).

        The distribution of torchvision's ``RandomResizedCrop.get_params`` (ratio 3/4-4/3, up
        to 10 tries, then the whole image clipped to the ratio range), drawn for all views at
        once from ``r`` (n, 22) uniforms.
        """
        lo, hi = math.log(3 / 4), math.log(4 / 3)
        area = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * r[:, :10])
        ratio = np.exp(lo + (hi - lo) * r[:, 10:20])
        cw = np.round(np.sqrt(area * ratio))
        ch = np.round(np.sqrt(area / ratio))
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        rows = np.arange(len(r))
        first = ok.argmax(1)  # first accepted try
        cw, ch = cw[rows, first], ch[rows, first]
        top = np.floor(r[:, 20] * (h - ch + 1))
        left = np.floor(r[:, 21] * (w - cw + 1))
        bad = ~ok.any(1)
        if bad.any():
            in_ratio = w / h
            cw[bad] = w if in_ratio <= 4 / 3 else round(h * 4 / 3)
            ch[bad] = h if in_ratio >= 3 / 4 else round(w * 4 / 3)
            top[bad], left[bad] = (h - ch[bad]) // 2, (w - cw[bad]) // 2
        return np.stack([top, left, ch, cw], 1)

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
        r = torch.rand(n_views, 23, dtype=torch.float64).numpy()  # crops (22) and flips (1)
        top, left, ch, cw = self._crop_boxes(r, h, w).T
        flip = r[:, 22] < 0.5
        # landmarks move with the crop (pixels of the s x s view), then with the flip
        pts = np.concatenate([grid_pts, five])
        scale = np.stack([s / cw, s / ch], 1)[:, None]
        moved = (pts - np.stack([left, top], 1)[:, None]) * scale  # (V, P, 2)
        moved[flip] = flip_landmarks(moved[flip], s, self.flip_all)
        # crop + resize + flip as one bilinear grid_sample; the sampling grid is separable:
        # view pixel centre u + 0.5 <- source x = left + (u + 0.5) cw / s (flipped: mirrored)
        u = self._pix
        fx = np.where(flip[:, None], 1 - u, u)
        gx = ((left[:, None] + fx * cw[:, None]) * (2 / w) - 1).astype(np.float32)
        gy = ((top[:, None] + u * ch[:, None]) * (2 / h) - 1).astype(np.float32)
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
            "gx": torch.from_numpy(gx),
            "gy": torch.from_numpy(gy),
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
            :func:`collate_views` stacks the per-sample views.
        """
        img = plan["image"]
        b, s, n, g = len(img), self.size, self.num_landmarks, self.global_views
        n_views = g + self.local_views
        gx, gy = plan["gx"].reshape(b * n_views, s), plan["gy"].reshape(b * n_views, s)
        grid = torch.stack(
            [gx[:, None, :].expand(-1, s, -1), gy[:, :, None].expand(-1, -1, s)], dim=-1
        )
        src = img.float().div_(255.0).repeat_interleave(n_views, 0)  # (B * V, 3, H, W)
        crops = F.grid_sample(
            src, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
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
