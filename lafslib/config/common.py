"""Recipe sections shared by pretraining and finetuning: run, model, periodic evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lafslib.config.fields import REQUIRED, bounded

__all__ = ["RunConfig", "ModelConfig", "EvalConfig"]


@dataclass
class RunConfig:
    """Where and how a run executes."""

    output_dir: str = "runs/default"
    """Run directory: config.yaml, env.json, metrics.jsonl, tb/, checkpoints/, export/."""
    seed: int = 0
    """Seed of weights, data order, views and augmentation (the same on every rank)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision of the forward pass; fp16 needs CUDA."""
    threads: int | None = bounded(None, ge=1)
    """Torch CPU threads of each process (None: torch's default)."""
    log_every: int = bounded(10, ge=1)
    """Console, metrics.jsonl and TensorBoard line every this many optimizer steps."""
    checkpoint_every: int = bounded(500, ge=1)
    """Checkpoint every this many optimizer steps; the last step is always saved."""
    keep_last: int = bounded(3, ge=1)
    """Checkpoints kept (the newest of this run; older ones are deleted)."""
    deterministic: bool = False
    """``torch.use_deterministic_algorithms`` (with warnings only)."""
    compile: bool = False
    """``torch.compile`` the backbone's forward (a message, and eager mode, where it cannot)."""
    tensorboard: bool = True
    """Write TensorBoard events to RUN/tb."""
    max_steps: int | None = bounded(None, ge=1)
    """Stop early after this many optimizer steps (the schedules keep their length)."""
    max_cpu_minutes: float | None = bounded(None, gt=0)
    """Pretraining: stop once training used this many CPU minutes (process + DataLoader
    workers, monitoring excluded), checked at log steps; None: no budget."""
    schedule_by_budget: bool = False
    """Pretraining with ``max_cpu_minutes``: the schedules (lr, weight decay, teacher momentum
    and temperature) follow the larger of the steps done and the share of the budget used, so
    they end with the budget on any host (the run is no longer step-for-step reproducible)."""


@dataclass
class ModelConfig:
    """A backbone from the registry (``lafs models`` lists names)."""

    name: str = REQUIRED
    """Registered model name, e.g. ``vit_small`` or ``part_fvit_base``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the model factory (replaced whole by a recipe, not merged)."""


@dataclass
class EvalConfig:
    """Periodic verification on insightface ``.bin`` sets."""

    bins: list[str] = field(default_factory=list)
    """``.bin`` files scored during training (logged as ``eval/<file stem>/accuracy``)."""
    every: int = bounded(0, ge=0)
    """Evaluate every this many optimizer steps; 0 disables periodic evaluation."""
    batch_size: int = bounded(128, ge=1)
    """Images per embedding batch."""
    flip: bool = True
    """Flip test: sum the embeddings of each image and its mirror image."""
    whiten: str | None = None
    """Pretraining: a folder of aligned faces (labels unused) to also log the accuracy of the
    PCA-whitened SSL feature (as ``lafs eval --whiten``), fitted at every evaluation."""
    whiten_images: int = bounded(2048, ge=2)
    """Seeded random subset of the ``whiten`` folder the whitening is fitted on."""
    whiten_shrink: float = bounded(0.0, ge=0)
    """Shrink the whitening's eigenvalues towards their mean (as ``--whiten-shrink``)."""
