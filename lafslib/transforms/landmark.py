"""Landmark augmentations: flip with left/right swap, perturbation, subsets, geometric moves.

LAFS (Sun & Tzimiropoulos, CVPR 2024) augments the landmarks themselves: coordinate
perturbation (Gaussian noise, sigma = 5 px in pretraining) and landmark shuffle / subsets
(random re-indexing, random subsets of k of the N landmarks). Geometric image transforms (crop,
scale, rotation, flip) must move the landmarks with the pixels; :class:`LandmarkGeometric` does
this with albumentations keypoints and reports the points that leave the frame.

Coordinates: ``(x, y)`` with pixel ``i`` covering ``[i, i + 1]`` (so the image spans
``[0, W] x [0, H]``), or normalised to ``[0, 1]``; a horizontal flip maps ``x -> W - x``
(``x -> 1 - x`` normalised) and swaps the left/right indices (5-point, 68-point and square
landmark-grid layouts).
"""

from __future__ import annotations

from typing import Any, TypeVar

import albumentations as A
import cv2
import numpy as np
import torch

from lafslib.landmarks.grid import FLIP_5, FLIP_68, grid_flip_index

__all__ = [
    "FLIP_5",
    "FLIP_68",
    "flip_index",
    "flip_landmarks",
    "perturb_landmarks",
    "subset_landmarks",
    "shuffle_landmarks",
    "LandmarkGeometric",
]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def flip_index(num_points: int) -> np.ndarray:
    """Index map of a horizontal flip for a landmark layout of ``num_points`` points.

    5 points (insightface order) and 68 points (iBUG 300-W) swap their left/right points; a
    square number N is a row-major ``sqrt(N) x sqrt(N)`` landmark grid whose columns reverse.
    """
    if num_points == 5:
        return FLIP_5.copy()
    if num_points == 68:
        return FLIP_68.copy()
    side = int(round(num_points**0.5))
    if side * side == num_points:
        return grid_flip_index(side).copy()
    raise ValueError(f"no flip map for {num_points} landmarks (5, 68 or a square grid)")


def flip_landmarks(points: ArrayT, width: float = 1.0, index: Any = None) -> ArrayT:
    """Horizontally flip landmarks: ``x -> width - x`` and left/right indices swapped.

    Args:
        points: (..., K, 2) numpy array or tensor.
        width: image width in the points' units (1 for normalised points, W for pixels).
        index: (K,) flip index map; by default :func:`flip_index` of K.

    Returns:
        The flipped points, same type and shape; flipping twice is the identity.
    """
    k = points.shape[-2]
    idx = flip_index(k) if index is None else np.asarray(index)
    if isinstance(points, torch.Tensor):
        out = points[..., torch.as_tensor(idx, device=points.device), :].clone()
    else:
        out = np.array(points[..., idx, :], copy=True)
    out[..., 0] = width - out[..., 0]
    return out


def perturb_landmarks(
    points: torch.Tensor,
    sigma: float,
    size: int | tuple[int, int],
    normalized: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add Gaussian noise of ``sigma`` pixels to landmarks, clipped to the image.

    Args:
        points: (..., K, 2) landmarks, pixels (or normalised with ``normalized=True``).
        sigma: noise standard deviation in pixels (LAFS pretraining: 5).
        size: image size ``S`` or ``(W, H)`` in pixels.
        normalized: points are in [0, 1]; the noise is ``sigma / W`` and ``sigma / H``.
        generator: optional torch generator (default: the global RNG).

    Returns:
        (..., K, 2) perturbed points inside ``[0, W] x [0, H]`` (``[0, 1]`` normalised).
    """
    w, h = (size, size) if isinstance(size, int) else size
    noise = torch.randn(points.shape, generator=generator, dtype=points.dtype)
    noise = noise.to(points.device)
    if normalized:
        scale = torch.tensor([sigma / w, sigma / h], dtype=points.dtype, device=points.device)
        return (points + noise * scale).clamp_(0.0, 1.0)
    out = points + sigma * noise
    if w == h:
        return out.clamp_(0.0, float(w))
    out[..., 0].clamp_(0.0, float(w))
    out[..., 1].clamp_(0.0, float(h))
    return out


def subset_landmarks(
    points: torch.Tensor,
    k: int,
    replace: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``k`` of the N landmarks, independently for every leading batch element.

    Args:
        points: (..., N, 2) landmarks.
        k: subset size (LAFS local views: 36 with replacement).
        replace: draw with replacement (k may exceed N) or without (a random k-subset in
            random order; ``k = N`` is a shuffle).
        generator: optional torch generator (default: the global RNG).

    Returns:
        ``(subset (..., k, 2), index (..., k))`` with ``subset = points[..., index, :]``.
    """
    *batch, n, _ = points.shape
    if k < 0 or (not replace and k > n):
        raise ValueError(f"cannot draw {k} of {n} landmarks (replace={replace})")
    if replace:
        index = torch.randint(n, (*batch, k), generator=generator)
    else:
        index = torch.rand((*batch, n), generator=generator).argsort(-1)[..., :k]
    index = index.to(points.device)
    subset = torch.gather(points, -2, index[..., None].expand(*index.shape, 2))
    return subset, index


def shuffle_landmarks(
    points: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly re-index the N landmarks (a random permutation per batch element)."""
    return subset_landmarks(points, points.shape[-2], replace=False, generator=generator)


class LandmarkGeometric:
    """Crop, scale, rotation and flip of a face that move its landmarks with its pixels.

    Albumentations with ``KeypointParams(remove_invisible=False)``: a RandomResizedCrop to
    ``size`` (``crop_p``), then an Affine (scale, rotation in degrees, translation as a
    fraction of the size; ``affine_p``, constant ``fill`` outside the source), then a flip
    (``flip_p``) that swaps the left/right landmark indices (:func:`flip_landmarks`). The two
    albumentations stages run with the convention each is exact in (crop + resize on pixel
    corners, warps on pixel centres), so landmarks land where their pixels land.

    Points that leave the frame are kept (never dropped or re-ordered, so indices stay
    aligned) and reported: ``visible`` is ``False`` for points outside ``[0, W] x [0, H]``;
    with ``outside="clip"`` those points are also clipped onto the border.

    Args:
        size: output size in pixels (112).
        crop_scale: RandomResizedCrop area range.
        crop_ratio: RandomResizedCrop aspect-ratio range.
        scale: Affine zoom range.
        rotate: rotation range in degrees.
        translate: translation range as a fraction of the size.
        crop_p, affine_p, flip_p: probabilities of the three stages.
        outside: "mask" (keep points outside, report them) or "clip" (also clip them).
        flip_index: (K,) flip index map of the landmarks (default: :func:`flip_index` of K).
        fill: value of pixels coming from outside the source image.
        seed: seed of the albumentations RNG (None: unseeded).

    Example:
        >>> geo = LandmarkGeometric(rotate=(-20, 20), seed=0)
        >>> out = geo({"image": image, "landmarks": landmarks})  # doctest: +SKIP
        >>> out["image"].shape, out["landmarks"].shape, out["visible"].shape  # doctest: +SKIP
        ((112, 112, 3), (5, 2), (5,))
    """

    def __init__(
        self,
        size: int = 112,
        crop_scale: tuple[float, float] = (0.4, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        scale: tuple[float, float] = (0.9, 1.1),
        rotate: tuple[float, float] = (-15.0, 15.0),
        translate: tuple[float, float] = (-0.05, 0.05),
        crop_p: float = 1.0,
        affine_p: float = 1.0,
        flip_p: float = 0.5,
        outside: str = "mask",
        flip_index: Any = None,
        fill: float = 0,
        seed: int | None = None,
    ) -> None:
        if outside not in ("mask", "clip"):
            raise ValueError(f"outside must be 'mask' or 'clip', got {outside!r}")
        self.size = size
        self.flip_p = flip_p
        self.outside = outside
        self.flip_index = flip_index
        keypoints = A.KeypointParams(format="xy", remove_invisible=False)
        self.crop = A.Compose(
            [A.RandomResizedCrop(size=(size, size), scale=crop_scale, ratio=crop_ratio, p=crop_p)],
            keypoint_params=keypoints,
            seed=seed,
        )
        self.affine = A.Compose(
            [
                A.Affine(
                    scale=scale,
                    rotate=rotate,
                    translate_percent=translate,
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=fill,
                    p=affine_p,
                )
            ],
            keypoint_params=keypoints,
            seed=None if seed is None else seed + 1,
        )
        self.rng = np.random.default_rng(None if seed is None else seed + 2)

    def apply(
        self, image: np.ndarray, landmarks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Transform one face.

        Args:
            image: uint8 (H, W, 3).
            landmarks: (K, 2) pixel points.

        Returns:
            ``(image (size, size, 3), landmarks (K, 2) float32 pixels, visible (K,) bool)``.
        """
        pts = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
        out = self.crop(image=image, keypoints=pts)  # corner convention: exact for crop+resize
        # cv2 warps treat pixel centres as integers: shift there and back
        out = self.affine(image=out["image"], keypoints=np.asarray(out["keypoints"]) - 0.5)
        img, pts = out["image"], np.asarray(out["keypoints"], dtype=np.float32)[:, :2] + 0.5
        h, w = img.shape[:2]
        if self.rng.random() < self.flip_p:
            img = np.ascontiguousarray(img[:, ::-1])
            pts = flip_landmarks(pts, float(w), self.flip_index)
        visible = (pts[:, 0] >= 0) & (pts[:, 0] <= w) & (pts[:, 1] >= 0) & (pts[:, 1] <= h)
        if self.outside == "clip":
            pts = np.stack([pts[:, 0].clip(0, w), pts[:, 1].clip(0, h)], axis=1)
        return img, pts.astype(np.float32), visible

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Transform ``sample["image"]`` and ``sample["landmarks"]``; adds ``"visible"``."""
        img, pts, visible = self.apply(sample["image"], sample["landmarks"])
        return {**sample, "image": img, "landmarks": pts, "visible": visible}
