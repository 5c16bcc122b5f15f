"""timm vision transformers (DINOv2, CLIP, ImageNet ViTs) behind the lafslib backbone interface.

FRoundation (Chettaoui et al., "FRoundation: Are Foundation Models Ready for Face Recognition?",
2024) adapts DINOv2 and CLIP ViTs to faces; this wrapper lets such timm models be converted,
exported, fine-tuned and evaluated like the native backbones. Weights are never downloaded here
(``pretrained=False``); :mod:`lafslib.models.convert` loads them from a local file.

Example:
    >>> from lafslib.models import create_model
    >>> model = create_model("timm_vit", timm_name="vit_tiny_patch16_224", img_size=112)
    >>> model(torch.randn(1, 3, 112, 112)).shape
    torch.Size([1, 192])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lafslib.models._registry import ModelInfo, register_model

__all__ = ["TimmViT"]


class TimmViT(nn.Module):
    """A timm ViT returning its normed CLS token (or mean patch token) as the embedding.

    Args:
        timm_name: timm model name (e.g. ``"vit_base_patch14_dinov2"``,
            ``"vit_base_patch16_clip_224"``).
        img_size: input size the model is built for; other square sizes run through timm's
            dynamic position-embedding interpolation.
        timm_kwargs: extra keyword arguments for ``timm.create_model``.
    """

    def __init__(
        self, timm_name: str, img_size: int = 112, timm_kwargs: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        import timm

        self.model = timm.create_model(
            timm_name,
            pretrained=False,
            num_classes=0,
            img_size=img_size,
            dynamic_img_size=True,
            **(timm_kwargs or {}),
        )
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 1))
        self.embed_dim = self.ssl_dim = int(self.model.num_features)
        cfg = self.model.pretrained_cfg or {}
        self.pretrained_cfg = ModelInfo(
            name="timm_vit",
            input_size=(3, img_size, img_size),
            mean=tuple(cfg.get("mean", (0.5, 0.5, 0.5))),
            std=tuple(cfg.get("std", (0.5, 0.5, 0.5))),
            embed_dim=self.embed_dim,
        )

    def forward_features(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normed tokens (B, prefix + N, D) of images (B, 3, H, W); keypoints are unused."""
        return self.model.forward_features(x)

    def forward_ssl(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """CLS token after the final norm (mean of patch tokens when there is no CLS)."""
        tokens = self.forward_features(x)
        if self.num_prefix_tokens:
            return tokens[:, 0]
        return tokens.mean(dim=1)

    def forward(self, x: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """Embedding (B, embed_dim)."""
        return self.forward_ssl(x)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay."""
        return {f"model.{n}" for n in self.model.no_weight_decay()}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer groups of the timm model with the ``model.`` prefix."""
        inner = self.model.group_matcher(coarse)

        def prefix(spec: Any) -> Any:
            if isinstance(spec, str):
                return "|".join(f"^model\\.{p.lstrip('^')}" for p in spec.split("|"))
            return [(prefix(p), rest) for p, rest in spec]

        return {k: prefix(v) for k, v in inner.items()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing inside the timm model."""
        self.model.set_grad_checkpointing(enable)


@register_model
def timm_vit(**kwargs: Any) -> TimmViT:
    """A timm ViT by name (``timm_name=...``), random init; see :class:`TimmViT`."""
    kwargs.setdefault("timm_name", "vit_base_patch14_dinov2")
    return TimmViT(**kwargs)
