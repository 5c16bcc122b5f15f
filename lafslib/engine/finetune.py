"""Supervised adaptation with margin losses: full finetuning (layer-wise LR decay), partial
finetuning from block k, LoRA / rsLoRA adapters, or a linear probe on a frozen backbone.

The classifier holds one centre per identity (PartialFC: sharded across ranks, optionally
sampled); logits are cosines between the normalised embedding and the normalised centres,
turned into margin logits (ArcFace / CosFace / combined / AdaFace / FRABSM) for a
cross-entropy computed across ranks. Checkpoints, logging, resume, ``torchrun`` and export
use the same machinery as pretraining. Optional mixup (Zhang et al., ICLR 2018; LAFS uses
alpha 0.2 with probability 0.1) mixes images within a batch and mixes the margin losses of both
targets. A LoRA model is exported with its updates merged, as a plain backbone.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from lafslib.config import ConfigError, FinetuneConfig, config_to_dict
from lafslib.data import open_dataset
from lafslib.data.base import first_readable
from lafslib.engine.checkpoint import (
    prune_checkpoints,
    restoring,
    resume_checkpoint,
    save_checkpoint,
)
from lafslib.engine.distributed import DistInfo, all_reduce_mean, cleanup, init_distributed
from lafslib.engine.head_init import whiten_head
from lafslib.engine.imprint import imprint_centres
from lafslib.engine.logging import RunLogger
from lafslib.engine.param_groups import param_groups_layer_decay
from lafslib.engine.pretrain import SeededViews
from lafslib.engine.rundir import prepare_run_dir, write_run_files
from lafslib.engine.sampler import ResumableSampler
from lafslib.engine.schedules import warmup_cosine
from lafslib.engine.state import autocast_context, rng_state, seed_everything, set_rng_state
from lafslib.errors import DataError
from lafslib.landmarks.grid import FLIP_5
from lafslib.landmarks.template import ARCFACE_TEMPLATE_112
from lafslib.layers.lora import apply_lora, mark_only_lora_trainable, merge_lora
from lafslib.losses import AdaFaceLoss, CombinedMarginLoss, PartialFC, frabsm_weights
from lafslib.models import create_model, save_export, set_drop_path
from lafslib.models.export import load_export_weights, read_export_info

__all__ = [
    "FaceTransform",
    "FewShotSubset",
    "few_shot_indices",
    "finetune",
    "mixup_batch",
    "mixup_margin_loss",
]


class FaceTransform:
    """Sample dict -> (image (3, S, S) in [-1, 1], label, keypoints (5, 2) in [0, 1]), with a
    random horizontal flip that mirrors the keypoints and swaps their left/right indices."""

    def __init__(self, flip: bool = True) -> None:
        self.flip = flip
        self.flip_index = torch.as_tensor(FLIP_5)

    def __call__(self, sample: dict[str, Any]) -> tuple[torch.Tensor, int, torch.Tensor]:
        img = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
        h, w = img.shape[-2:]
        pts = sample.get("landmarks")
        if pts is None or len(pts) != 5:
            pts = ARCFACE_TEMPLATE_112 * np.array([w / 112.0, h / 112.0])
        kp = torch.as_tensor(np.asarray(pts), dtype=torch.float32) / torch.tensor([w, h])
        x = img.float().div_(127.5).sub_(1.0)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
            kp = kp[self.flip_index]
            kp[:, 0] = 1.0 - kp[:, 0]
        return x, int(sample["label"]), kp


def few_shot_indices(
    labels: list[int], per_identity: int | None, identity_fraction: float, seed: int
) -> tuple[list[int], dict[int, int]]:
    """Indices of a few-shot subset and the map from old to contiguous new labels.

    Keeps ``ceil(identity_fraction * C)`` identities (a seeded random choice) and, of each,
    ``per_identity`` images (a seeded random choice; all when None). Label -1 (a record whose
    label is unreadable) is no identity: those images are left out.
    """
    if not 0 < identity_fraction <= 1:
        raise ValueError(f"data.identity_fraction must be in (0, 1], got {identity_fraction}")
    rng = np.random.default_rng(seed)
    by_id: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        if int(y) >= 0:
            by_id.setdefault(int(y), []).append(i)
    if not by_id:
        raise DataError(f"none of the {len(labels)} training images has an identity label")
    ids = sorted(by_id)
    keep = sorted(rng.permutation(ids)[: math.ceil(identity_fraction * len(ids))].tolist())
    indices = []
    for y in keep:
        members = by_id[y]
        if per_identity is not None:
            members = sorted(rng.permutation(members)[:per_identity].tolist())
        indices += members
    return indices, {y: i for i, y in enumerate(keep)}


class FewShotSubset(Dataset):
    """A subset with labels remapped to ``0 .. C'-1``.

    An unreadable image is replaced by the next readable image of the subset (never by one
    outside it, whose identity may not be in the subset).
    """

    def __init__(self, dataset: Dataset, indices: list[int], label_map: dict[int, int]) -> None:
        self.dataset, self.indices, self.label_map = dataset, indices, label_map
        self.num_classes = len(label_map)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        load = getattr(self.dataset, "load", None)
        if load is None:
            x, y, kp = self.dataset[self.indices[i]]
        else:
            where = getattr(self.dataset, "location", "") or type(self.dataset).__name__
            x, y, kp = first_readable(load, self.indices, i, f"{where} (training subset)")
        return x, self.label_map[y], kp


def _needs_keypoints(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "pretrained_cfg", None), "needs_keypoints", False))


def mixup_batch(
    x: torch.Tensor,
    labels: torch.Tensor,
    keypoints: torch.Tensor,
    alpha: float,
    prob: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix a batch with a permutation of itself (mixup, Zhang et al., ICLR 2018).

    With probability ``prob``: ``lam ~ Beta(alpha, alpha)``, ``x = lam * x + (1 - lam) * x[perm]``
    and keypoints likewise (aligned faces: the mixed points stay close to both); else the batch
    is returned unchanged with ``lam = 1``.

    Args:
        x: images (B, 3, H, W).
        labels: (B,) identities.
        keypoints: (B, K, 2).
        alpha: Beta parameter (<= 0 disables mixup).
        prob: probability of mixing this batch.
        rng: random source (seeded per step, so resuming replays the same mixes).

    Returns:
        (mixed images, mixed keypoints, labels_a, labels_b, lam); the loss is
        ``lam * loss(labels_a) + (1 - lam) * loss(labels_b)``.
    """
    if alpha <= 0 or prob <= 0 or rng.random() >= prob:
        return x, keypoints, labels, labels, 1.0
    lam = float(rng.beta(alpha, alpha))
    perm = torch.as_tensor(rng.permutation(len(x)), device=x.device)
    x = lam * x + (1.0 - lam) * x[perm]
    keypoints = lam * keypoints + (1.0 - lam) * keypoints[perm]
    return x, keypoints, labels, labels[perm], lam


def mixup_margin_loss(
    classifier: nn.Module,
    embeddings: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """Per-sample ``lam * CE(margin on labels_a) + (1 - lam) * CE(margin on labels_b)``.

    The margin is applied to each target in its own term. The margin loss's running statistics
    (AdaFace) are updated once, by the first term.

    Args:
        classifier: a :class:`~lafslib.losses.PartialFC` (margin logits + cross-entropy).
        embeddings: (B, D).
        labels_a: (B,) first targets.
        labels_b: (B,) second targets.
        lam: weight of the first targets.
    """
    ce = classifier(embeddings, labels_a, reduction="none")
    if lam >= 1.0:
        return ce
    margin = classifier.margin_loss
    was_training = margin.training
    margin.train(False)  # no second update of running statistics
    try:
        ce_b = classifier(embeddings, labels_b, reduction="none")
    finally:
        margin.train(was_training)
    return lam * ce + (1.0 - lam) * ce_b


def _apply_adapter(model: nn.Module, cfg: FinetuneConfig) -> None:
    a = cfg.adapter
    mode = a.mode
    if mode in ("lora", "rslora"):
        apply_lora(
            model,
            r=a.lora_rank,
            alpha=a.lora_alpha,
            dropout=a.lora_dropout,
            targets=tuple(a.lora_targets),
            rs=mode == "rslora",
            module_pattern=a.lora_module_pattern,
        )
        mark_only_lora_trainable(model, extra=tuple(a.lora_trainable))
        return
    if mode == "full":
        return
    from_block = a.partial_from_block
    head = getattr(model, "head", None)
    head_params = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    for name, p in model.named_parameters():
        if mode == "linear":
            p.requires_grad_(id(p) in head_params)
        elif mode == "partial":
            block = name.split(".")[1] if name.startswith("blocks.") else None
            frozen = block is not None and int(block) < from_block
            frozen = frozen or name.startswith(("patch_embed", "pos_embed", "cls_token"))
            p.requires_grad_(not frozen)


def landmark_reference(model: nn.Module, cfg: FinetuneConfig) -> nn.Module | None:
    """The frozen copy of a Part fViT's initial landmark CNN for the landmark-consistency loss
    (LAFS finetuning keeps the trainable landmark CNN close to the stage-1 one), or None."""
    if cfg.loss.landmark_consistency <= 0:
        return None
    if not hasattr(model, "landmark_net"):
        raise ConfigError(
            f"loss.landmark_consistency needs a model with a landmark CNN (Part fViT), "
            f"got {cfg.model.name}"
        )
    reference = copy.deepcopy(model.landmark_net).eval()
    return reference.requires_grad_(False)


def landmark_consistency_weight(cfg: FinetuneConfig, epoch: float) -> float:
    """Weight of the landmark-consistency MSE at a (fractional) epoch: ``landmark_consistency``
    decayed linearly to 0 over ``landmark_consistency_epochs`` (constant when that is 0)."""
    w, span = cfg.loss.landmark_consistency, cfg.loss.landmark_consistency_epochs
    return w if span <= 0 else w * max(0.0, 1.0 - epoch / span)


def _margin_loss(cfg: FinetuneConfig) -> nn.Module:
    c = cfg.loss
    if c.name == "arcface":
        return CombinedMarginLoss(c.scale, 1.0, c.m2, 0.0, c.gradient)
    if c.name == "cosface":
        return CombinedMarginLoss(c.scale, 1.0, 0.0, c.m3 or c.margin, c.gradient)
    if c.name == "combined":
        return CombinedMarginLoss(c.scale, c.m1, c.m2, c.m3, c.gradient)
    return AdaFaceLoss(c.scale, c.margin, c.h, c.t_alpha, 0.7 if c.name == "frabsm" else 1.0)


def finetune(cfg: FinetuneConfig, resume: str | None = None, overwrite: bool = False) -> Path:
    """Run supervised adaptation; returns the run directory (its ``export/`` holds the model).

    Args:
        cfg: the resolved recipe.
        resume: ``"auto"`` (latest checkpoint of the run, if any), a checkpoint path, or None
            (then ``run.output_dir`` must be empty or new).
        overwrite: move a previous run in ``run.output_dir`` aside first.
    """
    info = init_distributed(cfg.run.device)
    try:
        return _finetune(cfg, info, resume, overwrite)
    finally:
        cleanup()


def _finetune(cfg: FinetuneConfig, info: DistInfo, resume: str | None, overwrite: bool) -> Path:
    device = info.device
    if cfg.run.precision == "fp16" and device.type != "cuda":
        raise ValueError("run.precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if not 0 <= cfg.optim.mixup_prob <= 1:
        raise ValueError(f"optim.mixup_prob must be in [0, 1], got {cfg.optim.mixup_prob}")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)
    if cfg.init:
        init_info = read_export_info(cfg.init)
        cfg.model.name, cfg.model.kwargs = init_info["name"], dict(init_info.get("kwargs", {}))
    run_dir = prepare_run_dir(cfg, info.world_size, info.is_main, resume, overwrite)
    logger = RunLogger(run_dir, info.is_main, cfg.run.tensorboard)
    d = cfg.data
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
    dataset = SeededViews(FewShotSubset(base, indices, label_map), cfg.run.seed)
    num_classes = len(label_map)
    sampler = ResumableSampler(len(dataset), d.batch_size, info.rank, info.world_size, cfg.run.seed)
    loader = DataLoader(
        dataset,
        batch_size=d.batch_size,
        sampler=sampler,
        num_workers=d.num_workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.run.seed),
    )

    model = create_model(cfg.model.name, **cfg.model.kwargs)
    if cfg.init:
        load_export_weights(model, cfg.init)
    o = cfg.optim
    if o.drop_path is not None and not set_drop_path(model, o.drop_path) and o.drop_path > 0:
        raise ConfigError(f"optim.drop_path: {cfg.model.name} has no blocks with drop path")
    consistency = landmark_reference(model, cfg)  # the initial landmark CNN, frozen
    _apply_adapter(model, cfg)
    model = model.to(device)
    if consistency is not None:
        consistency = consistency.to(device)
    dim = getattr(model, "embed_dim", None) or model.pretrained_cfg.embed_dim
    classifier = PartialFC(_margin_loss(cfg), dim, num_classes, cfg.loss.partial_fc_rate).to(device)
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    groups = param_groups_layer_decay(model, o.weight_decay, cfg.adapter.layer_decay, skip)
    head_scale = (o.head_lr / o.lr) if o.head_lr else 1.0
    head_wd = o.weight_decay if o.head_weight_decay is None else o.head_weight_decay
    groups.append(  # the margin head: its own group, LR and weight decay
        {
            "params": [classifier.weight],
            "names": ["classifier.weight"],
            "weight_decay": head_wd,
            "lr_scale": head_scale,
        }
    )
    if o.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
    else:
        optimizer = torch.optim.AdamW(groups, lr=o.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.run.precision == "fp16")
    net = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if info.distributed
        else model
    )
    steps_per_epoch = max(sampler.batches_per_epoch // o.accumulate, 1)
    total = o.epochs * steps_per_epoch
    last_step = min(total, cfg.run.max_steps) if cfg.run.max_steps else total
    warmup = int(o.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        if o.schedule == "step":
            epoch = step / steps_per_epoch
            base_lr = o.lr * o.gamma ** sum(epoch >= m for m in o.milestones)
            return base_lr * min(1.0, (step + 1) / max(warmup, 1)) if warmup else base_lr
        return warmup_cosine(step, total, warmup, o.lr, o.min_lr)

    use_kp = _needs_keypoints(model)
    step = 0
    ckpt_dir = run_dir / "checkpoints"
    keys = ("model", "classifier", "optimizer", "scaler", "loss", "rng")
    found = resume_checkpoint(ckpt_dir, resume, "finetune", keys) if resume else None
    if found is not None:
        path, state = found
        with restoring(path):
            model.load_state_dict({k[len("backbone.") :]: v for k, v in state["model"].items()})
            classifier.load_full_weight(state["classifier"].to(device))
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            classifier.margin_loss.load_state_dict(state["loss"])
            step = int(state["step"])
            set_rng_state(state["rng"])
        logger.print(f"resumed from {path} at step {step}")
    if found is None and cfg.adapter.head_init == "whiten":
        fitted = whiten_head(
            model, dataset, d.batch_size, device, use_kp, cfg.adapter.whiten_shrink,
            cfg.run.seed, info.rank, info.world_size, d.num_workers,
        )  # fmt: skip
        logger.print(f"embedding head whitened on {fitted} images")
    if found is None and cfg.loss.classifier_init == "imprint":
        centres, counts = imprint_centres(
            model, dataset, num_classes, dim, d.batch_size, device, use_kp,
            info.rank, info.world_size, d.num_workers,
        )  # fmt: skip
        known = counts > 0
        full = classifier.full_weight()
        # directions only: each row keeps its initial norm (the logits use directions; the
        # norm sets how far an optimiser step turns the centre)
        full[known] = centres[known].to(full.dtype) * full[known].norm(dim=1, keepdim=True)
        classifier.load_full_weight(full)
        logger.print(f"imprinted {int(known.sum())} of {num_classes} class centres")
    logger.resume_at(step)
    write_run_files(run_dir, cfg, info.world_size, info.is_main)

    def save(at: int) -> None:
        centres = classifier.full_weight()  # collective: every rank takes part
        if info.is_main:
            save_checkpoint(
                ckpt_dir / f"step_{at:08d}.pt",
                {
                    "model": {f"backbone.{k}": v for k, v in model.state_dict().items()},
                    "classifier": centres,
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "loss": classifier.margin_loss.state_dict(),
                    "step": at,
                    "rng": rng_state(),
                    "config": config_to_dict(cfg),
                },
            )
            prune_checkpoints(ckpt_dir, cfg.run.keep_last, upto=at)

    logger.print(
        f"finetuning {cfg.model.name} ({cfg.adapter.mode}, {cfg.loss.name}) from "
        f"{cfg.init or 'scratch'} on {len(dataset)} "
        f"images of {num_classes} identities: {last_step} steps, world size {info.world_size}, "
        f"device {device}, run dir {run_dir}"
    )
    net.train()
    t0, seen, micro = time.time(), 0, 0
    while step < last_step:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch, (step % steps_per_epoch) * o.accumulate)
        dataset.epoch = epoch
        for x, y, kp in loader:
            lr = lr_at(step)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            x, y, kp = x.to(device), y.to(device), kp.to(device)
            mix_rng = np.random.default_rng([cfg.run.seed, info.rank, step, micro % o.accumulate])
            x, kp, y, y_b, lam = mixup_batch(x, y, kp, o.mixup_alpha, o.mixup_prob, mix_rng)
            with autocast_context(device, cfg.run.precision):
                emb = net(x, kp) if use_kp else net(x)
            ce = mixup_margin_loss(classifier, emb.float(), y, y_b, lam)
            if cfg.loss.name == "frabsm" and cfg.loss.mining_alpha > 0:
                ce = ce * frabsm_weights(
                    ce, cfg.loss.mining_alpha, cfg.loss.mining_p0, cfg.loss.mining_mode
                )
            loss = ce.mean()
            if consistency is not None:
                weight = landmark_consistency_weight(cfg, step / steps_per_epoch)
                if weight > 0:
                    with torch.no_grad():
                        target = consistency(x)
                    pred = model.predicted_landmarks.float()
                    loss = loss + weight * torch.nn.functional.mse_loss(pred, target.float())
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; stopping")
            scaler.scale(loss / o.accumulate).backward()
            micro += 1
            seen += len(x) * info.world_size
            if micro % o.accumulate:
                continue
            scaler.unscale_(optimizer)
            if o.clip_grad:
                torch.nn.utils.clip_grad_norm_(
                    [*model.parameters(), classifier.weight], o.clip_grad
                )
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % cfg.run.log_every == 0 or step == last_step:
                elapsed = time.time() - t0
                metrics = {
                    "loss": float(all_reduce_mean(loss.detach())),
                    "lr": lr,
                    "img_per_s": seen / max(elapsed, 1e-9),
                    "epoch": epoch,
                }
                logger.log(step, metrics)
                logger.line(step, last_step, metrics["img_per_s"], elapsed,
                            {k: metrics[k] for k in ("loss", "lr")})  # fmt: skip
            if (
                cfg.eval.every
                and cfg.eval.bins
                and (step % cfg.eval.every == 0 or step == last_step)
            ):
                _periodic_eval(cfg, model, device, step, logger)
                net.train()
            if step % cfg.run.checkpoint_every == 0 or step == last_step:
                save(step)
            if step >= last_step or step % steps_per_epoch == 0:
                break
    if info.is_main:
        export = model
        if cfg.adapter.mode in ("lora", "rslora"):  # a plain backbone: W + scale * B @ A
            export = merge_lora(copy.deepcopy(model))
        save_export(export.eval(), run_dir / "export", step=step)
    logger.close()
    return run_dir


def _periodic_eval(
    cfg: FinetuneConfig, model: nn.Module, device: torch.device, step: int, logger: RunLogger
) -> None:
    from lafslib.evaluation.verification import evaluate_bin

    if not logger.is_main:
        return
    for b in cfg.eval.bins:
        r = evaluate_bin(model, b, cfg.eval.batch_size, cfg.eval.flip, device)
        name = Path(b).stem
        logger.log(
            step,
            {"accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"]},
            prefix=f"eval/{name}",
        )
        logger.print(
            f"eval {name} @ step {step}: accuracy {100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}"
        )
