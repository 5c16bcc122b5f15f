"""Multi-view generation for DINO-style self-supervision.

``MultiCropViews`` is the DINO random-crop recipe adapted to 112x112 faces: 2 global crops
(112 px, scale 0.4-1) and 8 local crops (48 px, 6x6 tokens of 8 px, scale 0.05-0.4), each with
flip, colour jitter (0.4, 0.4, 0.2, 0.1, p 0.8), grayscale (p 0.2) and Gaussian blur (p 1.0 /
0.1 for the globals, 0.5 for the locals) plus solarisation (p 0.2) on the second global view
(Caron et al., ICCV 2021; LAFS, CVPR 2024).

A view is a dict ``{"image": float (3, S, S) in [-1, 1], "token_centers": float (n, 2) in [0, 1]
(where each token came from, in source-image coordinates), "is_global": bool}``; global views
come first. :func:`collate_views` stacks a batch view by view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from lafslib.landmarks.grid import FLIP_5, grid_flip_index, landmark_grid
from lafslib.landmarks.template import landmarks68_to_5, template_for_size
from lafslib.layers.patch_sampling import patches_to_mosaic, sample_patches
from lafslib.transforms.photometric import ColourAugment

__all__ = ["LAFSViews", "MultiCropViews", "collate_views", "group_views"]


def _grid_centers(grid: int) -> torch.Tensor:
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def _photometric(blur_p: float, solarize_p: float) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(9, sigma=(0.1, 2.0))], p=blur_p),
            v2.RandomSolarize(128, p=solarize_p),
        ]
    )


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
        self.flip = v2.RandomHorizontalFlip()
        self.global_colour = [_photometric(1.0, 0.0), _photometric(0.1, 0.2)]
        self.local_colour = _photometric(0.5, 0.0)
        self.global_centers = _grid_centers(image_size // patch_size)
        self.local_centers = _grid_centers(local_size // patch_size)

    def _view(self, img: torch.Tensor, crop: v2.Transform, colour: v2.Compose) -> torch.Tensor:
        x = colour(self.flip(crop(img)))
        return x.float().div_(127.5).sub_(1.0)

    def __call__(self, sample: dict[str, Any]) -> list[dict[str, Any]]:
        """Views of ``sample["image"]`` (uint8 HxWx3 RGB)."""
        img = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
        views = []
        for i in range(self.global_views):
            colour = self.global_colour[min(i, 1)]
            views.append(
                {
                    "image": self._view(img, self.global_crop, colour),
                    "token_centers": self.global_centers,
                    "is_global": True,
                }
            )
        for _ in range(self.local_views):
            views.append(
                {
                    "image": self._view(img, self.local_crop, self.local_colour),
                    "token_centers": self.local_centers,
                    "is_global": False,
                }
            )
        return views


class LAFSViews:
    """LAFS landmark views: patches sampled at N landmarks, tiled into token mosaics.

    Per view: RandomResizedCrop(image_size, scale) and flip move the image and its landmarks;
    colour augmentation changes the pixels only; landmarks are perturbed with Gaussian noise
    (``sigma`` px, clipped to the crop); global views keep all N landmarks (a 14x14 mosaic of
    p x p patches), local views draw ``local_landmarks`` of them with replacement (6x6). Patches
    are sampled from the colour-augmented crop at landmarks moved with the geometric transform
    of the clean crop (Sun & Tzimiropoulos, "LAFS: Landmark-based Facial Self-supervised
    Learning for Face Recognition", CVPR 2024).

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
    ) -> None:
        self.grid = int(round(num_landmarks**0.5))
        self.local_grid = int(round(local_landmarks**0.5))
        if self.grid**2 != num_landmarks or self.local_grid**2 != local_landmarks:
            raise ValueError(
                f"num_landmarks ({num_landmarks}) and local_landmarks ({local_landmarks}) must be "
                "square numbers"
            )
        if landmark_source not in ("sidecar", "template"):
            raise ValueError(
                f"landmark_source must be 'sidecar' or 'template' here, got {landmark_source!r}"
            )
        self.global_views = global_views
        self.local_views = local_views
        self.num_landmarks = num_landmarks
        self.local_landmarks = local_landmarks
        self.patch_size = patch_size
        self.sigma = sigma
        self.size = image_size
        self.scale = tuple(global_scale)
        self.landmark_source = landmark_source
        self.flip_grid = torch.from_numpy(grid_flip_index(self.grid).copy())
        self.flip_5 = torch.from_numpy(FLIP_5.copy())
        self.colour = ColourAugment()
        n_views = global_views + local_views
        self.blur_p = torch.tensor(
            [1.0, 0.1][:global_views] + [0.1] * max(global_views - 2, 0) + [0.5] * local_views
        )[:n_views]
        self.solarize_p = torch.tensor(
            [0.0, 0.2][:global_views] + [0.0] * max(global_views - 2, 0) + [0.0] * local_views
        )[:n_views]

    def _landmarks(self, sample: dict[str, Any], h: int) -> tuple[np.ndarray, np.ndarray]:
        pts = sample.get("landmarks")
        if self.landmark_source == "template" or pts is None:
            five = template_for_size(h)
            return landmark_grid(five, self.grid, h), five
        pts = np.asarray(pts, dtype=np.float64)
        five = landmarks68_to_5(pts) if len(pts) == 68 else pts
        if len(five) != 5:
            five = template_for_size(h)
        return landmark_grid(pts, self.grid, h), five

    def __call__(self, sample: dict[str, Any]) -> list[dict[str, Any]]:
        """Views of ``sample["image"]`` (uint8 HxWx3) with its landmarks."""
        img = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
        h, w = img.shape[-2:]
        grid_pts, five = self._landmarks(sample, h)
        pts = torch.from_numpy(np.concatenate([grid_pts, five])).float()
        s = self.size
        n_views = self.global_views + self.local_views
        thetas, moved = torch.zeros(n_views, 2, 3), []
        for v in range(n_views):
            i, j, ch, cw = v2.RandomResizedCrop.get_params(img, self.scale, (3 / 4, 4 / 3))
            p = (pts - torch.tensor([j, i])) * torch.tensor([s / cw, s / ch])
            sx = cw / w
            if torch.rand(()) < 0.5:
                sx = -sx
                p = torch.cat(
                    [p[: self.num_landmarks][self.flip_grid], p[self.num_landmarks :][self.flip_5]]
                )
                p[:, 0] = s - p[:, 0]
            thetas[v, 0, 0], thetas[v, 0, 2] = sx, (2 * j + cw) / w - 1
            thetas[v, 1, 1], thetas[v, 1, 2] = ch / h, (2 * i + ch) / h - 1
            moved.append(p)
        # every crop (resize + flip) of the image in one bilinear grid_sample
        grid = F.affine_grid(thetas, [n_views, 3, s, s], align_corners=False)
        src = img.float().div_(255.0).expand(n_views, -1, -1, -1)
        crops = F.grid_sample(
            src, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        images = self.colour(crops, self.blur_p, self.solarize_p).mul_(2.0).sub_(1.0)
        moved_t = torch.stack(moved)
        centers = moved_t[:, : self.num_landmarks]
        keypoints = (moved_t[:, self.num_landmarks :] / s).clamp(0, 1)
        centers = (centers + self.sigma * torch.randn_like(centers)).clamp(0, s) / s
        g = self.global_views
        global_centers = centers[:g]
        local_idx = torch.randint(self.num_landmarks, (self.local_views, self.local_landmarks))
        local_centers = torch.gather(centers[g:], 1, local_idx[..., None].expand(-1, -1, 2))
        views = []
        if g:
            mosaics = patches_to_mosaic(
                sample_patches(images[:g], global_centers, self.patch_size), self.grid
            )
            views += [
                {
                    "image": mosaics[v],
                    "token_centers": global_centers[v],
                    "keypoints": keypoints[v],
                    "is_global": True,
                }
                for v in range(g)
            ]
        if self.local_views:
            mosaics = patches_to_mosaic(
                sample_patches(images[g:], local_centers, self.patch_size), self.local_grid
            )
            views += [
                {
                    "image": mosaics[v],
                    "token_centers": local_centers[v],
                    "keypoints": keypoints[g + v],
                    "is_global": False,
                }
                for v in range(self.local_views)
            ]
        return views


def collate_views(batch: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Stack a batch of view lists into one dict of batched tensors per view index."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out = []
    for v in range(len(batch[0])):
        views = [item[v] for item in batch]
        stacked: dict[str, Any] = {"is_global": bool(views[0]["is_global"])}
        for key, value in views[0].items():
            if isinstance(value, torch.Tensor):
                stacked[key] = torch.stack([view[key] for view in views])
        out.append(stacked)
    return out


def group_views(views: list[dict[str, Any]]) -> list[tuple[list[int], dict[str, Any]]]:
    """Concatenate consecutive views of equal token count for one backbone pass per group.

    Returns:
        ``[(view indices, {key: tensor concatenated along the batch})]``.
    """
    groups: list[tuple[list[int], dict[str, Any]]] = []
    start = 0
    while start < len(views):
        end = start + 1
        shape = views[start]["image"].shape[-2:]
        while end < len(views) and views[end]["image"].shape[-2:] == shape:
            end += 1
        members = views[start:end]
        merged = {
            k: torch.cat([m[k] for m in members])
            for k, val in members[0].items()
            if isinstance(val, torch.Tensor)
        }
        groups.append((list(range(start, end)), merged))
        start = end
    return groups
