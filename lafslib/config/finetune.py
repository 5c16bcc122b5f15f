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
    """Folder of identity sub-folders, insightface ``.rec`` file, or ``synthetic``."""
    landmarks: str | None = None
    """Landmark sidecar for KP-RPE backbones; None: the one in the data folder or its parent."""
    batch_size: int = bounded(64, ge=1)
    """Images per process per step (the global batch is this times the world size)."""
    num_workers: int = bounded(0, ge=0)
    """DataLoader worker processes (0: load in the training process)."""
    max_images: int | None = bounded(None, ge=1)
    """Use only the first this many images of the source."""
    images_per_identity: int | None = bounded(None, ge=1)
    """Few-shot: keep k seeded images per identity."""
    identity_fraction: float = bounded(1.0, gt=0, le=1)
    """Few-shot: keep this seeded fraction of the identities."""
    flip: bool = True
    """Random horizontal flip (keypoints mirrored with their left/right indices swapped)."""
    image_size: int = bounded(112, ge=1)
    """Not read (the model's ``pretrained_cfg`` gives the input size); accepted so that older
    recipes and run configs still load."""
    synthetic_identities: int = bounded(64, ge=1)
    """``train: synthetic``: number of procedural identities."""
    synthetic_per_identity: int = bounded(8, ge=1)
    """``train: synthetic``: images per identity."""
    synthetic_size: int = bounded(112, ge=16)
    """``train: synthetic``: side of the rendered faces in pixels."""


@dataclass
class AdapterConfig:
    """How the backbone is adapted."""

    mode: Literal["full", "lora", "rslora", "linear", "partial"] = "full"
    """What trains: everything, LoRA / rsLoRA matrices, the embedding head, or blocks from
    ``partial_from_block`` on."""
    layer_decay: float = bounded(1.0, gt=0, le=1)
    """Layer-wise learning-rate decay per block from the top (``full`` / ``partial``)."""
    lora_rank: int = bounded(16, ge=1)
    """LoRA rank r."""
    lora_alpha: float = 16.0
    """LoRA scale numerator: alpha / r (LoRA) or alpha / sqrt(r) (rsLoRA)."""
    lora_dropout: float = bounded(0.1, ge=0, lt=1)
    """Dropout on the LoRA input."""
    lora_targets: list[str] = field(default_factory=lambda: ["q", "v"])
    """Attention projections that get LoRA updates, of ``q``, ``k``, ``v``, ``o``."""
    lora_trainable: list[str] = field(default_factory=lambda: ["head"])
    """Parameter name prefixes trained alongside the LoRA matrices."""
    lora_module_pattern: str | None = None
    """Regular expression over module names to wrap (None: the attention projections)."""
    partial_from_block: int = bounded(0, ge=0)
    """``partial``: first trained block (the stem and earlier blocks are frozen)."""
    embedding_dim: int = bounded(512, ge=1)
    """Not read (the backbone's embedding size applies); accepted so that older recipes and
    run configs still load."""
    head_init: Literal["random", "whiten"] = "random"
    """Embedding head start: random, or the PCA whitening of its input on the training
    images."""
    whiten_shrink: float = bounded(0.3, ge=0)
    """``head_init: whiten``: shrinkage of the eigenvalues towards their mean."""


@dataclass
class MarginLossConfig:
    """Margin softmax loss (ArcFace / CosFace / combined / AdaFace / FRABSM)."""

    name: Literal["arcface", "cosface", "combined", "adaface", "frabsm"] = "arcface"
    """The margin loss."""
    scale: float = bounded(64.0, gt=0)
    """Logit scale s."""
    m1: float = 1.0
    """``combined``: multiplicative angular margin, cos(m1 theta + m2) - m3."""
    m2: float = 0.5
    """Additive angular margin (ArcFace, ``combined``)."""
    m3: float = 0.0
    """Additive cosine margin (CosFace, ``combined``)."""
    margin: float = 0.4
    """AdaFace / FRABSM margin m."""
    h: float = 0.333
    """AdaFace: concentration h of the feature-norm margin scaler."""
    t_alpha: float = 0.01
    """AdaFace: update rate of the running feature-norm mean and std."""
    gradient: Literal["true", "straight_through"] = "true"
    """Margin gradient: the true one, or insightface's straight-through one."""
    mining_alpha: float = bounded(0.0, ge=0)
    """FRABSM: sample-mining strength alpha (0: off)."""
    mining_p0: float = 0.6
    """FRABSM: probability p0 at which the mining weight is 1."""
    mining_mode: Literal["sample", "batch"] = "sample"
    """FRABSM: mining weights per sample or per batch."""
    partial_fc_rate: float = bounded(1.0, gt=0, le=1)
    """PartialFC: share of negative class centres sampled per step (positives always kept)."""
    classifier_init: Literal["random", "imprint"] = "random"
    """Class centres: random, or imprinted from the starting model's embeddings."""
    landmark_consistency: float = bounded(0.0, ge=0)
    """Part fViT: weight of the MSE between predicted landmarks and the initial landmark
    CNN's."""
    landmark_consistency_epochs: float = bounded(0.0, ge=0)
    """Epochs over which ``landmark_consistency`` decays linearly to 0 (0: constant)."""


@dataclass
class FinetuneOptimConfig:
    """Optimizer and LR schedule for the supervised stage."""

    name: Literal["adamw", "sgd"] = "adamw"
    """Optimizer."""
    epochs: int = bounded(20, ge=1)
    """Length of the schedule in epochs."""
    lr: float = bounded(1e-3, gt=0)
    """Peak learning rate of the backbone."""
    head_lr: float | None = bounded(None, ge=0)
    """Learning rate of the classifier (None: ``lr``)."""
    min_lr: float = bounded(0.0, ge=0)
    """Learning rate at the end of the cosine."""
    warmup_epochs: float = bounded(1.0, ge=0)
    """Linear warmup in epochs."""
    schedule: Literal["cosine", "step"] = "cosine"
    """After the warmup: cosine, or steps of ``gamma`` at ``milestones``."""
    milestones: list[int] = field(default_factory=list)
    """``schedule: step``: epochs at which the learning rate is multiplied by ``gamma``."""
    gamma: float = bounded(0.1, gt=0)
    """``schedule: step``: factor at each milestone."""
    weight_decay: float = bounded(0.05, ge=0)
    """Weight decay of the backbone (none on biases and norms)."""
    momentum: float = bounded(0.9, ge=0, lt=1)
    """SGD momentum."""
    clip_grad: float | None = bounded(None, ge=0)
    """Gradient norm clipping (None: off)."""
    accumulate: int = bounded(1, ge=1)
    """Gradient accumulation: batches per optimizer step."""
    head_weight_decay: float | None = bounded(None, ge=0)
    """Weight decay of the classifier (None: ``weight_decay``)."""
    mixup_alpha: float = bounded(0.0, ge=0)
    """Mixup: lambda ~ Beta(alpha, alpha); 0: no mixup (LAFS: 0.2)."""
    mixup_prob: float = bounded(0.0, ge=0, le=1)
    """Mixup: probability that a batch is mixed (LAFS: 0.1)."""
    drop_path: float | None = bounded(None, ge=0, lt=1)
    """Stochastic depth of the last block, rising linearly over the blocks (None: the
    model's own rate)."""


@dataclass
class FinetuneConfig:
    """Supervised margin-loss adaptation recipe."""

    task: Literal["finetune"] = "finetune"
    """Selects this recipe type."""
    init: str | None = None
    """Exported backbone (safetensors + JSON) to start from; its architecture is used."""
    run: RunConfig = field(default_factory=RunConfig)
    """Run directory, seed, device, precision, logging, checkpoints."""
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    """Labelled training images."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The backbone (ignored for its architecture when ``init`` is set)."""
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    """Full finetuning, LoRA, linear probe or partial."""
    loss: MarginLossConfig = field(default_factory=MarginLossConfig)
    """The margin loss and the classifier."""
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    """Optimizer and schedule."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Periodic verification."""
