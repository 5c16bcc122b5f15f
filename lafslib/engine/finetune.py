"""Supervised adaptation with margin losses: full finetuning (layer-wise LR decay), partial
finetuning from block k, LoRA / rsLoRA adapters, or a linear probe on a frozen backbone.

The classifier holds one centre per identity (PartialFC: sharded across ranks, optionally
sampled); logits are cosines between the normalised embedding and the normalised centres,
turned into margin logits (ArcFace / CosFace / combined / AdaFace / FRABSM) for a
cross-entropy computed across ranks. The training loop (:mod:`lafslib.engine.loop`) owns
checkpoints, logging, resume, ``torchrun`` and precision; this task gives it the backbone, the
margin head and the batch step. Optional mixup (Zhang et al., ICLR 2018; LAFS uses alpha 0.2
with probability 0.1) mixes images within a batch and mixes the margin losses of both targets.
A LoRA model is exported with its updates merged, as a plain backbone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from lafslib.config import ConfigError, FinetuneConfig
from lafslib.data import open_dataset
from lafslib.engine.adapters import apply_adapter as _apply_adapter
from lafslib.engine.compile import compile_methods
from lafslib.engine.distributed import wrap_ddp
from lafslib.engine.finetune_data import (
    FaceTransform,
    FewShotSubset,
    faces_on_device,
    few_shot_indices,
)
from lafslib.engine.head_init import whiten_head
from lafslib.engine.imprint import imprint_centres
from lafslib.engine.landmark_consistency import landmark_consistency_weight, landmark_reference
from lafslib.engine.loop import run_task
from lafslib.engine.margin_head import margin_loss
from lafslib.engine.mixup import mixup_batch, mixup_margin_loss
from lafslib.engine.optim import adamw
from lafslib.engine.param_groups import param_groups_layer_decay
from lafslib.engine.sampler import ResumableSampler
from lafslib.engine.schedules import warmup_cosine
from lafslib.engine.seeded import SeededViews
from lafslib.engine.state import autocast_context
from lafslib.engine.task import RunContext, TaskParts, TrainingTask
from lafslib.errors import DivergedError
from lafslib.layers.lora import merge_lora
from lafslib.losses import PartialFC, frabsm_weights
from lafslib.models import create_model, save_export, set_drop_path
from lafslib.models.export import load_export_weights, read_export_info

__all__ = [
    "FaceTransform",
    "FewShotSubset",
    "FinetuneTask",
    "_apply_adapter",
    "few_shot_indices",
    "finetune",
    "landmark_consistency_weight",
    "mixup_batch",
    "mixup_margin_loss",
]


def finetune(
    cfg: FinetuneConfig,
    resume: str | None = None,
    overwrite: bool = False,
    allow_change: Sequence[str] = (),
) -> Path:
    """Run supervised adaptation; returns the run directory (its ``export/`` holds the model).

    Args:
        cfg: the resolved recipe.
        resume: ``"auto"`` (latest loadable checkpoint of the run, if any), a checkpoint path,
            or None (then ``run.output_dir`` must be empty or new).
        overwrite: move a previous run in ``run.output_dir`` aside first.
        allow_change: recipe keys a resume may change (``--allow-change``).
    """
    return run_task(FinetuneTask, cfg, resume, overwrite, allow_change)


class FinetuneTask(TrainingTask):
    """Backbone + margin head (PartialFC) trained with a margin loss.

    Args:
        cfg: the resolved finetuning recipe; with ``init``, its model becomes the export's.
    """

    name = "finetune"
    state_keys = ("model", "classifier", "loss")

    def __init__(self, cfg: FinetuneConfig) -> None:
        if not 0 <= cfg.optim.mixup_prob <= 1:
            raise ValueError(f"optim.mixup_prob must be in [0, 1], got {cfg.optim.mixup_prob}")
        if cfg.init:
            init_info = read_export_info(cfg.init)
            cfg.model.name, cfg.model.kwargs = init_info["name"], dict(init_info.get("kwargs", {}))
        self.cfg = cfg

    def build(self, ctx: RunContext) -> TaskParts:
        """Few-shot labelled data and loader, then backbone, margin head and optimizer."""
        cfg, d, info = self.cfg, self.cfg.data, ctx.info
        self.ctx = ctx
        base = open_dataset(
            d.train,
            labelled=True,
            landmarks=d.landmarks if d.landmarks is not None else "auto",
            transform=FaceTransform(d.flip),
            synthetic_identities=d.synthetic_identities,
            synthetic_per_identity=d.synthetic_per_identity,
            synthetic_size=d.synthetic_size,
            seed=cfg.run.seed,
        )
        labels = list(base.labels)
        if d.max_images is not None:
            labels = labels[: d.max_images]
        indices, label_map = few_shot_indices(
            labels, d.images_per_identity, d.identity_fraction, cfg.run.seed
        )
        self.dataset = SeededViews(FewShotSubset(base, indices, label_map), cfg.run.seed)
        self.num_classes = len(label_map)
        sampler = ResumableSampler(
            len(self.dataset), d.batch_size, info.rank, info.world_size, cfg.run.seed
        )
        loader = DataLoader(
            self.dataset,
            batch_size=d.batch_size,
            sampler=sampler,
            num_workers=d.num_workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(cfg.run.seed),
        )
        optimizer = self._networks(ctx)
        return TaskParts(loader, sampler, self.dataset, optimizer, self.net, len(self.dataset))

    def _networks(self, ctx: RunContext) -> torch.optim.Optimizer:
        """Backbone (with its adapter), margin head, optimizer groups; returns the optimizer."""
        cfg, o, device = self.cfg, self.cfg.optim, ctx.device
        model = create_model(cfg.model.name, **cfg.model.kwargs)
        if cfg.init:
            load_export_weights(model, cfg.init)
        if o.drop_path is not None and not set_drop_path(model, o.drop_path) and o.drop_path > 0:
            raise ConfigError(f"optim.drop_path: {cfg.model.name} has no blocks with drop path")
        self.consistency = landmark_reference(model, cfg)  # the initial landmark CNN, frozen
        _apply_adapter(model, cfg)
        self.model = model.to(device)
        if cfg.run.compile:
            compile_methods([(model, "forward")], device, ctx.logger.print)
        if self.consistency is not None:
            self.consistency = self.consistency.to(device)
        self.dim = getattr(model, "embed_dim", None) or model.pretrained_cfg.embed_dim
        margin = margin_loss(cfg)
        self.classifier = PartialFC(margin, self.dim, self.num_classes, cfg.loss.partial_fc_rate)
        self.classifier = self.classifier.to(device)
        skip = set(getattr(model, "no_weight_decay", lambda: set())())
        groups = param_groups_layer_decay(model, o.weight_decay, cfg.adapter.layer_decay, skip)
        groups.append(  # the margin head: its own group, LR and weight decay
            {
                "params": [self.classifier.weight],
                "names": ["classifier.weight"],
                "weight_decay": o.weight_decay
                if o.head_weight_decay is None
                else o.head_weight_decay,
                "lr_scale": (o.head_lr / o.lr) if o.head_lr else 1.0,
            }
        )
        if o.name == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
        else:
            self.optimizer = adamw(groups, lr=o.lr)
        self.net = wrap_ddp(model, ctx.info)
        self.use_kp = bool(
            getattr(getattr(model, "pretrained_cfg", None), "needs_keypoints", False)
        )
        return self.optimizer

    def describe(self, ctx: RunContext, last_step: int) -> str:
        cfg = self.cfg
        return (
            f"finetuning {cfg.model.name} ({cfg.adapter.mode}, {cfg.loss.name}) from "
            f"{cfg.init or 'scratch'} on {len(self.dataset)} images of {self.num_classes} "
            f"identities: {last_step} steps, world size {ctx.info.world_size}, "
            f"device {ctx.device}, run dir {ctx.run_dir}"
        )

    def start(self, ctx: RunContext, resumed: bool) -> None:
        """A new run may whiten the embedding head and imprint the class centres."""
        if resumed:
            return
        cfg, d, info = self.cfg, self.cfg.data, ctx.info
        args = (self.model, self.dataset)
        if cfg.adapter.head_init == "whiten":
            fitted = whiten_head(
                *args, d.batch_size, ctx.device, self.use_kp, cfg.adapter.whiten_shrink,
                cfg.run.seed, info.rank, info.world_size, d.num_workers,
            )  # fmt: skip
            ctx.logger.print(f"embedding head whitened on {fitted} images")
        if cfg.loss.classifier_init == "imprint":
            centres, counts = imprint_centres(
                *args, self.num_classes, self.dim, d.batch_size, ctx.device, self.use_kp,
                info.rank, info.world_size, d.num_workers,
            )  # fmt: skip
            known = counts > 0
            full = self.classifier.full_weight()
            # directions only: each row keeps its initial norm (the logits use directions; the
            # norm sets how far an optimiser step turns the centre)
            full[known] = centres[known].to(full.dtype) * full[known].norm(dim=1, keepdim=True)
            self.classifier.load_full_weight(full)
            ctx.logger.print(f"imprinted {int(known.sum())} of {self.num_classes} class centres")

    def schedule(self, at: int, epoch: int) -> dict[str, float]:
        """Warmup + cosine or step decay; each group's LR is scaled by its ``lr_scale``."""
        o, per_epoch = self.cfg.optim, self.ctx.steps_per_epoch
        warmup = int(o.warmup_epochs * per_epoch)
        if o.schedule == "step":
            base_lr = o.lr * o.gamma ** sum(at / per_epoch >= m for m in o.milestones)
            lr = base_lr * min(1.0, (at + 1) / max(warmup, 1)) if warmup else base_lr
        else:
            lr = warmup_cosine(at, self.ctx.total_steps, warmup, o.lr, o.min_lr)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return {"lr": lr}

    def loss(
        self, batch: Any, scheduled: dict[str, float], step: int, micro: int
    ) -> tuple[torch.Tensor, int]:
        """Margin loss (mixup, FRABSM mining) plus landmark consistency."""
        cfg, o, device = self.cfg, self.cfg.optim, self.ctx.device
        x, y, kp = faces_on_device(batch, device)
        mix_rng = np.random.default_rng([cfg.run.seed, self.ctx.info.rank, step, micro])
        x, kp, y, y_b, lam = mixup_batch(x, y, kp, o.mixup_alpha, o.mixup_prob, mix_rng)
        with autocast_context(device, cfg.run.precision):
            emb = self.net(x, kp) if self.use_kp else self.net(x)
        ce = mixup_margin_loss(self.classifier, emb.float(), y, y_b, lam)
        c = cfg.loss
        if c.name == "frabsm" and c.mining_alpha > 0:
            ce = ce * frabsm_weights(ce, c.mining_alpha, c.mining_p0, c.mining_mode)
        loss = ce.mean()
        if self.consistency is not None:
            weight = landmark_consistency_weight(cfg, step / self.ctx.steps_per_epoch)
            if weight > 0:
                with torch.no_grad():
                    target = self.consistency(x)
                pred = self.model.predicted_landmarks.float()
                loss = loss + weight * torch.nn.functional.mse_loss(pred, target.float())
        if not math.isfinite(loss.item()):
            raise DivergedError(
                f"loss is {loss.item()} at step {step}; stopping before it is checkpointed "
                f"(the checkpoints in {self.ctx.run_dir / 'checkpoints'} are intact): resume "
                "from one with a lower learning rate or clipping, e.g. --resume auto "
                "--set optim.lr=... --allow-change optim.lr"
            )
        return loss, len(x)

    def clip(self, epoch: int) -> None:
        """Clip the global gradient norm of backbone and margin head."""
        if self.cfg.optim.clip_grad:
            params = [*self.model.parameters(), self.classifier.weight]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.clip_grad)

    def metrics(
        self, loss: float, scheduled: dict[str, float], common: dict[str, float]
    ) -> tuple[dict[str, float], list[str]]:
        metrics = {
            "loss": loss,
            "lr": scheduled["lr"],
            "img_per_s": common["img_per_s"],
            "epoch": common["epoch"],
        }
        return metrics, ["loss", "lr"]

    def evaluate(self, step: int) -> None:
        """10-fold verification of the backbone on the recipe's ``.bin`` sets (rank 0)."""
        from lafslib.evaluation.verification import evaluate_bin

        logger = self.ctx.logger
        if not logger.is_main:
            return
        e = self.cfg.eval
        for b in e.bins:
            r = evaluate_bin(self.model, b, e.batch_size, e.flip, self.ctx.device)
            name = Path(b).stem
            acc, std = r["accuracy"], r["accuracy_std"]
            logger.log(step, {"accuracy": acc, "accuracy_std": std}, prefix=f"eval/{name}")
            logger.print(f"eval {name} @ step {step}: accuracy {100 * acc:.2f} +- {100 * std:.2f}")

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {f"backbone.{k}": v for k, v in self.model.state_dict().items()},
            "classifier": self.classifier.full_weight(),  # collective: every rank takes part
            "loss": self.classifier.margin_loss.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prefix = len("backbone.")
        self.model.load_state_dict({k[prefix:]: v for k, v in state["model"].items()})
        self.classifier.load_full_weight(state["classifier"].to(self.ctx.device))
        self.classifier.margin_loss.load_state_dict(state["loss"])

    def finish(self, ctx: RunContext, step: int) -> None:
        """Export the backbone (LoRA merged: a plain backbone, W + scale * B @ A)."""
        if ctx.info.is_main:
            export = self.model
            if self.cfg.adapter.mode in ("lora", "rslora"):
                export = merge_lora(copy.deepcopy(self.model))
            save_export(export.eval(), ctx.run_dir / "export", step=step)
