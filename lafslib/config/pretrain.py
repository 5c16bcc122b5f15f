"""The pretraining recipe: data, views, DINO head, loss and optimizer sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lafslib.config.common import EvalConfig, ModelConfig, RunConfig
from lafslib.config.fields import REQUIRED, SCALE, bounded

__all__ = [
    "DataConfig",
    "ViewsConfig",
    "DINOHeadConfig",
    "DINOLossConfig",
    "PretrainOptimConfig",
    "PretrainConfig",
]


@dataclass
class DataConfig:
    """Unlabelled or labelled training images.

    ``train`` is an image folder, a ``.rec`` file, or ``synthetic`` (procedural faces), or a list
    of folders and ``.rec`` files pretrained on as one pool.
    """

    train: str | list[str] = REQUIRED
    """Image folder (any tree), insightface ``.rec`` file, or ``synthetic``; or a list of folders
    and ``.rec`` files whose images are concatenated into one pool, each with its own landmarks."""
    landmarks: str | list[str | None] | None = None
    """Landmark sidecar (``.csv`` / ``.npz``); None: the one in the data folder or its parent.
    With a list of sources: a list with one entry per source (None: the one beside it)."""
    batch_size: int = bounded(64, ge=1)
    """Images per process per step (the global batch is this times the world size)."""
    num_workers: int = bounded(0, ge=0)
    """DataLoader worker processes (0: load in the training process)."""
    max_images: int | None = bounded(None, ge=1)
    """Use only the first this many images of the source."""
    synthetic_identities: int = bounded(64, ge=1)
    """``train: synthetic``: number of procedural identities."""
    synthetic_per_identity: int = bounded(8, ge=1)
    """``train: synthetic``: images per identity."""
    synthetic_size: int = bounded(112, ge=16)
    """``train: synthetic``: side of the rendered faces in pixels."""


@dataclass
class ViewsConfig:
    """View generation: LAFS landmark views or DINO random multi-crop (LAFS, CVPR 2024)."""

    kind: Literal["lafs", "multicrop"] = "lafs"
    """``lafs``: landmark-patch mosaics; ``multicrop``: DINO random resized crops."""
    landmark_source: Literal["sidecar", "template", "net"] = "sidecar"
    """Landmarks of LAFS views: the data's sidecar, the ArcFace template, or a landmark CNN."""
    landmark_net: str | None = None
    """``landmark_source: net``: Part fViT export whose landmark CNN gives the landmarks."""
    landmark_grid: Literal["similarity", "tps"] = "similarity"
    """How 5 or 68 points become the N-point landmark grid: similarity or thin-plate spline."""
    global_views: int = bounded(2, ge=1)
    """Global views per image (the teacher sees these only)."""
    local_views: int = bounded(8, ge=0)
    """Local views per image (student only)."""
    num_landmarks: int = bounded(196, ge=1)
    """LAFS: landmarks (patches) of a global view, a square number (14 x 14)."""
    local_landmarks: int = bounded(36, ge=1)
    """LAFS: random subset of landmarks in a local view."""
    patch_size: int = bounded(8, ge=1)
    """Side in pixels of each landmark patch (and the backbone's patch size for multi-crop)."""
    sigma: float = bounded(5.0, ge=0)
    """LAFS: landmark perturbation, Gaussian standard deviation in pixels."""
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0], metadata=SCALE)
    """Area range [low, high] of the random resized crop of a global view."""
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4], metadata=SCALE)
    """Multi-crop: area range [low, high] of a local crop."""
    local_size: int = bounded(48, ge=1)
    """Multi-crop: side of a local crop in pixels."""
    image_size: int = bounded(112, ge=1)
    """Side of the aligned face and of a global view in pixels."""
    colour_strength: float = bounded(1.0, ge=0)
    """Scales colour jitter, grayscale and solarisation (1: DINO's recipe, 0: none)."""
    local_layout: Literal["mosaic", "grid"] = "mosaic"
    """LAFS local views: a small mosaic of the subset, or the global layout with the other
    landmarks blanked (``grid``, for flatten-pooled backbones)."""
    relight_strength: float = bounded(0.0, ge=0)
    """Amplitude of a random directional light ramp per view (0: off)."""


@dataclass
class DINOHeadConfig:
    """DINO projection head (Caron et al., ICCV 2021)."""

    out_dim: int = bounded(65536, ge=1)
    """Prototypes: size of the softmax the teacher and student outputs live in."""
    hidden_dim: int = bounded(2048, ge=1)
    """Width of the MLP's hidden layers."""
    bottleneck_dim: int = bounded(256, ge=1)
    """Width of the L2-normalised bottleneck before the prototypes."""
    num_layers: int = bounded(3, ge=1)
    """Layers of the MLP."""
    use_bn: bool = False
    """BatchNorm in the MLP."""
    norm_last_layer: bool = True
    """Weight-normalised last layer with its norm fixed to 1 (DINO's default)."""


@dataclass
class DINOLossConfig:
    """DINO self-distillation loss temperatures and centre momentum.

    The teacher temperature goes linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_epochs``: per epoch as DINO (``teacher_temp_schedule: epoch``, reaching
    ``teacher_temp`` in the last warmup epoch) or per optimizer step (``step``).
    """

    teacher_temp: float = bounded(0.04, gt=0)
    """Teacher softmax temperature after the warmup."""
    warmup_teacher_temp: float = bounded(0.07, gt=0)
    """Teacher temperature at the start of the warmup."""
    warmup_teacher_temp_epochs: int = bounded(30, ge=0)
    """Epochs of the teacher temperature warmup."""
    teacher_temp_schedule: Literal["epoch", "step"] = "epoch"
    """Warmup per epoch (as DINO) or spread over the warmup's optimizer steps."""
    student_temp: float = bounded(0.1, gt=0)
    """Student softmax temperature."""
    center_momentum: float = bounded(0.9, ge=0, le=1)
    """EMA momentum of the teacher centre (all-reduced across ranks)."""
    centering: Literal["ema", "sinkhorn"] = "ema"
    """``ema``: DINO's centre; ``sinkhorn``: Sinkhorn-Knopp balanced targets (DINOv2)."""
    koleo_weight: float = bounded(0.0, ge=0)
    """Weight of the KoLeo regulariser on the student's global-view SSL features (DINOv2)."""
    neighbour_weight: float = bounded(0.0, ge=0, le=1)
    """Nearest-neighbour targets (NNCLR/MSF): the loss becomes ``(1 - w) * own + w *
    neighbour``, the neighbour target coming from a queue of the teacher's past outputs."""
    neighbour_queue: int = bounded(4096, ge=1)
    """Images in the neighbour queue (gathered from every rank, saved in checkpoints)."""
    neighbour_k: int = bounded(1, ge=1)
    """Neighbour target: mean of the outputs of this many nearest queue entries."""


@dataclass
class PretrainOptimConfig:
    """AdamW with warmup + cosine schedules, as in DINO."""

    epochs: int = bounded(100, ge=1)
    """Length of the schedules in epochs."""
    lr: float = bounded(5e-4, ge=0)
    """Peak learning rate per 256 images of total batch (scaled linearly)."""
    min_lr: float = bounded(1e-6, ge=0)
    """Learning rate at the end of the cosine."""
    warmup_epochs: int = bounded(10, ge=0)
    """Linear learning-rate warmup in epochs."""
    weight_decay: float = bounded(0.04, ge=0)
    """Weight decay at the start of its cosine (none on biases, norms, position embeddings)."""
    weight_decay_end: float = bounded(0.4, ge=0)
    """Weight decay at the end of its cosine."""
    momentum_teacher: float = bounded(0.996, ge=0, le=1)
    """Teacher EMA momentum at the start; it rises to 1 along a cosine."""
    clip_grad: float = bounded(3.0, ge=0)
    """Per-parameter gradient norm clipping (0 disables clipping)."""
    freeze_last_layer_epochs: int = bounded(1, ge=0)
    """Epochs during which the head's last layer gets no update."""
    accumulate: int = bounded(1, ge=1)
    """Gradient accumulation: batches per optimizer step."""
    drop_path: float | None = bounded(None, ge=0, lt=1)
    """Stochastic depth of the student's last block, rising linearly over the blocks (None:
    the model's own rate)."""
    frozen: list[str] = field(default_factory=list)
    """Backbone parameters, by name or module prefix, kept at their initial (or ``init``)
    values for the whole run, e.g. ``[patch_embed]`` (MoCo v3) or ``[flatten_pool]``."""


@dataclass
class PretrainConfig:
    """Self-supervised DINO / LAFS pretraining recipe."""

    task: Literal["pretrain"] = "pretrain"
    """Selects this recipe type."""
    init: str | None = None
    """Exported backbone to start student and teacher from."""
    run: RunConfig = field(default_factory=RunConfig)
    """Run directory, seed, device, precision, logging, checkpoints, budget."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training images."""
    views: ViewsConfig = field(default_factory=ViewsConfig)
    """LAFS landmark views or DINO multi-crop."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The backbone."""
    head: DINOHeadConfig = field(default_factory=DINOHeadConfig)
    """The DINO projection head."""
    loss: DINOLossConfig = field(default_factory=DINOLossConfig)
    """The DINO loss."""
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    """AdamW and its schedules."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Periodic SSL-only verification."""
