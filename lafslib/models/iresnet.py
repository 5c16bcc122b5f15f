"""Improved ResNets (IResNet) for 112x112 faces in the insightface ``arcface_torch`` layout.

Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019;
Duta et al., "Improved Residual Networks for Image and Video Recognition", ICPR 2020.
Parameter and buffer names follow insightface's ``arcface_torch/backbones/iresnet.py``
(``conv1``, ``layer1.0.bn1``, ..., ``fc``, ``features``), so its ``.pth`` files load directly.

Example:
    >>> from lafslib.models import create_model
    >>> model = create_model("iresnet_test").eval()
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

__all__ = ["IBasicBlock", "IResNet"]

_BN_EPS = 1e-5


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN, plus shortcut.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of the second convolution (and of the projection shortcut).
        pool_shortcut: when ``in_ch == out_ch`` and ``stride > 1``, subsample the shortcut
            (1x1 max pool, AdaFace/CVLFace layout) instead of a strided 1x1 conv + BN
            (insightface layout).
    """

    def __init__(
        self, in_ch: int, out_ch: int, stride: int = 1, pool_shortcut: bool = False
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=_BN_EPS)
        self.conv1 = _conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch, stride)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.downsample: nn.Module | None = None
        if pool_shortcut and in_ch == out_ch and stride > 1:
            self.downsample = nn.MaxPool2d(1, stride)
        elif stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch, eps=_BN_EPS)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, in_ch, H, W). Returns (B, out_ch, H/stride, W/stride)."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """IResNet face backbone: 3x3 stem, four stages of stride 2, BN-flatten-FC-BN embedding.

    Args:
        layers: blocks per stage, e.g. (3, 4, 14, 3) for IR-50.
        widths: channels per stage (insightface: 64, 128, 256, 512).
        stem_width: channels of the stem convolution (64).
        embed_dim: embedding size (512).
        img_size: input size; the FC layer sees a (img_size / 16)^2 map (7x7 at 112).
        dropout: dropout before the FC layer (0 in insightface's recipes).
        pool_shortcut: subsample (1x1 max pool) instead of projecting the shortcut of the first
            block when its width does not change (AdaFace/CVLFace IR layout).
        embedding_bn_affine: learnable scale/shift in the final BatchNorm1d (insightface: yes,
            frozen scale; AdaFace/CVLFace: no affine parameters).
    """

    ssl_unused: tuple[str, ...] = ("fc", "features")
    """Modules ``forward`` uses and ``forward_ssl`` never reaches (pretraining leaves them
    out of the optimizer and the teacher's EMA)."""

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 14, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        embed_dim: int = 512,
        img_size: int = 112,
        dropout: float = 0.0,
        pool_shortcut: bool = False,
        embedding_bn_affine: bool = True,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"IResNet needs 4 stages, got layers={layers} widths={widths}")
        if img_size % 16:
            raise ValueError(f"img_size must be divisible by 16, got {img_size}")
        self.embed_dim = embed_dim
        self.ssl_dim = widths[-1]
        self.num_prefix_tokens = 0
        self.conv1 = nn.Conv2d(3, stem_width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width, eps=_BN_EPS)
        self.prelu = nn.PReLU(stem_width)
        in_ch = stem_width
        for i, (depth, width) in enumerate(zip(layers, widths), start=1):
            blocks = [IBasicBlock(in_ch, width, stride=2, pool_shortcut=pool_shortcut)]
            blocks += [IBasicBlock(width, width) for _ in range(depth - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(in_ch, eps=_BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_ch * (img_size // 16) ** 2, embed_dim)
        self.features = nn.BatchNorm1d(embed_dim, eps=_BN_EPS, affine=embedding_bn_affine)
        self.grad_checkpointing = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if embedding_bn_affine:
            nn.init.ones_(self.features.weight)
            self.features.weight.requires_grad_(False)
        self.pretrained_cfg = ModelInfo(
            name="IResNet", input_size=(3, img_size, img_size), embed_dim=embed_dim
        )

    def _stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map after ``bn2``.

        Args:
            x: images (B, 3, H, W) in [-1, 1], H and W divisible by 16.

        Returns:
            (B, C, H/16, W/16).
        """
        x = self.prelu(self.bn1(self.conv1(x)))
        for stage in self._stages():
            for block in stage:
                if self.grad_checkpointing and self.training:
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
        return self.bn2(x)

    def forward_features(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final feature map as tokens (B, (H/16)*(W/16), C), row-major.

        Args:
            x: images (B, 3, H, W) in [-1, 1].
            keypoints: unused (uniform backbone interface).
            token_centers: unused.
        """
        return rearrange(self.forward_map(x), "b c h w -> b (h w) c")

    def forward_ssl(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean of the final feature map (B, ssl_dim); works at any input size divisible by 16."""
        return self.forward_features(x).mean(dim=1)

    def forward(self, x: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """Face embedding (B, embed_dim) of images (B, 3, img_size, img_size) in [-1, 1]."""
        feats = self.forward_map(x).flatten(1)
        if feats.shape[1] != self.fc.in_features:
            raise ValueError(
                f"IResNet embedding needs {self.pretrained_cfg.input_size[1:]} inputs, "
                f"got {tuple(x.shape[-2:])}"
            )
        return self.features(self.fc(self.dropout(feats)))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (none: insightface decays all)."""
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm-style layer groups (stem, blocks, head) for layer-wise LR decay."""
        return {
            "stem": r"^conv1|^bn1|^prelu",
            "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)",
            "head": r"^bn2|^fc|^features",
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory."""
        self.grad_checkpointing = enable


def _build(layers: Sequence[int], kwargs: dict[str, Any], **defaults: Any) -> IResNet:
    return IResNet(**{"layers": tuple(layers), **defaults, **kwargs})


@register_model
def iresnet18(**kwargs: Any) -> IResNet:
    """IR-18 (2, 2, 2, 2 blocks), 512-d embedding."""
    return _build((2, 2, 2, 2), kwargs)


@register_model
def iresnet34(**kwargs: Any) -> IResNet:
    """IR-34 (3, 4, 6, 3 blocks), 512-d embedding."""
    return _build((3, 4, 6, 3), kwargs)


@register_model
def iresnet50(**kwargs: Any) -> IResNet:
    """IR-50 (3, 4, 14, 3 blocks), 512-d embedding."""
    return _build((3, 4, 14, 3), kwargs)


@register_model
def iresnet100(**kwargs: Any) -> IResNet:
    """IR-100 (3, 13, 30, 3 blocks), 512-d embedding."""
    return _build((3, 13, 30, 3), kwargs)


@register_model
def iresnet_test(**kwargs: Any) -> IResNet:
    """Tiny IResNet for tests (1 block per stage, widths 8-32, 32-d embedding)."""
    return _build((1, 1, 1, 1), kwargs, widths=(8, 16, 16, 32), stem_width=8, embed_dim=32)
