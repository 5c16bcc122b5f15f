"""The one training loop: run directory and its lock, resume, atomic checkpoints and pruning,
metrics and TensorBoard, CPU budget, distributed set-up and teardown, precision, gradient
accumulation and clipping, periodic evaluation, and a clean stop on SIGTERM/SIGINT/SIGUSR1
(:mod:`~lafslib.engine.preemption`), for any :class:`~lafslib.engine.task.TrainingTask`.

A resume refuses a recipe that changes the meaning of the run unless the change is allowed
(:mod:`~lafslib.engine.recipe_drift`); a non-finite loss stops the run with
:class:`~lafslib.errors.DivergedError` before it is checkpointed.

Every schedule is a function of the global optimizer step plus, with ``run.schedule_by_budget``,
an offset that keeps the schedules abreast of the CPU budget, so resuming restores only the
step, the offset, the CPU minutes spent, the optimizer, the scaler, the task's state and the
RNG states.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lafslib.config import config_to_dict
from lafslib.engine.checkpoint import (
    prune_checkpoints,
    restoring,
    resume_checkpoint,
    save_checkpoint,
)
from lafslib.engine.cputime import CPUClock
from lafslib.engine.distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_mean,
    barrier,
    init_distributed,
    teardown,
)
from lafslib.engine.logging import RunLogger
from lafslib.engine.precision import check_precision
from lafslib.engine.preemption import StopSignals, shield_loader_workers
from lafslib.engine.recipe_drift import check_recipe_drift, record_changes
from lafslib.engine.rundir import prepare_run_dir, write_run_files
from lafslib.engine.state import rng_state, seed_everything, set_rng_state
from lafslib.engine.task import RunContext, TaskParts, TrainingTask
from lafslib.errors import DivergedError, RunInterrupted

__all__ = ["TrainingLoop", "run_task"]


def run_task(
    make_task: Callable[[Any], TrainingTask],
    cfg: Any,
    resume: str | None,
    overwrite: bool,
    allow_change: Sequence[str] = (),
) -> Path:
    """Train the task ``make_task(cfg)`` builds as ``cfg`` says; returns the run directory.

    The task lives only while it trains: its modules (and DDP's hold on the process group)
    are freed before the process group is torn down.

    Args:
        make_task: the task's constructor (e.g. :class:`~lafslib.engine.pretrain.PretrainTask`).
        cfg: the resolved recipe (its ``run`` and ``optim`` sections drive the loop).
        resume: ``"auto"`` (latest checkpoint of the run, if any), a checkpoint path, or None
            (then ``run.output_dir`` must be empty or new).
        overwrite: move a previous run in ``run.output_dir`` aside first.
        allow_change: recipe keys (sections, globs) a resume may change although they change
            the meaning of the run (:func:`~lafslib.engine.recipe_drift.check_recipe_drift`).

    Raises:
        ValueError: ``run.precision=fp16`` without a CUDA device.
        RunDirError: the run directory is locked by another job or holds another run.
        CheckpointError: the resumed recipe changes keys it may not change.
        DivergedError: the loss became NaN or infinite.
        RunInterrupted: a stop signal; the checkpoint of the last step was written.
    """
    info = init_distributed(cfg.run.device)
    try:
        run_dir = _train(make_task, cfg, info, resume, overwrite, tuple(allow_change))
    except BaseException:
        teardown(clean=False)
        raise
    teardown()
    return run_dir


def _train(
    make_task: Callable[[Any], TrainingTask],
    cfg: Any,
    info: DistInfo,
    resume: str | None,
    overwrite: bool,
    allow_change: tuple[str, ...],
) -> Path:
    """Set the process up, claim the run directory, and train."""
    note = check_precision(cfg.run.precision, info.device)
    task = make_task(cfg)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)  # identical initial weights on every rank
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    run_dir, lock = prepare_run_dir(cfg, info.world_size, info.is_main, resume, overwrite)
    logger = RunLogger(run_dir, info.is_main, cfg.run.tensorboard)
    if note:
        logger.print(note)
    try:
        TrainingLoop(task, RunContext(cfg, info, run_dir, logger)).run(resume, allow_change)
    finally:
        logger.close()
        if lock is not None:
            lock.release()
    return run_dir


class TrainingLoop:
    """Drives a task's steps; see the module docstring for what it owns.

    Args:
        task: the training task.
        ctx: the run (recipe, ranks, directory, logger).
    """

    def __init__(self, task: TrainingTask, ctx: RunContext) -> None:
        self.task, self.ctx = task, ctx
        self.cfg = ctx.cfg
        self.step = 0
        self.schedule_offset = 0  # grows when the CPU budget runs ahead of the steps
        self.cpu_carried = 0.0
        self.micro = 0
        self.images_seen = 0
        self.scheduled: dict[str, float] = {}
        self.parts: TaskParts
        self.scaler: torch.amp.GradScaler
        self.clock: CPUClock
        self.signals = StopSignals()

    @property
    def ckpt_dir(self) -> Path:
        """The run's ``checkpoints/``."""
        return self.ctx.run_dir / "checkpoints"

    def run(self, resume: str | None, allow_change: Sequence[str] = ()) -> None:
        """Build, resume, train to the last step (or to a stop signal), finish."""
        ctx, o = self.ctx, self.cfg.optim
        self.parts = self.task.build(ctx)
        self.scaler = torch.amp.GradScaler(
            ctx.device.type, enabled=self.cfg.run.precision == "fp16"
        )
        ctx.steps_per_epoch = max(self.parts.sampler.batches_per_epoch // o.accumulate, 1)
        ctx.total_steps = o.epochs * ctx.steps_per_epoch
        max_steps = self.cfg.run.max_steps
        self.last_step = min(ctx.total_steps, max_steps) if max_steps else ctx.total_steps
        resumed = self._resume(resume, allow_change)
        self.task.start(ctx, resumed)
        ctx.logger.resume_at(self.step)
        write_run_files(ctx.run_dir, self.cfg, ctx.info.world_size, ctx.info.is_main, resumed)
        ctx.logger.print(self.task.describe(ctx, self.last_step))
        self.parts.module.train()
        shield_loader_workers(self.parts.loader)
        self.clock = CPUClock(self.cpu_carried)
        self.t_start = time.time()
        with self.signals:
            while self.step < self.last_step:
                self._epoch()
        self.task.finish(ctx, self.step)

    def _resume(self, resume: str | None, allow_change: Sequence[str]) -> bool:
        """Load the checkpoint ``resume`` names, if any, after checking the recipe against the
        checkpoint's; True when one was loaded."""
        if not resume:
            return False
        ctx = self.ctx
        keys = (*self.task.state_keys, "optimizer", "scaler", "rng")
        found = resume_checkpoint(
            self.ckpt_dir, resume, self.task.name, keys, ctx.logger.print, ctx.info.is_main
        )
        if found is None:
            return False
        path, state = found
        changes = check_recipe_drift(state["config"], config_to_dict(self.cfg), allow_change, path)
        with restoring(path):
            self.task.load_state_dict(state)
            self.parts.optimizer.load_state_dict(self.task.optimizer_state(state["optimizer"]))
            self.scaler.load_state_dict(state["scaler"])
            self.step = int(state["step"])
            self.schedule_offset = int(state.get("schedule_offset", 0))
            self.cpu_carried = float(state.get("cpu_minutes", 0.0))
            set_rng_state(state["rng"])
        if ctx.info.is_main and record_changes(ctx.run_dir, self.step, path, changes):
            allowed = [k for k, c in changes.items() if c["allowed"]]
            if allowed:
                ctx.logger.print(
                    f"recipe changed from step {self.step} on: {', '.join(allowed)} "
                    f"(recorded in {ctx.run_dir / 'config_changes.jsonl'})"
                )
        ctx.logger.print(f"resumed from {path} at step {self.step}")
        return True

    def _epoch(self) -> None:
        """The batches of one epoch from the current step on (or up to the last step)."""
        ctx, accumulate = self.ctx, self.cfg.optim.accumulate
        epoch = self.step // ctx.steps_per_epoch
        self.parts.sampler.set_epoch(epoch, (self.step % ctx.steps_per_epoch) * accumulate)
        self.parts.dataset.epoch = epoch
        for batch in self.parts.loader:
            at = self.step + self.schedule_offset
            scheduled = self.scheduled = self.task.schedule(at, epoch)
            loss, images = self.task.loss(batch, scheduled, self.step, self.micro % accumulate)
            self.scaler.scale(loss / accumulate).backward()
            self.micro += 1
            self.images_seen += images * ctx.info.world_size
            if self.micro % accumulate:
                continue
            self._optimizer_step(epoch, scheduled)
            self._after_step(loss, at, epoch)
            if self.step >= self.last_step or self.step % ctx.steps_per_epoch == 0:
                break

    def _optimizer_step(self, epoch: int, scheduled: dict[str, float]) -> None:
        """Unscale, clip, step, zero the gradients, and the task's after-step update."""
        optimizer = self.parts.optimizer
        self.scaler.unscale_(optimizer)
        self.task.clip(epoch)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        self.task.after_step(scheduled)
        self.step += 1

    def _after_step(self, loss: torch.Tensor, at: int, epoch: int) -> None:
        """Log, evaluate and checkpoint when their step comes."""
        run, eval_cfg, step = self.cfg.run, self.cfg.eval, self.step
        last = step == self.last_step
        if step % run.log_every == 0 or last:
            self._log(loss, at, epoch)
            last = step == self.last_step  # the budget may have ended the run here
        if eval_cfg.every and eval_cfg.bins and (step % eval_cfg.every == 0 or last):
            with self.clock.exclude():
                self.task.evaluate(step)
            self.parts.module.train()
        stop = self.signals.requested(self.ctx.device)
        if step % run.checkpoint_every == 0 or last or stop:
            self._check_finite(float(all_reduce_mean(loss.detach())))
            self._save()
        if stop and not last:
            self._interrupted()

    def _check_finite(self, loss: float) -> None:
        """Stop with one line when the (all-reduced) loss is NaN or infinite."""
        if not math.isfinite(loss):
            raise DivergedError(
                f"loss is {loss} at step {self.step}; stopping before it is checkpointed "
                f"(the checkpoints in {self.ckpt_dir} are intact): resume from one with a "
                "lower learning rate or stronger clipping, e.g. --resume auto "
                "--set optim.lr=... --allow-change optim.lr"
            )

    def _interrupted(self) -> None:
        """After the checkpoint of a stop signal's step: every rank waits for rank 0's write,
        then the run stops with one line."""
        barrier()  # torchrun stops the other ranks when one exits: not before the write
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        line = (
            f"stopped by {self.signals.received or 'a signal on another rank'} after step "
            f"{self.step}: saved {path}; continue with the same command and --resume auto"
        )
        self.ctx.logger.print(line)
        raise RunInterrupted(line)

    def _budget_used(self, cpu_minutes: float) -> float:
        """Share of ``run.max_cpu_minutes`` used, the largest over ranks (so every rank stops
        and schedules alike); 0 without a budget."""
        budget = self.cfg.run.max_cpu_minutes
        if budget is None:
            return 0.0
        used = torch.tensor([cpu_minutes / budget], dtype=torch.float64)
        return float(all_reduce_max(used.to(self.ctx.device)))

    def _log(self, loss: torch.Tensor, at: int, epoch: int) -> None:
        """Follow the CPU budget, then log the metrics (the loss is read, a host sync on GPU,
        only here and before checkpoints)."""
        ctx, step, total = self.ctx, self.step, self.ctx.total_steps
        cpu_minutes = self.clock.minutes()
        used = self._budget_used(cpu_minutes)
        if self.cfg.run.schedule_by_budget:
            self.schedule_offset = max(self.schedule_offset, math.ceil(used * total) - step)
        if used >= 1.0 or step + self.schedule_offset >= total:
            self.last_step = step
        elapsed = time.time() - self.t_start
        loss_value = float(all_reduce_mean(loss.detach()))
        self._check_finite(loss_value)
        common = {
            "cpu_minutes": cpu_minutes,
            "schedule_step": at,
            "img_per_s": self.images_seen / max(elapsed, 1e-9),
            "epoch": epoch,
        }
        metrics, shown = self.task.metrics(loss_value, self.scheduled, common)
        ctx.logger.log(step, metrics)
        ctx.logger.line(
            step, self.last_step, common["img_per_s"], elapsed, {k: metrics[k] for k in shown}
        )

    def _save(self) -> None:
        """Write ``checkpoints/step_<step>.pt`` (rank 0) and prune the older ones."""
        state = self.task.state_dict()  # every rank: it may gather sharded weights
        if not self.ctx.info.is_main:
            return
        state.update(
            optimizer=self.parts.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            step=self.step,
            schedule_offset=self.schedule_offset,
            cpu_minutes=self.clock.minutes(),
            rng=rng_state(),
            config=config_to_dict(self.cfg),
        )
        save_checkpoint(self.ckpt_dir / f"step_{self.step:08d}.pt", state)
        prune_checkpoints(self.ckpt_dir, self.cfg.run.keep_last, upto=self.step)
