"""DINO / LAFS self-supervised pretraining: the task the training loop runs.

The student (backbone + DINO head) sees every view; the teacher, an EMA of the student, sees
the global views only. Views of equal token count go through the backbone in one pass. The
loop (:mod:`lafslib.engine.loop`) owns the run directory, resume, checkpoints, metrics, the CPU
budget, precision and the distributed set-up; this task gives it the networks, the batch step
and its state: student, teacher, DINO centre and the neighbour queue.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset, default_collate

from lafslib.config import ConfigError, PretrainConfig
from lafslib.engine.clipping import clip_gradients
from lafslib.engine.compile import compile_methods
from lafslib.engine.distributed import all_reduce_mean, wrap_ddp
from lafslib.engine.ema import TeacherEMA
from lafslib.engine.loop import run_task
from lafslib.engine.optim import adamw
from lafslib.engine.param_groups import param_groups
from lafslib.engine.pretrain_setup import (
    build_views,
    check_flatten_views,
    check_whitening_folder,
    freeze_parameters,
    net_landmarks,
    open_pretrain_data,
)
from lafslib.engine.sampler import ResumableSampler
from lafslib.engine.schedules import cosine_schedule, teacher_temperature, warmup_cosine
from lafslib.engine.seeded import SeededViews
from lafslib.engine.ssl_monitor import collapse_stats, log_views_picture, monitor_teacher
from lafslib.engine.ssl_network import SSLNetwork
from lafslib.engine.state import autocast_context
from lafslib.engine.task import RunContext, TaskParts, TrainingTask
from lafslib.losses import DINOLoss, NeighbourQueue, koleo_loss
from lafslib.models import DINOHead, create_model, set_drop_path

__all__ = [
    "PretrainTask",
    "SSLNetwork",
    "SeededViews",
    "build_views",
    "clip_gradients",
    "freeze_parameters",
    "param_groups",
    "pretrain",
]


def pretrain(
    cfg: PretrainConfig,
    resume: str | None = None,
    overwrite: bool = False,
    allow_change: Sequence[str] = (),
) -> Path:
    """Run self-supervised pretraining; returns the run directory.

    Args:
        cfg: the resolved recipe.
        resume: ``"auto"`` (latest loadable checkpoint of the run, if any), a checkpoint path,
            or None (then ``run.output_dir`` must be empty or new).
        overwrite: move a previous run in ``run.output_dir`` aside first.
        allow_change: recipe keys a resume may change (``--allow-change``).
    """
    return run_task(PretrainTask, cfg, resume, overwrite, allow_change)


class PretrainTask(TrainingTask):
    """DINO student/teacher over LAFS or multi-crop views, with optional neighbour targets
    and KoLeo.

    Args:
        cfg: the resolved pretraining recipe.
    """

    name = "pretrain"

    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg
        self.queue: NeighbourQueue | None = None
        self.state_keys = ("student", "teacher", "loss") + (
            ("neighbours",) if cfg.loss.neighbour_weight > 0 else ()
        )

    def build(self, ctx: RunContext) -> TaskParts:
        """Views, dataset and loader, then student, teacher, loss and optimizer."""
        cfg, info = self.cfg, ctx.info
        self.ctx = ctx
        self.views = build_views(cfg.views)
        # the loader yields each face and its views' draws, the step renders the views
        d = cfg.data
        landmarks = d.landmarks if d.landmarks is not None else "auto"
        if cfg.views.kind == "lafs" and cfg.views.landmark_source == "net":
            landmarks = net_landmarks(cfg, ctx.run_dir, info, ctx.logger)
        dataset = open_pretrain_data(d, landmarks, self.views.draw, cfg.run.seed)
        if d.max_images is not None:
            dataset = Subset(dataset, range(min(d.max_images, len(dataset))))
        self.dataset = SeededViews(dataset, cfg.run.seed)
        sampler = ResumableSampler(
            len(self.dataset), d.batch_size, info.rank, info.world_size, seed=cfg.run.seed
        )
        loader = DataLoader(
            self.dataset,
            batch_size=d.batch_size,
            sampler=sampler,
            num_workers=d.num_workers,
            collate_fn=default_collate,
            drop_last=True,
            generator=torch.Generator().manual_seed(cfg.run.seed),
        )
        optimizer = self._networks(ctx)
        return TaskParts(loader, sampler, self.dataset, optimizer, self.student, len(self.dataset))

    def _networks(self, ctx: RunContext) -> torch.optim.Optimizer:
        """Student, teacher, DINO loss, neighbour queue; returns the student's AdamW."""
        cfg, o, h, lc = self.cfg, self.cfg.optim, self.cfg.head, self.cfg.loss
        backbone = create_model(cfg.model.name, **cfg.model.kwargs)
        check_whitening_folder(cfg, backbone.ssl_dim)
        head = DINOHead(backbone.ssl_dim, h.out_dim, h.hidden_dim, h.bottleneck_dim,
                        h.num_layers, h.use_bn, h.norm_last_layer)  # fmt: skip
        if cfg.init:
            from lafslib.models.export import load_export_weights

            load_export_weights(backbone, cfg.init)
            ctx.logger.print(f"student and teacher start from {cfg.init}")
        frozen = freeze_parameters(backbone, o.frozen)
        if frozen:
            ctx.logger.print(f"frozen: {frozen} backbone parameters ({', '.join(o.frozen)})")
        check_flatten_views(cfg, backbone)
        if o.drop_path is not None and not set_drop_path(backbone, o.drop_path) and o.drop_path > 0:
            raise ConfigError(f"optim.drop_path: {cfg.model.name} has no blocks with drop path")
        device = ctx.device
        self.student = SSLNetwork(backbone, head, mosaic_views=cfg.views.kind == "lafs")
        self.student = self.student.to(device)
        # the backbone's embedding head never sees the views: out of the optimizer and EMA
        self.unused = self.student.ssl_unused_parameters()
        for name, p in self.student.named_parameters():
            if name in self.unused:
                p.requires_grad_(False)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.ema = TeacherEMA(self.teacher, self.student)
        if cfg.run.compile:  # after the copy: the teacher gets its own compiled forward
            compile_methods(
                [(net.encoder, "forward_ssl") for net in (self.student, self.teacher)],
                device,
                ctx.logger.print,
            )
        self.loss_fn = DINOLoss(h.out_dim, lc.student_temp, lc.center_momentum, lc.centering)
        self.loss_fn = self.loss_fn.to(device)
        if lc.neighbour_weight > 0:
            self.queue = NeighbourQueue(
                lc.neighbour_queue, backbone.ssl_dim, h.out_dim, lc.neighbour_k
            ).to(device)
        self.skip = set(getattr(backbone, "no_weight_decay", lambda: set())())
        optimizer = adamw(param_groups(self.student, self.skip), lr=0.0)
        # a Part fViT's landmark CNN is not used on mosaic views: let DDP skip what is unused
        self.net = wrap_ddp(self.student, ctx.info, find_unused_parameters=True)
        self.optimizer = optimizer
        return optimizer

    def describe(self, ctx: RunContext, last_step: int) -> str:
        d, info = self.cfg.data, ctx.info
        global_batch = d.batch_size * info.world_size * self.cfg.optim.accumulate
        return (
            f"pretraining {self.cfg.model.name} on {len(self.dataset)} images: {last_step} steps "
            f"({ctx.steps_per_epoch}/epoch), global batch {global_batch}, world size "
            f"{info.world_size}, device {info.device}, run dir {ctx.run_dir}"
        )

    def start(self, ctx: RunContext, resumed: bool) -> None:
        """A new run logs the views of its first readable face to TensorBoard."""
        if ctx.info.is_main and not resumed and self.cfg.run.tensorboard:
            log_views_picture(self.dataset.dataset, self.views, ctx.logger)

    def schedule(self, at: int, epoch: int) -> dict[str, float]:
        """Learning rate (linear scaling with the global batch), weight decay, teacher
        momentum and temperature at schedule position ``at``."""
        cfg, o, ctx = self.cfg, self.cfg.optim, self.ctx
        total, per_epoch = ctx.total_steps, ctx.steps_per_epoch
        global_batch = cfg.data.batch_size * ctx.info.world_size * o.accumulate
        per_step = cfg.loss.teacher_temp_schedule == "step"
        temp_warmup = cfg.loss.warmup_teacher_temp_epochs * (per_epoch if per_step else 1)
        lr = warmup_cosine(at, total, o.warmup_epochs * per_epoch, o.lr * global_batch / 256.0,
                           o.min_lr)  # fmt: skip
        wd = cosine_schedule(at, total, o.weight_decay, o.weight_decay_end)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if group["apply_wd"]:
                group["weight_decay"] = wd
        return {
            "lr": lr,
            "wd": wd,
            "momentum": cosine_schedule(at, total, o.momentum_teacher, 1.0),
            "teacher_temp": teacher_temperature(
                at if per_step else at // per_epoch,
                temp_warmup,
                cfg.loss.warmup_teacher_temp,
                cfg.loss.teacher_temp,
            ),
        }

    def loss(
        self, batch: Any, scheduled: dict[str, float], step: int, micro: int
    ) -> tuple[torch.Tensor, int]:
        """DINO loss of the student's views against the teacher's global views (mixed with
        the neighbours' targets once the queue is full), plus KoLeo."""
        device, lc, t_temp = self.ctx.device, self.cfg.loss, scheduled["teacher_temp"]
        batch = self._views(batch)
        global_views = [v for v in batch if v["is_global"]]
        with autocast_context(device, self.cfg.run.precision):
            with torch.no_grad():
                teacher_out, teacher_feats = self.teacher(global_views, return_features=True)
            student_out, student_feats = self.net(batch, return_features=True)
            loss = self.loss_fn(student_out, teacher_out, t_temp)
            if self.queue is not None:
                if self.queue.ready:
                    neighbour_out = [self.queue.targets(f) for f in teacher_feats]
                    neighbour_loss = self.loss_fn(
                        student_out, neighbour_out, t_temp, update_center=False
                    )
                    loss = torch.lerp(loss, neighbour_loss, lc.neighbour_weight)
                self.queue.push(teacher_feats[0], teacher_out[0])
            self.dino_loss = loss
            if lc.koleo_weight:
                self.koleo = sum(
                    koleo_loss(f) for f, v in zip(student_feats, batch) if v["is_global"]
                )
                loss = loss + lc.koleo_weight * self.koleo
        self.teacher_out = teacher_out
        return loss, len(batch[0]["image"])

    def _views(self, batch: Any) -> list[dict[str, Any]]:
        """The batch's views, rendered on the training device from the loader's faces and
        per-sample draws (the colour draws feed a host-side computation: they stay)."""
        device = self.ctx.device
        plan = {k: v if k == "colour" else v.to(device, non_blocking=True)
                for k, v in batch.items()}  # fmt: skip
        return self.views.render(plan)

    def clip(self, epoch: int) -> None:
        """Per-parameter clipping; the last head layer gets no update in its frozen epochs."""
        if self.cfg.optim.clip_grad > 0:
            clip_gradients(self.ema.student, self.cfg.optim.clip_grad)
        if epoch < self.cfg.optim.freeze_last_layer_epochs:
            for p in self.student.head.last_layer.parameters():
                p.grad = None

    def after_step(self, scheduled: dict[str, float]) -> None:
        """The teacher follows the student (EMA with the scheduled momentum)."""
        self.ema.update(scheduled["momentum"])

    def metrics(
        self, loss: float, scheduled: dict[str, float], common: dict[str, float]
    ) -> tuple[dict[str, float], list[str]]:
        koleo = self.cfg.loss.koleo_weight
        metrics = {
            "loss": loss,
            "dino_loss": float(all_reduce_mean(self.dino_loss.detach())),
            **({"koleo": float(all_reduce_mean(self.koleo.detach()))} if koleo else {}),
            "cpu_minutes": common["cpu_minutes"],
            "schedule_step": common["schedule_step"],
            **scheduled,
            "img_per_s": common["img_per_s"],
            "epoch": common["epoch"],
            **collapse_stats(self.teacher_out, self.loss_fn.center, scheduled["teacher_temp"]),
        }
        return metrics, ["loss", "lr", "wd", "momentum", "teacher_temp"]

    def evaluate(self, step: int) -> None:
        monitor_teacher(self.cfg, self.teacher.backbone, self.ctx.device, step, self.ctx.logger)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "loss": self.loss_fn.state_dict(),
        }
        if self.queue is not None:
            state["neighbours"] = self.queue.state_dict()
        return state

    def optimizer_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """An optimizer state of a lafslib that still held the unused embedding head in the
        optimizer (which never stepped it: it holds no moments) drops those entries."""
        if [len(g["params"]) for g in state["param_groups"]] == [
            len(g["params"]) for g in self.optimizer.param_groups
        ]:
            return state
        old_groups = param_groups(self.student, self.skip, include=self.unused)
        names = {id(p): n for n, p in self.student.named_parameters()}
        old_names = [names[id(p)] for g in old_groups for p in g["params"]]
        if len(old_names) != sum(len(g["params"]) for g in state["param_groups"]):
            return state  # another layout: load_state_dict reports the mismatch
        kept = [i for i, n in enumerate(old_names) if n not in self.unused]
        index = {old: new for new, old in enumerate(kept)}
        return {
            "state": {index[i]: v for i, v in state["state"].items() if i in index},
            "param_groups": [
                {**g, "params": [index[i] for i in g["params"] if i in index]}
                for g in state["param_groups"]
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.loss_fn.load_state_dict(state["loss"])
        if self.queue is not None:
            self.queue.load_state_dict(state["neighbours"])
