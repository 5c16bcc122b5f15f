"""The ArcFace 5-point template, 68 -> 5 reduction, similarity transforms (Umeyama) and warps."""

from __future__ import annotations

import numpy as np

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "template_for_size",
    "landmarks68_to_5",
    "similarity_transform",
    "transform_points",
    "invert_affine",
    "alignment_transform",
    "warp_image",
    "align_face",
]

ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def template_for_size(size: int) -> np.ndarray:
    """The ArcFace template scaled to a ``size x size`` crop (5, 2)."""
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def landmarks68_to_5(pts68: np.ndarray) -> np.ndarray:
    """iBUG 68 points -> 5 points: eye centres (mean of six contour points), nose tip 30,
    mouth corners 48 and 54, in insightface order. Works on (68, 2) or (B, 68, 2)."""
    pts68 = np.asarray(pts68)
    if pts68.shape[-2:] != (68, 2):
        raise ValueError(f"expected (..., 68, 2) landmarks, got {pts68.shape}")
    return np.stack(
        [
            pts68[..., 36:42, :].mean(-2),
            pts68[..., 42:48, :].mean(-2),
            pts68[..., 30, :],
            pts68[..., 48, :],
            pts68[..., 54, :],
        ],
        axis=-2,
    )


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst.

    Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", TPAMI 1991.

    Args:
        src: (K, 2) points.
        dst: (K, 2) corresponding points.

    Returns:
        (2, 3) affine matrix M with ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (K>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var = (s**2).sum() / len(src)
    scale = np.trace(np.diag(sig) @ sign) / var
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (..., 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix."""
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def alignment_transform(landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """(2, 3) similarity mapping 5 ArcFace-order points of a photo onto the template of a
    ``size x size`` crop."""
    return similarity_transform(landmarks5, template_for_size(size))


def warp_image(
    image: np.ndarray, m: np.ndarray, size: int | tuple[int, int], inverse: bool = False
) -> np.ndarray:
    """Warp an image with a (2, 3) affine matrix (bilinear, black border).

    Args:
        image: (H, W, C) or (H, W) uint8/float array.
        m: matrix mapping input pixel coordinates to output ones (or output to input when
            ``inverse``).
        size: output side, or (width, height).
        inverse: apply the inverse of ``m`` (e.g. paste an aligned crop back into the photo).
    """
    import cv2  # a dependency of albumentations

    width, height = (size, size) if isinstance(size, int) else size
    m = invert_affine(m) if inverse else np.asarray(m, dtype=np.float64)
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        m,
        (int(width), int(height)),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def align_face(
    image: np.ndarray, landmarks: np.ndarray, size: int = 112
) -> tuple[np.ndarray, np.ndarray]:
    """Align a face to the ArcFace template.

    Args:
        image: (H, W, 3) photo.
        landmarks: (5, 2) ArcFace-order or (68, 2) iBUG points in photo pixels.
        size: output side.

    Returns:
        The (size, size, 3) crop and the (2, 3) matrix from photo to crop pixels (apply it to
        any landmarks of the face with :func:`transform_points`).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    five = landmarks68_to_5(landmarks) if len(landmarks) == 68 else landmarks
    if five.shape != (5, 2):
        raise ValueError(f"need (5, 2) or (68, 2) landmarks, got {landmarks.shape}")
    m = alignment_transform(five, size)
    return warp_image(image, m, size), m
