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

import math

import torch
import torch.nn.functional as F

__all__ = ["ColourAugment"]

_GRAY = torch.tensor([0.299, 0.587, 0.114])
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


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

    def _u(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return torch.empty(n).uniform_(lo, hi)

    def __call__(
        self, x: torch.Tensor, blur_p: torch.Tensor, solarize_p: torch.Tensor
    ) -> torch.Tensor:
        """Args:
            x: (V, 3, H, W) views in [0, 1].
            blur_p: (V,) probability of blur per view.
            solarize_p: (V,) probability of solarisation per view.

        Returns:
            (V, 3, H, W) augmented views in [0, 1].
        """
        v, _, hh, ww = x.shape
        w = _GRAY.to(x)
        jitter = torch.rand(v) < self.jitter_p
        ones = torch.ones(v)
        b = torch.where(jitter, self._u(v, 1 - self.brightness, 1 + self.brightness), ones)
        c = torch.where(jitter, self._u(v, 1 - self.contrast, 1 + self.contrast), ones)
        s = torch.where(jitter, self._u(v, 1 - self.saturation, 1 + self.saturation), ones)
        angle = 2 * math.pi * torch.where(jitter, self._u(v, -self.hue, self.hue), torch.zeros(v))
        eye = torch.eye(3).expand(v, 3, 3)
        to_gray = torch.ones(3, 1) @ _GRAY[None]  # (3, 3): every channel <- luma
        sat = s.view(v, 1, 1) * eye + (1 - s).view(v, 1, 1) * to_gray
        rot = torch.zeros(v, 3, 3)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
        rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
        m = _YIQ2RGB @ rot @ _RGB2YIQ @ sat * (c * b).view(v, 1, 1)
        gray = torch.rand(v) < self.gray_p
        m[gray] = to_gray @ m[gray]
        # contrast blends towards the mean luma; hue, saturation and grayscale keep gray fixed
        flat = x.reshape(v, 3, hh * ww)
        offset = (1 - c).to(x) * b.to(x) * (flat.mean(2) @ w)
        x = torch.baddbmm(offset.view(v, 1, 1).expand(v, 3, 1), m.to(x), flat)
        x = x.clamp_(0, 1).reshape(v, 3, hh, ww)
        blur = torch.rand(v) < blur_p
        if blur.any():
            x[blur] = self._blur(x[blur])
        sol = torch.rand(v) < solarize_p
        if sol.any():
            xs = x[sol]
            x[sol] = torch.where(xs >= 0.5, 1 - xs, xs)
        return x.clamp_(0, 1)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        n, ch, hh, ww = x.shape
        sigma = self._u(n, *self.blur_sigma).to(x)
        r = self.kernel_size // 2
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (n*ch, K)
        y = F.pad(x.reshape(1, n * ch, hh, ww), (r, r, r, r), mode="reflect")
        y = F.conv2d(y, k[:, None, None, :], groups=n * ch)
        y = F.conv2d(y, k[:, None, :, None], groups=n * ch)
        return y.reshape(n, ch, hh, ww)
