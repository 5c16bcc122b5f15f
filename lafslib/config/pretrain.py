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

    ``train`` is an image folder, a ``.rec`` file, or ``synthetic`` (procedural faces).
    """

    train: str = REQUIRED
    landmarks: str | None = None  # sidecar (.csv / .npz); None: look next to the data
    batch_size: int = bounded(64, ge=1)  # per process
    num_workers: int = bounded(0, ge=0)
    max_images: int | None = bounded(None, ge=1)
    synthetic_identities: int = bounded(64, ge=1)
    synthetic_per_identity: int = bounded(8, ge=1)
    synthetic_size: int = bounded(112, ge=16)


@dataclass
class ViewsConfig:
    """View generation: LAFS landmark views or DINO random multi-crop (LAFS, CVPR 2024)."""

    kind: Literal["lafs", "multicrop"] = "lafs"
    landmark_source: Literal["sidecar", "template", "net"] = "sidecar"
    landmark_net: str | None = None  # Part fViT export whose landmark CNN gives the landmarks
    landmark_grid: Literal["similarity", "tps"] = "similarity"  # 5/68 points -> N-point grid
    global_views: int = bounded(2, ge=1)
    local_views: int = bounded(8, ge=0)
    num_landmarks: int = bounded(196, ge=1)
    local_landmarks: int = bounded(36, ge=1)
    patch_size: int = bounded(8, ge=1)
    sigma: float = bounded(5.0, ge=0)
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0], metadata=SCALE)
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4], metadata=SCALE)
    local_size: int = bounded(48, ge=1)
    image_size: int = bounded(112, ge=1)
    colour_strength: float = bounded(1.0, ge=0)  # scales colour jitter, grayscale, solarisation
    local_layout: Literal["mosaic", "grid"] = "mosaic"  # grid: landmark subsets in global layout
    relight_strength: float = bounded(0.0, ge=0)  # directional light ramp amplitude (0: off)


@dataclass
class DINOHeadConfig:
    """DINO projection head (Caron et al., ICCV 2021)."""

    out_dim: int = bounded(65536, ge=1)
    hidden_dim: int = bounded(2048, ge=1)
    bottleneck_dim: int = bounded(256, ge=1)
    num_layers: int = bounded(3, ge=1)
    use_bn: bool = False
    norm_last_layer: bool = True


@dataclass
class DINOLossConfig:
    """DINO self-distillation loss temperatures and centre momentum.

    The teacher temperature goes linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_epochs``: per epoch as DINO (``teacher_temp_schedule: epoch``, reaching
    ``teacher_temp`` in the last warmup epoch) or per optimizer step (``step``).
    """

    teacher_temp: float = bounded(0.04, gt=0)
    warmup_teacher_temp: float = bounded(0.07, gt=0)
    warmup_teacher_temp_epochs: int = bounded(30, ge=0)
    teacher_temp_schedule: Literal["epoch", "step"] = "epoch"
    student_temp: float = bounded(0.1, gt=0)
    center_momentum: float = bounded(0.9, ge=0, le=1)
    centering: Literal["ema", "sinkhorn"] = "ema"  # ema: DINO; sinkhorn: DINOv2
    koleo_weight: float = bounded(0.0, ge=0)  # KoLeo on the student's global SSL features
    # nearest-neighbour targets (NNCLR/MSF): the DINO loss becomes (1 - w) * own + w * neighbour,
    # the neighbour targets coming from a queue of the teacher's past outputs
    neighbour_weight: float = bounded(0.0, ge=0, le=1)
    neighbour_queue: int = bounded(4096, ge=1)
    neighbour_k: int = bounded(1, ge=1)


@dataclass
class PretrainOptimConfig:
    """AdamW with warmup + cosine schedules, as in DINO."""

    epochs: int = bounded(100, ge=1)
    lr: float = bounded(5e-4, ge=0)  # per 256 images of total batch
    min_lr: float = bounded(1e-6, ge=0)
    warmup_epochs: int = bounded(10, ge=0)
    weight_decay: float = bounded(0.04, ge=0)
    weight_decay_end: float = bounded(0.4, ge=0)
    momentum_teacher: float = bounded(0.996, ge=0, le=1)
    clip_grad: float = bounded(3.0, ge=0)  # 0 disables clipping
    freeze_last_layer_epochs: int = bounded(1, ge=0)
    accumulate: int = bounded(1, ge=1)
    drop_path: float | None = bounded(None, ge=0, lt=1)  # stochastic depth; None: the model's
    # backbone parameters kept at their initial (or --init) values for the whole run, by name
    # or name prefix: e.g. [patch_embed] (MoCo v3's frozen patch projection) or [flatten_pool]
    frozen: list[str] = field(default_factory=list)


@dataclass
class PretrainConfig:
    """Self-supervised DINO / LAFS pretraining recipe."""

    task: Literal["pretrain"] = "pretrain"
    init: str | None = None  # exported backbone to start student and teacher from
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: DINOHeadConfig = field(default_factory=DINOHeadConfig)
    loss: DINOLossConfig = field(default_factory=DINOLossConfig)
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
