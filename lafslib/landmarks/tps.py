"""Thin-plate splines between 2-D point sets (Bookstein, TPAMI 1989).

A thin-plate spline ``f(x) = A [x, 1] + sum_j w_j U(|x - c_j|)`` with ``U(r) = r^2 log r``
interpolates K control points ``c_j -> d_j`` with the least bending energy; with a
regularisation ``lam > 0`` it trades exact interpolation for smoothness (``lam -> inf`` gives
the least-squares affine map). Control points are centred and scaled to unit RMS radius before
fitting, so ``lam`` does not depend on the pixel scale. An affine map between the point sets
(in particular a similarity) is reproduced exactly for any ``lam``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ThinPlateSpline", "fit_tps"]


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """U(|a_i - b_j|) = r^2 log r for (M, 2) and (K, 2) points: (M, K), 0 at r = 0."""
    r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 0.5 * r2 * np.log(r2)
    return np.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class ThinPlateSpline:
    """A fitted thin-plate spline; call it on (..., 2) points.

    Attributes:
        centers: (K, 2) normalised control points.
        weights: (K, 2) kernel weights.
        affine: (3, 2) affine part acting on ``[x, y, 1]`` (normalised coordinates).
        shift, scale: normalisation of the input points, ``(x - shift) / scale``.
    """

    centers: np.ndarray
    weights: np.ndarray
    affine: np.ndarray
    shift: np.ndarray
    scale: float

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) points through the spline."""
        points = np.asarray(points, dtype=np.float64)
        flat = (points.reshape(-1, 2) - self.shift) / self.scale
        out = flat @ self.affine[:2] + self.affine[2] + _kernel(flat, self.centers) @ self.weights
        return out.reshape(points.shape)


def fit_tps(src: np.ndarray, dst: np.ndarray, regularization: float = 0.0) -> ThinPlateSpline:
    """Fit the thin-plate spline mapping ``src`` control points onto ``dst``.

    Args:
        src: (K, 2) control points (K >= 3, not all collinear).
        dst: (K, 2) their images.
        regularization: ``lam >= 0``; 0 interpolates the control points exactly.

    Returns:
        The spline, a callable on (..., 2) points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 3:
        raise ValueError(f"need two (K>=3, 2) point sets, got {src.shape} and {dst.shape}")
    if regularization < 0:
        raise ValueError(f"regularization must be >= 0, got {regularization}")
    shift = src.mean(0)
    scale = float(np.sqrt(((src - shift) ** 2).sum(1).mean())) or 1.0
    c = (src - shift) / scale
    k = len(c)
    p = np.hstack([c, np.ones((k, 1))])
    lhs = np.zeros((k + 3, k + 3))
    lhs[:k, :k] = _kernel(c, c) + regularization * np.eye(k)
    lhs[:k, k:] = p
    lhs[k:, :k] = p.T
    rhs = np.vstack([dst, np.zeros((3, 2))])
    try:
        sol = np.linalg.solve(lhs, rhs)
    except np.linalg.LinAlgError as exc:
        raise ValueError("thin-plate spline control points are degenerate (collinear?)") from exc
    return ThinPlateSpline(c, sol[:k], sol[k:], shift, scale)
