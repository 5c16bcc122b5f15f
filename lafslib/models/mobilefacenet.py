"""MobileFaceNet: a mobile face backbone with a global depthwise convolution (GDConv) head.

Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face Verification on Mobile
Devices", CCBR 2018. Two variants, each with the module names of the published checkpoints of
its layout, so those files load key for key (``lafs convert --format mobilefacenet``):

- :class:`MobileFaceNet`: the paper's table 1 (3x3 stem, depthwise 3x3, five bottleneck
  stages (t, c, n, s), 1x1 conv to 512, 7x7 GDConv, linear 1x1 conv to the 128-d embedding)
  with ReLU6 / ReLU activations, the layout of widely used MS1M checkpoints (``conv1``,
  ``dw_conv``, ``features.N.conv``, ``conv2``, ``gdconv``, ``conv3``, ``bn``).
- :class:`MobileFaceNetMBF`: insightface ``arcface_torch``'s ``mbf`` (PReLU, doubled widths,
  expansion widths 128/256/512, GDConv + linear + BatchNorm1d to a 512-d embedding; keys
  ``layers.N.layers...``, ``conv_sep``, ``features.layers...``).

Both take the library's input, RGB in [-1, 1]. Weights trained on another normalisation keep it
through ``input_mean`` / ``input_std`` (the mean and std the weights expect of RGB in [0, 1]):
the model first maps its input back to [0, 1] and renormalises, exactly, so every consumer of
the model (evaluation, ONNX, finetuning) feeds it correctly without knowing.

Example:
    >>> from lafslib.models import create_model
    >>> model = create_model("mobilefacenet_test").eval()
    >>> model(torch.randn(2, 3, 112, 112)).shape
    torch.Size([2, 32])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from lafslib.models._registry import ModelInfo, register_model

__all__ = ["MobileFaceNet", "MobileFaceNetMBF", "InputRenormalise"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (t expansion, c channels, n repeats, s stride of the first), Chen et al. 2018, table 1
PAPER_BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class InputRenormalise(nn.Module):
    """Map RGB in [-1, 1] to ``(x01 - mean) / std``, the normalisation some weights expect.

    Args:
        mean: per-channel mean of RGB in [0, 1].
        std: per-channel std.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"input_mean/input_std need 3 values (std > 0), got {mean}, {std}")
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        # x01 = (x + 1) / 2, so (x01 - mean) / std = x * scale + shift
        self.register_buffer("scale", 0.5 / std_t, persistent=False)
        self.register_buffer("shift", (0.5 - mean_t) / std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, H, W) normalised."""
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


def _conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int = 1,
    stride: int = 1,
    groups: int = 1,
    act: nn.Module | None = None,
    padding: int | None = None,
) -> nn.Sequential:
    """Conv (no bias, "same" padding unless given) + BN (+ activation)."""
    pad = (kernel - 1) // 2 if padding is None else padding
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    return nn.Sequential(*layers, act) if act is not None else nn.Sequential(*layers)


class _SeparableConv(nn.Module):
    """Depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU (the paper's second layer)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class _Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise (stride), linear 1x1 project."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn(in_ch, hidden, act=nn.ReLU6(inplace=True)))
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6(inplace=True)),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride)."""
        return x + self.conv(x) if self.residual else self.conv(x)


class _GDConv(nn.Module):
    """Global depthwise convolution: one k x k filter per channel over the whole map, + BN."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, k, k) -> (B, C, 1, 1)."""
        return self.bn(self.depthwise(x))


class _FaceCNN(nn.Module):
    """Interface shared by the MobileFaceNets: embedding, token map, SSL feature, LR groups."""

    embed_dim: int
    ssl_dim: int
    num_prefix_tokens = 0
    input_norm: InputRenormalise | None
    grad_checkpointing: bool

    def _setup(
        self,
        embed_dim: int,
        ssl_dim: int,
        img_size: int,
        input_mean: Sequence[float] | None,
        input_std: Sequence[float] | None,
    ) -> None:
        if img_size % 16:
            raise ValueError(f"img_size must be divisible by 16, got {img_size}")
        if (input_mean is None) != (input_std is None):
            raise ValueError("input_mean and input_std must be given together")
        self.embed_dim, self.ssl_dim = embed_dim, ssl_dim
        self.input_norm = None if input_mean is None else InputRenormalise(input_mean, input_std)
        self.grad_checkpointing = False
        self.pretrained_cfg = ModelInfo(
            name=type(self).__name__, input_size=(3, img_size, img_size), embed_dim=embed_dim
        )

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before the GDConv head: images (B, 3, H, W) in [-1, 1] ->
        (B, ssl_dim, H/16, W/16)."""
        if self.input_norm is not None:
            x = self.input_norm(x)
        return self._trunk(x)

    def forward_features(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The feature map as tokens (B, (H/16)*(W/16), ssl_dim), row-major; keypoints unused."""
        return rearrange(self.forward_map(x), "b c h w -> b (h w) c")

    def forward_ssl(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean of the feature map (B, ssl_dim)."""
        return self.forward_features(x).mean(dim=1)

    def forward(self, x: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """Face embedding (B, embed_dim) of images (B, 3, img_size, img_size) in [-1, 1]."""
        size = self.pretrained_cfg.input_size[1:]
        if tuple(x.shape[-2:]) != tuple(size):
            raise ValueError(
                f"{type(self).__name__} needs {size} inputs, got {tuple(x.shape[-2:])}"
            )
        return self._embed(self.forward_map(x))

    def _run(self, modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
        for module in modules:
            if self.grad_checkpointing and self.training:
                x = checkpoint(module, x, use_reentrant=False)
            else:
                x = module(x)
        return x

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (none)."""
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory."""
        self.grad_checkpointing = enable


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MobileFaceNet(_FaceCNN):
    """MobileFaceNet of the paper (ReLU6 bottlenecks), 128-d embedding.

    Args:
        bottlenecks: (t, c, n, s) per stage (the paper's table 1).
        stem_width: channels of the stem and the separable conv (64).
        last_width: channels of the 1x1 conv before GDConv (512).
        embed_dim: embedding size (128).
        img_size: input size (112: GDConv sees a 7x7 map).
        input_mean: mean of RGB in [0, 1] the weights expect (e.g. ImageNet's); ``None``: [-1, 1].
        input_std: the matching std.
    """

    def __init__(
        self,
        bottlenecks: Sequence[Sequence[int]] = PAPER_BOTTLENECKS,
        stem_width: int = 64,
        last_width: int = 512,
        embed_dim: int = 128,
        img_size: int = 112,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self._setup(embed_dim, last_width, img_size, input_mean, input_std)
        self.conv1 = _conv_bn(3, stem_width, 3, 2, act=nn.ReLU6(inplace=True))
        self.dw_conv = _SeparableConv(stem_width)
        blocks, in_ch = [], stem_width
        for t, c, n, s in bottlenecks:
            for i in range(n):
                blocks.append(_Bottleneck(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        self.features = nn.Sequential(*blocks)
        self.conv2 = _conv_bn(in_ch, last_width, act=nn.ReLU6(inplace=True))
        self.gdconv = _GDConv(last_width, img_size // 16)
        self.conv3 = nn.Conv2d(last_width, embed_dim, 1)
        self.bn = nn.BatchNorm2d(embed_dim)
        _init_weights(self)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw_conv(self.conv1(x))
        return self.conv2(self._run(self.features, x))

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv3(self.gdconv(x))).flatten(1)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm-style layer groups (stem, blocks, head) for layer-wise LR decay."""
        return {
            "stem": r"^conv1|^dw_conv",
            "blocks": r"^features\.(\d+)",
            "head": r"^conv2|^gdconv|^conv3|^bn",
        }


class _ConvBlock(nn.Module):
    """Conv + BN (+ PReLU), insightface's ``ConvBlock`` / ``LinearBlock`` (key ``layers``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        prelu = nn.PReLU(out_ch) if act else None
        self.layers = _conv_bn(in_ch, out_ch, kernel, stride, groups, prelu, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride)."""
        return self.layers(x)


class _DepthWise(nn.Module):
    """1x1 expand (PReLU), 3x3 depthwise (stride, PReLU), linear 1x1 project, +- residual."""

    def __init__(self, in_ch: int, out_ch: int, hidden: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            _ConvBlock(in_ch, hidden),
            _ConvBlock(hidden, hidden, 3, stride, groups=hidden),
            _ConvBlock(hidden, out_ch, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride)."""
        return x + self.layers(x) if self.residual else self.layers(x)


class _Residual(nn.Module):
    """``n`` residual depthwise blocks of constant width."""

    def __init__(self, channels: int, n: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *[_DepthWise(channels, channels, hidden, 1, residual=True) for _ in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.layers(x)


class _GDCHead(nn.Module):
    """GDConv 7x7 + BN, flatten, linear (no bias), BatchNorm1d: the 512-d ``mbf`` embedding."""

    def __init__(self, channels: int, kernel: int, embed_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _ConvBlock(channels, channels, kernel, groups=channels, act=False, padding=0),
            nn.Flatten(),
            nn.Linear(channels, embed_dim, bias=False),
            nn.BatchNorm1d(embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, k, k) -> (B, embed_dim)."""
        return self.layers(x)


class MobileFaceNetMBF(_FaceCNN):
    """insightface ``arcface_torch``'s MobileFaceNet (``mbf``): PReLU, widths ``64 * scale``.

    Its first layer is ``kernel 3 padding 1`` (so the GDConv head sees ``img_size / 16``); the
    depthwise stages expand to 128, 256 and 512 channels whatever ``scale`` is, and the second
    layer is a grouped 3x3 conv (64 groups) when ``blocks[0] == 1``.

    Args:
        blocks: residual blocks in the four stages ((1, 4, 6, 2); ``mbf_large``: (2, 8, 12, 4)).
        scale: width multiplier of the 64 / 128 base widths (2; large: 4).
        embed_dim: embedding size (512).
        img_size: input size (112).
        input_mean: mean of RGB in [0, 1] the weights expect; ``None``: [-1, 1] (insightface's).
        input_std: the matching std.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (1, 4, 6, 2),
        scale: int = 2,
        embed_dim: int = 512,
        img_size: int = 112,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f"MobileFaceNetMBF needs 4 stages of blocks, got {blocks}")
        self._setup(embed_dim, 512, img_size, input_mean, input_std)
        w1, w2 = 64 * scale, 128 * scale
        second: nn.Module = (
            _ConvBlock(w1, w1, 3, groups=64) if blocks[0] == 1 else _Residual(w1, blocks[0], 128)
        )
        self.layers = nn.ModuleList(
            [
                _ConvBlock(3, w1, 3, 2),
                second,
                _DepthWise(w1, w1, 128, 2, residual=False),
                _Residual(w1, blocks[1], 128),
                _DepthWise(w1, w2, 256, 2, residual=False),
                _Residual(w2, blocks[2], 256),
                _DepthWise(w2, w2, 512, 2, residual=False),
                _Residual(w2, blocks[3], 256),
            ]
        )
        self.conv_sep = _ConvBlock(w2, 512)
        self.features = _GDCHead(512, img_size // 16, embed_dim)
        _init_weights(self)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_sep(self._run(self.layers, x))

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm-style layer groups (stem, blocks, head) for layer-wise LR decay."""
        return {
            "stem": r"^layers\.0\.",
            "blocks": r"^layers\.(\d+)",
            "head": r"^conv_sep|^features",
        }


@register_model
def mobilefacenet(**kwargs: Any) -> MobileFaceNet:
    """MobileFaceNet (Chen et al. 2018), 1.0M parameters, 128-d embedding."""
    return MobileFaceNet(**kwargs)


@register_model
def mobilefacenet_mbf(**kwargs: Any) -> MobileFaceNetMBF:
    """insightface ``mbf``: MobileFaceNet with PReLU and doubled widths, 512-d embedding."""
    return MobileFaceNetMBF(**kwargs)


@register_model
def mobilefacenet_mbf_large(**kwargs: Any) -> MobileFaceNetMBF:
    """insightface ``mbf_large``: blocks (2, 8, 12, 4), widths x4, 512-d embedding."""
    return MobileFaceNetMBF(**{"blocks": (2, 8, 12, 4), "scale": 4, **kwargs})


@register_model
def mobilefacenet_test(**kwargs: Any) -> MobileFaceNet:
    """Tiny MobileFaceNet for tests (two bottleneck stages, 32-d embedding)."""
    defaults = {
        "bottlenecks": ((2, 16, 1, 2), (2, 32, 1, 2), (2, 32, 1, 2)),
        "stem_width": 16,
        "last_width": 64,
        "embed_dim": 32,
    }
    return MobileFaceNet(**{**defaults, **kwargs})
