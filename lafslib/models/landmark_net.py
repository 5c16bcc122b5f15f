"""MobileNetV3 landmark regressor: an image in, N landmarks in [0, 1] out.

Part fViT (Sun & Tzimiropoulos, "Part-based Face Recognition with Vision Transformers",
BMVC 2022) and LAFS (Sun et al., "LAFS: Landmark-based Facial Self-supervised Learning for
Face Recognition", CVPR 2024) predict the patch locations of a face ViT with a MobileNetV3-Large
feature trunk (Howard et al., "Searching for MobileNetV3", ICCV 2019), spatial mean pooling,
dropout and one linear layer; the 2N outputs are min-max scaled per image. The ``"lafs"`` trunks
below keep the parameter layout of those releases (``features.<i>.conv.<j>``) so their landmark
CNN weights load; torchvision's MobileNetV3 trunks are available as an alternative.

Example:
    >>> net = LandmarkNet(num_landmarks=49, trunk="lafs_small", width_mult=0.5)
    >>> net(torch.randn(2, 3, 112, 112)).shape
    torch.Size([2, 49, 2])
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

__all__ = ["LandmarkNet", "MobileNetV3Trunk", "uniform_grid"]

# (kernel, expansion, out channels, squeeze-excite, activation, stride): MobileNetV3 Tables 1-2.
_LARGE = [
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
]
_SMALL = [
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
]
_TORCHVISION = ("mobilenet_v3_large", "mobilenet_v3_small")


def _divisible(x: float, by: int = 8) -> int:
    return int(math.ceil(x / by) * by)


def _act(kind: str) -> nn.Module:
    return nn.ReLU(inplace=True) if kind == "RE" else nn.Hardswish(inplace=True)


class _SqueezeExcite(nn.Module):
    """Channel gate: mean pool, Linear(C -> C/4) + ReLU, Linear(C/4 -> C) + hard sigmoid."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class _Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk (stride), SE before the activation, 1x1."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, stride: int, exp: int, se: bool, act: str
    ) -> None:
        super().__init__()
        self.residual = stride == 1 and in_ch == out_ch
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, exp, 1, bias=False),
            nn.BatchNorm2d(exp),
            _act(act),
            nn.Conv2d(exp, exp, kernel, stride, (kernel - 1) // 2, groups=exp, bias=False),
            nn.BatchNorm2d(exp),
            _SqueezeExcite(exp) if se else nn.Identity(),
            _act(act),
            nn.Conv2d(exp, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


class MobileNetV3Trunk(nn.Module):
    """MobileNetV3 feature trunk (stem + bottlenecks, no final 1x1 conv) in the LAFS layout.

    Args:
        mode: ``"large"`` (160 output channels) or ``"small"`` (96).
        width_mult: channel multiplier (channels rounded up to multiples of 8).
    """

    def __init__(self, mode: str = "large", width_mult: float = 1.0) -> None:
        super().__init__()
        if mode not in ("large", "small"):
            raise ValueError(f"mode must be 'large' or 'small', got {mode!r}")
        stem = 16
        layers: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.Hardswish(True)
            )
        ]
        in_ch = stem
        for k, exp, c, se, act, s in _LARGE if mode == "large" else _SMALL:
            out_ch = _divisible(c * width_mult)
            layers.append(_Bottleneck(in_ch, out_ch, k, s, _divisible(exp * width_mult), se, act))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.out_channels = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, 3, H, W). Returns (B, out_channels, H/32, W/32) (ceil)."""
        return self.features(x)


def uniform_grid(num_landmarks: int) -> torch.Tensor:
    """Centres of a square g x g patch grid in [0, 1], row-major, (x, y): (g*g, 2)."""
    g = math.isqrt(num_landmarks)
    if g * g != num_landmarks:
        raise ValueError(f"a uniform grid needs a square number of landmarks, got {num_landmarks}")
    c = (torch.arange(g, dtype=torch.float32) + 0.5) / g
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


class LandmarkNet(nn.Module):
    """Landmark regressor: trunk, spatial mean, dropout + linear to 2N, scaled into [0, 1].

    Args:
        num_landmarks: landmarks N (196 = a 14x14 patch grid in Part fViT / LAFS).
        trunk: ``"lafs_large"`` / ``"lafs_small"`` (LAFS/Part fViT layout) or torchvision's
            ``"mobilenet_v3_large"`` / ``"mobilenet_v3_small"`` feature extractors
            (random init, never downloaded).
        width_mult: trunk channel multiplier.
        dropout: dropout before the linear layer (0.5 in Part fViT).
        output: ``"minmax"``: per image, all 2N outputs min-max scaled jointly (Part fViT);
            ``"sigmoid"``: element-wise sigmoid.
        coord_range: (lo, hi): the [0, 1] outputs are mapped affinely onto [lo, hi].
        init_grid: zero the last layer's weight and set its bias so that the initial prediction
            is the uniform patch grid (``num_landmarks`` must be square).
    """

    def __init__(
        self,
        num_landmarks: int = 196,
        trunk: str = "lafs_large",
        width_mult: float = 1.0,
        dropout: float = 0.5,
        output: str = "minmax",
        coord_range: tuple[float, float] = (0.0, 1.0),
        init_grid: bool = False,
    ) -> None:
        super().__init__()
        if output not in ("minmax", "sigmoid"):
            raise ValueError(f"output must be 'minmax' or 'sigmoid', got {output!r}")
        self.num_landmarks = num_landmarks
        self.output = output
        self.coord_range = (float(coord_range[0]), float(coord_range[1]))
        if trunk in ("lafs_large", "lafs_small"):
            self.trunk: nn.Module = MobileNetV3Trunk(trunk.split("_")[1], width_mult)
            channels = self.trunk.out_channels
        elif trunk in _TORCHVISION:
            import torchvision

            net = getattr(torchvision.models, trunk)(weights=None, width_mult=width_mult)
            self.trunk = net.features
            channels = net.classifier[0].in_features
        else:
            raise ValueError(
                f"unknown landmark trunk {trunk!r}; choose lafs_large, lafs_small, "
                "mobilenet_v3_large or mobilenet_v3_small"
            )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, 2 * num_landmarks))
        nn.init.normal_(self.head[1].weight, 0.0, 0.01)
        nn.init.zeros_(self.head[1].bias)
        if init_grid:
            self.reset_to_grid()

    @torch.no_grad()
    def reset_to_grid(self) -> None:
        """Make the prediction the uniform grid for every image (zero weight, grid bias)."""
        lo, hi = self.coord_range
        grid = uniform_grid(self.num_landmarks)
        unit = (grid - lo) / (hi - lo)
        if self.output == "sigmoid":
            bias = torch.logit(unit.clamp(1e-4, 1 - 1e-4))
        else:
            bias = unit
        self.head[1].weight.zero_()
        self.head[1].bias.copy_(rearrange(bias, "n t -> (n t)"))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled regressor outputs (B, 2N), interleaved (x0, y0, x1, y1, ...)."""
        return self.head(self.trunk(x).mean(dim=(-2, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict landmarks.

        Args:
            x: images (B, 3, H, W) in [-1, 1].

        Returns:
            (B, N, 2) (x, y) in ``coord_range`` (normally [0, 1] of width and height).
        """
        t = self.raw(x)
        if self.output == "sigmoid":
            unit = torch.sigmoid(t)
        else:
            t_min = t.amin(dim=1, keepdim=True)
            t_max = t.amax(dim=1, keepdim=True)
            unit = (t - t_min) / (t_max - t_min).clamp_min(1e-12)
        lo, hi = self.coord_range
        return rearrange(lo + (hi - lo) * unit, "b (n t) -> b n t", t=2)
