"""Directional relighting: a random linear light ramp across each view.

Colour jitter changes an image's brightness as a whole; faces photographed in the wild are
also lit from one side. ``relight`` multiplies every view by its own ramp
``1 + a * (x cos t + y sin t) / sqrt(2)`` over pixel coordinates ``x, y`` in [-1, 1], with
``a ~ U(0, strength)`` and a direction ``t ~ U(0, 2 pi)``, so one side of the face darkens
while the other brightens; the gain stays within ``1 +- a``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["relight", "relight_uniforms"]


def relight(
    images: torch.Tensor,
    strength: float,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Views lit by random linear ramps.

    Args:
        images: (V, C, H, W) views in [0, 1].
        strength: the largest ramp amplitude ``a`` (0: unchanged; 0.5: the gain ranges over
            0.5-1.5 at most, its extremes at opposite corners when the ramp points at them).
        generator: optional torch generator (default: the global RNG).
        uniforms: (V, 2) draws in [0, 1) of amplitude and angle made beforehand (e.g. per
            sample in a DataLoader worker); then nothing is drawn here.

    Returns:
        (V, C, H, W) relit views, clamped to [0, 1].
    """
    if strength < 0:
        raise ValueError(f"relight strength must be >= 0, got {strength}")
    if strength == 0:
        return images
    v, _, h, w = images.shape
    if uniforms is None:
        uniforms = relight_uniforms(v, generator)
    amp = uniforms[:, 0].to(images.device, torch.float32) * strength
    angle = uniforms[:, 1].to(images.device, torch.float32) * (2 * math.pi)
    ys = torch.linspace(-1, 1, h, dtype=images.dtype, device=images.device)
    xs = torch.linspace(-1, 1, w, dtype=images.dtype, device=images.device)
    ramp = (
        xs.view(1, 1, w) * torch.cos(angle).view(v, 1, 1)
        + ys.view(1, h, 1) * torch.sin(angle).view(v, 1, 1)
    ) / math.sqrt(2)
    gain = 1 + amp.view(v, 1, 1).to(images.dtype) * ramp
    return (images * gain[:, None]).clamp_(0, 1)


def relight_uniforms(v: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The (V, 2) draws of :func:`relight` for ``v`` views: amplitudes, then angles."""
    amp = torch.rand(v, generator=generator)
    angle = torch.rand(v, generator=generator)
    return torch.stack([amp, angle], 1)
