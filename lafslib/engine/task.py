"""What a training task gives the loop: its data, model and optimizer, its batch step, and the
state it checkpoints (the split of PyTorch Lightning's ``LightningModule`` from its ``Trainer``,
in a few methods).

Pretraining (:class:`~lafslib.engine.pretrain.PretrainTask`) and finetuning
(:class:`~lafslib.engine.finetune.FinetuneTask`) implement it; :func:`~lafslib.engine.loop.
run_task` owns everything they share.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lafslib.engine.distributed import DistInfo
from lafslib.engine.logging import RunLogger
from lafslib.engine.sampler import ResumableSampler

__all__ = ["RunContext", "TaskParts", "TrainingTask"]


@dataclass
class RunContext:
    """What the loop knows about the run, shared with the task.

    Attributes:
        cfg: the resolved recipe.
        info: rank, world size and device.
        run_dir: the run directory.
        logger: rank-0 console, metrics and TensorBoard.
        steps_per_epoch: optimizer steps per epoch (set once the task's data exist).
        total_steps: steps the schedules span (``optim.epochs`` epochs).
    """

    cfg: Any
    info: DistInfo
    run_dir: Path
    logger: RunLogger
    steps_per_epoch: int = 1
    total_steps: int = 1

    @property
    def device(self) -> torch.device:
        """The training device."""
        return self.info.device


@dataclass
class TaskParts:
    """The pieces the loop drives.

    Attributes:
        loader: yields the task's batches for this rank.
        sampler: its resumable sampler (epoch and start batch set by the loop).
        dataset: the loader's dataset; the loop sets its ``epoch`` attribute.
        optimizer: steps every ``optim.accumulate`` batches.
        module: put in training mode before the first step.
        images: the number of images of the training set (for the start line).
    """

    loader: DataLoader
    sampler: ResumableSampler
    dataset: Any
    optimizer: torch.optim.Optimizer
    module: nn.Module
    images: int = 0


class TrainingTask(ABC):
    """A training task: pretraining or finetuning.

    Attributes:
        name: ``"pretrain"`` or ``"finetune"``: the ``task`` of its checkpoints.
        state_keys: the checkpoint entries :meth:`load_state_dict` reads.
    """

    name: str
    state_keys: tuple[str, ...]

    @abstractmethod
    def build(self, ctx: RunContext) -> TaskParts:
        """Make the data, model and optimizer (rank 0 may print; every rank builds)."""

    @abstractmethod
    def describe(self, ctx: RunContext, last_step: int) -> str:
        """The start line (what is trained, on what, for how many steps)."""

    def start(self, ctx: RunContext, resumed: bool) -> None:  # noqa: B027 (optional hook)
        """Called once before the first step (e.g. initialise a head on a new run)."""

    @abstractmethod
    def schedule(self, at: int, epoch: int) -> dict[str, float]:
        """Set the optimizer's learning rates (and the task's own schedules) for schedule
        position ``at``; returns the scheduled values."""

    @abstractmethod
    def loss(
        self, batch: Any, scheduled: dict[str, float], step: int, micro: int
    ) -> tuple[torch.Tensor, int]:
        """Forward one batch: (loss, images in it on this rank). ``micro`` is the index of the
        batch within its optimizer step (gradient accumulation)."""

    @abstractmethod
    def clip(self, epoch: int) -> None:
        """Clip (or drop) gradients after they are unscaled, before the optimizer step."""

    def after_step(self, scheduled: dict[str, float]) -> None:  # noqa: B027 (optional hook)
        """Called after each optimizer step (e.g. the teacher's EMA)."""

    @abstractmethod
    def metrics(
        self, loss: float, scheduled: dict[str, float], common: dict[str, float]
    ) -> tuple[dict[str, float], list[str]]:
        """The metrics logged at a log step from the all-reduced ``loss``, the values
        :meth:`schedule` returned for this step, and the loop's ``common`` values (cpu_minutes, schedule_step, img_per_s, epoch); returns them and the
        keys shown on the console line."""

    def evaluate(self, step: int) -> None:  # noqa: B027 (optional hook)
        """Periodic evaluation (rank 0 logs it)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The task's checkpoint entries (called on every rank: may hold a collective)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the task's entries of a checkpoint."""

    def optimizer_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """The optimizer's checkpoint entry as this task's optimizer loads it (a task whose
        parameter groups changed between versions maps an older layout here)."""
        return state

    def finish(self, ctx: RunContext, step: int) -> None:  # noqa: B027 (optional hook)
        """Called once after the last step (e.g. export the model)."""
