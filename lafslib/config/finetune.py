"""The finetuning recipe: labelled data, adapter, margin loss and optimizer sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lafslib.config.common import EvalConfig, ModelConfig, RunConfig
from lafslib.config.fields import REQUIRED, bounded

__all__ = [
    "FinetuneDataConfig",
    "AdapterConfig",
    "MarginLossConfig",
    "FinetuneOptimConfig",
    "FinetuneConfig",
]


@dataclass
class FinetuneDataConfig:
    """Labelled identities (folder of identity sub-folders, ``.rec``, or ``synthetic``)."""

    train: str = REQUIRED
    landmarks: str | None = None
    batch_size: int = bounded(64, ge=1)  # per process
    num_workers: int = bounded(0, ge=0)
    max_images: int | None = bounded(None, ge=1)
    images_per_identity: int | None = bounded(None, ge=1)  # few-shot: k images per identity
    identity_fraction: float = bounded(1.0, gt=0, le=1)  # few-shot: this fraction of identities
    flip: bool = True
    image_size: int = bounded(112, ge=1)
    synthetic_identities: int = bounded(64, ge=1)
    synthetic_per_identity: int = bounded(8, ge=1)
    synthetic_size: int = bounded(112, ge=16)


@dataclass
class AdapterConfig:
    """How the backbone is adapted."""

    mode: Literal["full", "lora", "rslora", "linear", "partial"] = "full"
    layer_decay: float = bounded(1.0, gt=0, le=1)  # layer-wise LR decay (full / partial)
    lora_rank: int = bounded(16, ge=1)
    lora_alpha: float = 16.0
    lora_dropout: float = bounded(0.1, ge=0, lt=1)
    lora_targets: list[str] = field(default_factory=lambda: ["q", "v"])  # of q, k, v, o
    lora_trainable: list[str] = field(default_factory=lambda: ["head"])  # also trained (prefixes)
    lora_module_pattern: str | None = None  # regex over module names (None: attention projections)
    partial_from_block: int = bounded(0, ge=0)
    embedding_dim: int = bounded(512, ge=1)
    # embedding head start: random, or whiten (PCA whitening of its input on the training
    # images, engine/head_init.py; shrinkage towards the mean eigenvalue by whiten_shrink)
    head_init: Literal["random", "whiten"] = "random"
    whiten_shrink: float = bounded(0.3, ge=0)


@dataclass
class MarginLossConfig:
    """Margin softmax loss (ArcFace / CosFace / combined / AdaFace / FRABSM)."""

    name: Literal["arcface", "cosface", "combined", "adaface", "frabsm"] = "arcface"
    scale: float = bounded(64.0, gt=0)
    m1: float = 1.0
    m2: float = 0.5
    m3: float = 0.0
    margin: float = 0.4  # AdaFace / FRABSM m
    h: float = 0.333
    t_alpha: float = 0.01
    gradient: Literal["true", "straight_through"] = "true"
    mining_alpha: float = bounded(0.0, ge=0)  # FRABSM sample-mining strength
    mining_p0: float = 0.6
    mining_mode: Literal["sample", "batch"] = "sample"
    partial_fc_rate: float = bounded(1.0, gt=0, le=1)
    classifier_init: Literal["random", "imprint"] = "random"  # imprint: centres from embeddings
    landmark_consistency: float = bounded(0.0, ge=0)  # Part fViT: MSE to the initial landmark CNN
    landmark_consistency_epochs: float = bounded(0.0, ge=0)  # linear decay to 0 (0: constant)


@dataclass
class FinetuneOptimConfig:
    """Optimizer and LR schedule for the supervised stage."""

    name: Literal["adamw", "sgd"] = "adamw"
    epochs: int = bounded(20, ge=1)
    lr: float = bounded(1e-3, gt=0)
    head_lr: float | None = bounded(None, ge=0)  # separate classifier LR (None: same as lr)
    min_lr: float = bounded(0.0, ge=0)
    warmup_epochs: float = bounded(1.0, ge=0)
    schedule: Literal["cosine", "step"] = "cosine"
    milestones: list[int] = field(default_factory=list)
    gamma: float = bounded(0.1, gt=0)
    weight_decay: float = bounded(0.05, ge=0)
    momentum: float = bounded(0.9, ge=0, lt=1)
    clip_grad: float | None = bounded(None, ge=0)
    accumulate: int = bounded(1, ge=1)
    head_weight_decay: float | None = bounded(None, ge=0)  # classifier (None: weight_decay)
    mixup_alpha: float = bounded(0.0, ge=0)  # lambda ~ Beta(alpha, alpha); 0: no mixup (LAFS: 0.2)
    mixup_prob: float = bounded(0.0, ge=0, le=1)  # probability that a batch is mixed (LAFS: 0.1)
    drop_path: float | None = bounded(None, ge=0, lt=1)  # stochastic depth; None: the model's


@dataclass
class FinetuneConfig:
    """Supervised margin-loss adaptation recipe."""

    task: Literal["finetune"] = "finetune"
    init: str | None = None  # exported backbone (safetensors + JSON) to start from
    run: RunConfig = field(default_factory=RunConfig)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    loss: MarginLossConfig = field(default_factory=MarginLossConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
