"""Batched photometric augmentation of many views at once, each with its own random parameters.

DINO / LAFS colour recipe per view: colour jitter (brightness 0.4, contrast 0.4, saturation 0.2,
hue 0.1) with probability 0.8, grayscale with probability 0.2, Gaussian blur (sigma 0.1-2) with
a per-view probability, solarisation with a per-view probability. All views of an image are
processed together in float tensors. Brightness, contrast, saturation, hue (a rotation in YIQ
space instead of a per-pixel HSV round trip) and grayscale are composed into one affine colour
map per view and applied with a single batched matrix product (clamping once, at the end);
one grouped separable convolution blurs every view with its own sigma.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ColourAugment"]

_GRAY = torch.tensor([0.299, 0.587, 0.114])
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)
_RGB2YIQ_NP = _RGB2YIQ.double().numpy()
_YIQ2RGB_NP = np.linalg.inv(_RGB2YIQ_NP)
_TO_GRAY_NP = np.ones((3, 1)) @ _GRAY.double().numpy()[None]  # every channel <- luma


class ColourAugment:
    """Colour jitter, grayscale, blur and solarisation for a batch of views.

    Args:
        brightness, contrast, saturation, hue: ColorJitter strengths (0.4, 0.4, 0.2, 0.1).
        jitter_p: probability of colour jitter (0.8).
        gray_p: probability of grayscale (0.2).
        blur_sigma: Gaussian blur sigma range (0.1, 2.0); kernel size 9.
    """

    def __init__(
        self,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        kernel_size: int = 9,
    ) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = (
            brightness,
            contrast,
            saturation,
            hue,
        )
        self.jitter_p, self.gray_p = jitter_p, gray_p
        self.blur_sigma = blur_sigma
        self.kernel_size = kernel_size

    @classmethod
    def with_strength(cls, strength: float) -> ColourAugment:
        """The default augmentation with its jitter magnitudes and grayscale probability scaled
        by ``strength`` (1: DINO's; 0: no colour change, blur only)."""
        if strength < 0:
            raise ValueError(f"colour strength must be >= 0, got {strength}")
        return cls(
            0.4 * strength, 0.4 * strength, 0.2 * strength, 0.1 * strength, 0.8, 0.2 * strength
        )

    @staticmethod
    def draw(v: int) -> torch.Tensor:
        """The (V, 9) float64 draws of one call on ``v`` views (the global torch RNG)."""
        return torch.rand(v, 9, dtype=torch.float64)

    def _matrices(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colour matrices (V, 3, 3) and the contrast offset factors (V,) from uniforms."""
        v = len(r)
        jitter = r[:, 0] < self.jitter_p

        def factor(u: np.ndarray, strength: float) -> np.ndarray:
            return np.where(jitter, 1 + strength * (2 * u - 1), 1.0)

        b, c, s = (
            factor(r[:, 4], self.brightness),
            factor(r[:, 5], self.contrast)[:, None, None],
            (factor(r[:, 6], self.saturation)[:, None, None]),
        )
        angle = 2 * np.pi * np.where(jitter, self.hue * (2 * r[:, 7] - 1), 0.0)
        sat = s * np.eye(3) + (1 - s) * _TO_GRAY_NP
        rot = np.zeros((v, 3, 3))
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2] = np.cos(angle), -np.sin(angle)
        rot[:, 2, 1], rot[:, 2, 2] = np.sin(angle), np.cos(angle)
        m = _YIQ2RGB_NP @ rot @ _RGB2YIQ_NP @ sat * (c * b[:, None, None])
        gray = r[:, 1] < self.gray_p
        m[gray] = _TO_GRAY_NP @ m[gray]
        return m, (1 - c[:, 0, 0]) * b

    def __call__(
        self,
        x: torch.Tensor,
        blur_p: torch.Tensor,
        solarize_p: torch.Tensor,
        signed: bool = False,
        uniforms: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
            x: (V, 3, H, W) views in [0, 1].
            blur_p: (V,) probability of blur per view.
            solarize_p: (V,) probability of solarisation per view.
            signed: return ``2 y - 1`` in [-1, 1] instead of ``y`` in [0, 1] (folded into the
                colour map, so it costs no extra pass over the pixels).
            uniforms: (V, 9) draws in [0, 1) made beforehand (e.g. per sample in a DataLoader
                worker, :meth:`draw`); then nothing is drawn here.

        Returns:
            (V, 3, H, W) augmented views in [0, 1] (or [-1, 1] when ``signed``).
        """
        v, _, hh, ww = x.shape
        # per view: jitter?, gray?, blur?, solarize?, brightness, contrast, saturation, hue, sigma
        r = self.draw(v) if uniforms is None else uniforms.cpu().double()
        m, offset = self._matrices(r.numpy())
        # contrast blends towards the mean luma; hue, saturation and grayscale keep gray fixed
        flat = x.reshape(v, 3, hh * ww)
        offset = torch.from_numpy(offset).to(x) * (flat.mean(2) @ _GRAY.to(x))
        m = torch.from_numpy(m).to(x)
        # in signed mode every step runs on y' = 2 y - 1: blur is affine-equivariant, the
        # clamps become [-1, 1] and solarisation (y >= 0.5 -> 1 - y) becomes y' >= 0 -> -y'
        lo, mid = (-1.0, 0.0) if signed else (0.0, 0.5)
        if signed:
            m, offset = 2 * m, 2 * offset - 1
        x = torch.baddbmm(offset.view(v, 1, 1).expand(v, 3, 1), m, flat)
        x = x.clamp_(lo, 1).reshape(v, 3, hh, ww)
        blur = torch.nonzero(r[:, 2] < blur_p.double())[:, 0].to(x.device)
        if len(blur):
            sigma = (
                self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * r[blur.cpu(), 8]
            )
            # x[index], not index_select: the latter is about 50x slower for large slices on CPU
            x.index_copy_(0, blur, self._blur(x[blur], sigma.to(x)))
        sol = torch.nonzero(r[:, 3] < solarize_p.double())[:, 0].to(x.device)
        if len(sol):
            xs = x[sol]
            x.index_copy_(0, sol, torch.where(xs >= mid, 2 * mid - xs, xs))
        return x.clamp_(lo, 1)

    def _blur(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        n, ch, hh, ww = x.shape
        r = self.kernel_size // 2
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (n*ch, K)
        y = F.pad(x.reshape(1, n * ch, hh, ww), (r, r, r, r), mode="reflect")
        # depthwise convolutions run several times faster on channels-last tensors on CPU
        y = y.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(y, k.view(n * ch, 1, 1, -1), groups=n * ch)
        y = F.conv2d(y, k.view(n * ch, 1, -1, 1), groups=n * ch)
        return y.reshape(n, ch, hh, ww)
