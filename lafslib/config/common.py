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
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    threads: int | None = bounded(None, ge=1)  # torch CPU threads (None: torch's default)
    log_every: int = bounded(10, ge=1)
    checkpoint_every: int = bounded(500, ge=1)  # optimizer steps; the last step is always saved
    keep_last: int = bounded(3, ge=1)  # checkpoints kept (the newest of this run)
    deterministic: bool = False
    tensorboard: bool = True
    max_steps: int | None = bounded(None, ge=1)  # stop early after this many optimizer steps
    # pretraining: stop once training has used this many CPU minutes (process + DataLoader
    # workers, monitoring excluded), checked at log steps; None: no budget
    max_cpu_minutes: float | None = bounded(None, gt=0)
    # pretraining with max_cpu_minutes: the schedules (lr, weight decay, teacher momentum and
    # temperature) follow the larger of the steps done and the share of the budget used, so they
    # end with the budget on any host (a run is then no longer step-for-step reproducible)
    schedule_by_budget: bool = False


@dataclass
class ModelConfig:
    """A backbone from the registry (``lafs models`` lists names)."""

    name: str = REQUIRED
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """Periodic verification on insightface ``.bin`` sets."""

    bins: list[str] = field(default_factory=list)
    every: int = bounded(0, ge=0)  # optimizer steps; 0 disables periodic evaluation
    batch_size: int = bounded(128, ge=1)
    flip: bool = True
    # pretraining monitor: a folder of aligned faces (labels unused) to also log the accuracy
    # of the PCA-whitened SSL feature (as lafs eval --whiten), fitted on a seeded random subset
    # of whiten_images of them at every evaluation; whiten_shrink as lafs eval --whiten-shrink
    whiten: str | None = None
    whiten_images: int = bounded(2048, ge=2)
    whiten_shrink: float = bounded(0.0, ge=0)
