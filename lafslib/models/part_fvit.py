"""Part fViT: a face ViT whose tokens are patches sampled at landmarks predicted by a CNN.

Sun & Tzimiropoulos, "Part-based Face Recognition with Vision Transformers", BMVC 2022; the
backbone fine-tuned by LAFS (Sun et al., CVPR 2024). A MobileNetV3 landmark regressor
(:class:`~lafslib.models.landmark_net.LandmarkNet`) predicts N = g*g landmarks, p x p patches are
sampled there with ``grid_sample`` (differentiable w.r.t. the landmarks, so the landmark CNN is
trained end to end by the recognition loss, without landmark supervision), tiled row-major into a
(g*p) x (g*p) mosaic and embedded by a registered face ViT (one token per landmark).

Example:
    >>> from lafslib.models import create_model
    >>> model = create_model("part_fvit_test")
    >>> emb = model(torch.randn(2, 3, 112, 112))
    >>> model.last_landmarks.shape
    torch.Size([2, 196, 2])
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from lafslib.layers.patch_sampling import patches_to_mosaic, sample_patches
from lafslib.models._registry import ModelInfo, create_model, model_info, register_model
from lafslib.models.landmark_net import LandmarkNet

__all__ = ["PartFViT", "release_coord_range"]


def release_coord_range(img_size: int) -> tuple[float, float]:
    """Landmark range equivalent to the Part fViT / LAFS release's min-max scaling.

    The release scales landmarks to [0, S - 1] pixels and samples a patch at offsets
    -p/2 .. p/2 - 1 around them, i.e. centred half a pixel before the landmark; in the
    [0, 1] centre convention of :func:`~lafslib.layers.patch_sampling.sample_patches` that is
    [-0.5 / S, (S - 1.5) / S].
    """
    return (-0.5 / img_size, (img_size - 1.5) / img_size)


class PartFViT(nn.Module):
    """Landmark CNN + landmark-patch face ViT, trainable end to end.

    Args:
        vit: registry name of the token transformer (e.g. ``"fvit_base"``); it must accept a
            (g*p) x (g*p) image (any square grid).
        vit_kwargs: keyword arguments for that factory.
        num_landmarks: N (a square number: the mosaic is sqrt(N) x sqrt(N) patches).
        patch_size: p, pixels per patch side.
        img_size: input image size.
        landmark_trunk: trunk of the landmark CNN (see :class:`LandmarkNet`).
        landmark_width_mult: its channel multiplier.
        landmark_dropout: dropout before its last layer (0.5 in Part fViT).
        landmark_output: ``"minmax"`` (Part fViT) or ``"sigmoid"``.
        coord_range: landmark range in [0, 1] coordinates; default: the release's
            (:func:`release_coord_range`).
        init_grid: initialise the landmark CNN to predict the uniform patch grid.
        freeze_landmarks: keep the landmark CNN fixed (no gradients, always in eval mode).
    """

    def __init__(
        self,
        vit: str = "fvit_base",
        vit_kwargs: dict[str, Any] | None = None,
        num_landmarks: int = 196,
        patch_size: int = 8,
        img_size: int = 112,
        landmark_trunk: str = "lafs_large",
        landmark_width_mult: float = 1.0,
        landmark_dropout: float = 0.5,
        landmark_output: str = "minmax",
        coord_range: tuple[float, float] | None = None,
        init_grid: bool = False,
        freeze_landmarks: bool = False,
    ) -> None:
        super().__init__()
        grid = math.isqrt(num_landmarks)
        if grid * grid != num_landmarks:
            raise ValueError(f"num_landmarks must be a square number, got {num_landmarks}")
        self.num_landmarks = num_landmarks
        self.patch_size = patch_size
        self.img_size = img_size
        self.landmark_net = LandmarkNet(
            num_landmarks=num_landmarks,
            trunk=landmark_trunk,
            width_mult=landmark_width_mult,
            dropout=landmark_dropout,
            output=landmark_output,
            coord_range=coord_range if coord_range is not None else release_coord_range(img_size),
            init_grid=init_grid,
        )
        self.vit = create_model(vit, **(vit_kwargs or {}))
        self.freeze_landmarks = freeze_landmarks
        if freeze_landmarks:
            self.landmark_net.requires_grad_(False)
            self.landmark_net.eval()
        self.embed_dim = self.vit.embed_dim
        self.ssl_dim = self.vit.ssl_dim
        self.num_prefix_tokens = getattr(self.vit, "num_prefix_tokens", 0)
        self.last_landmarks: torch.Tensor | None = None
        self.predicted_landmarks: torch.Tensor | None = None
        inner = model_info(self.vit)
        self.pretrained_cfg = ModelInfo(
            name="PartFViT",
            input_size=(3, img_size, img_size),
            needs_keypoints=inner.needs_keypoints,  # a KP-RPE transformer
            num_keypoints=inner.num_keypoints,
            embed_dim=self.embed_dim,
        )

    def train(self, mode: bool = True) -> PartFViT:
        """Set training mode; a frozen landmark CNN stays in eval mode."""
        super().train(mode)
        if self.freeze_landmarks:
            self.landmark_net.eval()
        return self

    def predict_landmarks(self, x: torch.Tensor) -> torch.Tensor:
        """Landmarks of the CNN for images (B, 3, H, W) in [-1, 1]: (B, N, 2) (x, y) in [0, 1]."""
        return self.landmark_net(x)

    def mosaic(self, x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Patches of ``x`` at ``centers`` (B, n, 2), n square, tiled into (B, 3, g*p, g*p)."""
        g = math.isqrt(centers.shape[1])
        if g * g != centers.shape[1]:
            raise ValueError(f"need a square number of token centres, got {centers.shape[1]}")
        return patches_to_mosaic(sample_patches(x, centers, self.patch_size), g)

    def _centers(self, x: torch.Tensor, token_centers: torch.Tensor | None) -> torch.Tensor:
        predicted = token_centers is None
        if predicted:
            token_centers = self.predict_landmarks(x)
        if not torch.compiler.is_compiling():  # a tensor kept while tracing would be fake
            if predicted:
                self.predicted_landmarks = token_centers  # with its graph, for landmark losses
            self.last_landmarks = token_centers.detach()
        return token_centers

    def forward_features(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens of the ViT over the landmark-patch mosaic.

        Args:
            x: face images (B, 3, H, W) in [-1, 1].
            keypoints: (B, 5, 2) in [0, 1], passed to KP-RPE transformers.
            token_centers: (B, n, 2) in [0, 1]: sample patches here instead of at the
                predicted landmarks (n square).

        Returns:
            (B, prefix + n, D) tokens, prefix tokens (CLS) first.
        """
        centers = self._centers(x, token_centers)
        return self.vit.forward_features(self.mosaic(x, centers), keypoints, centers)

    @property
    def ssl_unused(self) -> tuple[str, ...]:
        """The transformer's modules that ``forward_ssl`` never reaches (its embedding head)."""
        return tuple(f"vit.{p}" for p in getattr(self.vit, "ssl_unused", ()))

    def forward_ssl(
        self,
        x: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        token_centers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled feature (B, ssl_dim) of the transformer for self-supervised heads."""
        centers = self._centers(x, token_centers)
        return self.vit.forward_ssl(self.mosaic(x, centers), keypoints, centers)

    def forward(self, x: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """Face embedding (B, embed_dim); the landmarks used are kept in ``last_landmarks``.

        The landmarks reach the transformer as ``token_centers`` when its ``forward`` accepts
        them (KP-RPE at arbitrary token positions).
        """
        centers = self._centers(x, None)
        mosaic = self.mosaic(x, centers)
        if "token_centers" in inspect.signature(self.vit.forward).parameters:
            return self.vit(mosaic, keypoints, token_centers=centers)
        return self.vit(mosaic, keypoints)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (those of the transformer)."""
        return {f"vit.{n}" for n in self.vit.no_weight_decay()}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer groups: the landmark CNN joins the stem; transformer groups are prefixed."""
        inner = self.vit.group_matcher(coarse)

        def prefix(spec: Any) -> Any:
            if isinstance(spec, str):
                return "|".join(f"^vit\\.{p.lstrip('^')}" for p in spec.split("|"))
            return [(prefix(p), rest) for p, rest in spec]

        groups = {k: prefix(v) for k, v in inner.items()}
        groups["stem"] = "^landmark_net|" + groups["stem"]
        return groups

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing in the transformer blocks."""
        self.vit.set_grad_checkpointing(enable)


def _build(kwargs: dict[str, Any], **defaults: Any) -> PartFViT:
    defaults.update(kwargs)
    return PartFViT(**defaults)


@register_model
def part_fvit_base(**kwargs: Any) -> PartFViT:
    """Part fViT with the LAFS settings: MobileNetV3-Large landmark CNN, 196 landmarks,
    8x8 patches, fViT-Base transformer (dim 768, depth 12, 11 heads)."""
    return _build(kwargs, vit="fvit_base")


@register_model
def part_fvit_test(**kwargs: Any) -> PartFViT:
    """Tiny Part fViT for tests: half-width MobileNetV3-Small landmark CNN, tiny fViT."""
    return _build(kwargs, vit="fvit_test", landmark_trunk="lafs_small", landmark_width_mult=0.5)
