"""DINO / LAFS self-supervised pretraining loop (student/teacher over multi-view batches).

The student (backbone + DINO head) sees every view; the teacher, an EMA of the student, sees
the global views only. Views of equal token count go through the backbone in one pass. All
schedules are functions of the global optimizer step (plus, with ``run.schedule_by_budget``,
an offset that keeps them abreast of the CPU budget), so resuming restores only the step, the
offset, the CPU minutes spent, the optimizer, the centre, the neighbour queue and the RNG states.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset

from lafslib.config import ConfigError, PretrainConfig, ViewsConfig, config_to_dict
from lafslib.data import open_dataset
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
    cleanup,
    init_distributed,
)
from lafslib.engine.ema import update_ema
from lafslib.engine.logging import RunLogger
from lafslib.engine.rundir import prepare_run_dir, write_run_files
from lafslib.engine.sampler import ResumableSampler
from lafslib.engine.schedules import cosine_schedule, teacher_temperature, warmup_cosine
from lafslib.engine.state import autocast_context, rng_state, seed_everything, set_rng_state
from lafslib.losses import DINOLoss, NeighbourQueue, koleo_loss
from lafslib.models import DINOHead, create_model, set_drop_path
from lafslib.models.ssl_features import SSLFeatures
from lafslib.transforms import MultiCropViews, collate_views, group_views

__all__ = [
    "SSLNetwork",
    "SeededViews",
    "build_views",
    "clip_gradients",
    "freeze_parameters",
    "param_groups",
    "pretrain",
]


class SeededViews(Dataset):
    """Seed the view RNG from (seed, epoch, index), so a sample's views do not depend on the
    world size, the rank, the number of workers or the resume point."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            return self.dataset[index]


class SSLNetwork(nn.Module):
    """Backbone + DINO head applied to a list of views, one backbone pass per token count.

    With ``mosaic_views`` (LAFS views: patches already sampled at the landmarks), a backbone
    that samples its own patches (Part fViT) runs its transformer on the mosaics; on whole-image
    views (multi-crop) it predicts its landmarks itself.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, mosaic_views: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.mosaic_views = mosaic_views

    def forward(
        self, views: list[dict[str, torch.Tensor]], return_features: bool = False
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Head outputs, one (B, out_dim) tensor per view, in view order; with
        ``return_features`` also the backbone's SSL features, one (B, ssl_dim) per view."""
        outputs: list[torch.Tensor] = [torch.empty(0)] * len(views)
        features: list[torch.Tensor] = [torch.empty(0)] * len(views)
        samples_patches = hasattr(self.backbone, "landmark_net")
        encoder = self.backbone.vit if samples_patches and self.mosaic_views else self.backbone
        for indices, merged in group_views(views):
            centers = (
                None if samples_patches and not self.mosaic_views else merged.get("token_centers")
            )
            feats = encoder.forward_ssl(merged["image"], merged.get("keypoints"), centers)
            for i, chunk, feat in zip(
                indices, self.head(feats).chunk(len(indices)), feats.chunk(len(indices))
            ):
                outputs[i], features[i] = chunk, feat
        return (outputs, features) if return_features else outputs


def net_landmarks(cfg: PretrainConfig, run_dir: Path, info: DistInfo, logger: RunLogger) -> Path:
    """``views.landmark_source: net``: the landmarks of a learned landmark CNN (the one of an
    exported Part fViT, e.g. LAFS stage 1) for every training image, predicted once on the
    aligned face into ``RUN/landmarks_net.npz`` and then moved with each view's crop and flip
    like any sidecar landmarks."""
    from lafslib.config import ConfigError
    from lafslib.data.annotate import annotate_dataset
    from lafslib.engine.distributed import barrier
    from lafslib.landmarks.detectors import LearnedLandmarkDetector

    v = cfg.views
    if not v.landmark_net:
        raise ConfigError(
            "views.landmark_source=net needs views.landmark_net: the export of a Part fViT "
            "whose landmark CNN predicts the landmarks (recipes/finetune/partfvit_stage1_*.yaml)"
        )
    out = run_dir / "landmarks_net.npz"
    if info.is_main and not out.is_file():
        detector = LearnedLandmarkDetector(v.landmark_net, device=str(info.device))
        if detector.num_points != v.num_landmarks:
            raise ConfigError(
                f"views.num_landmarks is {v.num_landmarks} but the landmark CNN of "
                f"{v.landmark_net} predicts {detector.num_points} landmarks"
            )
        logger.print(f"predicting {detector.num_points} landmarks per image with {v.landmark_net}")
        annotate_dataset(cfg.data.train, out, detector, points="native")
    barrier()
    return out


def build_views(v: ViewsConfig) -> Any:
    """The view generator described by a recipe's ``views`` section."""
    if v.kind == "multicrop":
        return MultiCropViews(
            global_views=v.global_views,
            local_views=v.local_views,
            image_size=v.image_size,
            local_size=v.local_size,
            global_scale=v.global_scale,
            local_scale=v.local_scale,
            patch_size=v.patch_size,
            colour_strength=v.colour_strength,
            relight_strength=v.relight_strength,
        )
    from lafslib.transforms import LAFSViews

    return LAFSViews(
        global_views=v.global_views,
        local_views=v.local_views,
        num_landmarks=v.num_landmarks,
        local_landmarks=v.local_landmarks,
        patch_size=v.patch_size,
        sigma=v.sigma,
        image_size=v.image_size,
        global_scale=v.global_scale,
        landmark_source="sidecar" if v.landmark_source == "net" else v.landmark_source,
        grid_method=v.landmark_grid,
        colour_strength=v.colour_strength,
        local_layout=v.local_layout,
        relight_strength=v.relight_strength,
    )


def freeze_parameters(backbone: nn.Module, prefixes: list[str]) -> int:
    """Stop training the backbone parameters named by ``prefixes`` (a name, or a prefix that
    ends at a module boundary: ``patch_embed`` freezes ``patch_embed.weight`` and ``.bias``);
    the teacher, their EMA, keeps them too. Returns how many numbers are frozen.

    Raises:
        ConfigError: a prefix names no parameter (``optim.frozen`` and the value).
    """
    names = dict(backbone.named_parameters())
    total = 0
    for prefix in prefixes:
        matched = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not matched:
            modules = sorted({n.split(".")[0] for n in names})
            raise ConfigError(
                f"optim.frozen: {prefix!r} names no parameter of {type(backbone).__name__} "
                f"(its top-level modules: {', '.join(modules)})"
            )
        for n in matched:
            if names[n].requires_grad:
                names[n].requires_grad_(False)
                total += names[n].numel()
    return total


def param_groups(model: nn.Module, skip: set[str] | None = None) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices, none on biases, norms and ``skip`` names."""
    skip = skip or set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = name.removeprefix("module.").removeprefix("backbone.")
        if p.ndim <= 1 or name.endswith(".bias") or plain in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "apply_wd": True},
        {"params": no_decay, "apply_wd": False, "weight_decay": 0.0},
    ]


def clip_gradients(model: nn.Module, clip: float) -> None:
    """DINO's per-parameter clipping: scale each gradient whose norm exceeds ``clip``."""
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.detach().norm(2)
            p.grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))


def _collapse_stats(teacher_out: list[torch.Tensor], center: torch.Tensor, temp: float) -> dict:
    """Teacher entropy and KL(teacher distribution || softmax of the centre)."""
    with torch.no_grad():
        logits = (torch.cat(teacher_out).float() - center) / temp
        p = logits.softmax(-1)
        log_p = logits.log_softmax(-1)
        entropy = -(p * log_p).sum(-1).mean()
        mean_p = p.mean(0)
        log_c = (center.float() / temp).log_softmax(-1)[0]
        kl = (mean_p * (mean_p.clamp_min(1e-12).log() - log_c)).sum()
    return {"teacher_entropy": float(entropy), "kl_to_center": float(kl)}


def _monitor(
    cfg: PretrainConfig, backbone: nn.Module, device: torch.device, step: int, logger: RunLogger
) -> None:
    """Verification accuracy of the teacher's SSL features on the recipe's ``.bin`` sets, and
    with ``eval.whiten`` also of the features PCA-whitened on that folder's faces."""
    from lafslib.data.verification import load_bin
    from lafslib.evaluation.embed import embed_images
    from lafslib.evaluation.verification import evaluate_embeddings
    from lafslib.evaluation.whitening import fit_whitening

    if not logger.is_main:
        return
    was_training = backbone.training
    e = cfg.eval
    model = SSLFeatures(backbone).eval()
    white = None
    if e.whiten:
        white, _ = fit_whitening(
            model, e.whiten, e.whiten_shrink, e.batch_size, device, e.whiten_images, cfg.run.seed
        )
    for b in e.bins:
        images, issame = load_bin(b)
        emb = embed_images(model, images, e.batch_size, e.flip, device)
        r = evaluate_embeddings(emb, issame)
        metrics = {"accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"]}
        shown = f"accuracy {100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}"
        if white is not None:  # summed over the flip: the bias counts once per view
            views = 2 if e.flip else 1
            w = evaluate_embeddings(
                emb @ white.weight.cpu().numpy().T + views * white.bias.cpu().numpy(), issame
            )
            metrics.update(whitened_accuracy=w["accuracy"], whitened_accuracy_std=w["accuracy_std"])
            shown += f", whitened {100 * w['accuracy']:.2f} +- {100 * w['accuracy_std']:.2f}"
        name = Path(b).stem
        logger.log(step, metrics, prefix=f"eval/{name}")
        logger.print(f"eval {name} @ step {step}: {shown}")
    backbone.train(was_training)


def _check_whitening_folder(cfg: PretrainConfig, feature_dim: int) -> None:
    """``eval.whiten`` exists and holds enough faces to whiten ``feature_dim`` features: a
    recipe that would fail at its first evaluation fails before the first step."""
    from lafslib.errors import InputNotFoundError
    from lafslib.io import list_images

    e = cfg.eval
    if not e.whiten or not (e.every and e.bins):
        return
    if not Path(e.whiten).is_dir():
        raise InputNotFoundError(f"eval.whiten: folder not found: {e.whiten}")
    n = min(len(list_images(e.whiten)), e.whiten_images)
    if e.whiten_shrink == 0 and n <= feature_dim:
        raise ConfigError(
            f"eval.whiten: {n} faces cannot whiten the {feature_dim}-dimensional SSL feature "
            f"without shrinkage: raise eval.whiten_images, use a larger folder or set "
            f"eval.whiten_shrink > 0"
        )


def pretrain(cfg: PretrainConfig, resume: str | None = None, overwrite: bool = False) -> Path:
    """Run self-supervised pretraining; returns the run directory.

    Args:
        cfg: the resolved recipe.
        resume: ``"auto"`` (latest checkpoint of the run, if any), a checkpoint path, or None
            (then ``run.output_dir`` must be empty or new).
        overwrite: move a previous run in ``run.output_dir`` aside first.
    """
    info: DistInfo = init_distributed(cfg.run.device)
    try:
        return _pretrain(cfg, info, resume, overwrite)
    finally:
        cleanup()


def _pretrain(cfg: PretrainConfig, info: DistInfo, resume: str | None, overwrite: bool) -> Path:
    device = info.device
    if cfg.run.precision == "fp16" and device.type != "cuda":
        raise ValueError("run.precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)  # identical initial weights on every rank
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    run_dir = prepare_run_dir(cfg, info.world_size, info.is_main, resume, overwrite)
    logger = RunLogger(run_dir, info.is_main, cfg.run.tensorboard)

    views = build_views(cfg.views)
    d = cfg.data
    landmarks = d.landmarks if d.landmarks is not None else "auto"
    if cfg.views.kind == "lafs" and cfg.views.landmark_source == "net":
        landmarks = net_landmarks(cfg, run_dir, info, logger)
    dataset = open_dataset(
        d.train,
        labelled=False,
        landmarks=landmarks,
        transform=views,
        synthetic_identities=d.synthetic_identities,
        synthetic_per_identity=d.synthetic_per_identity,
        synthetic_size=d.synthetic_size,
        seed=cfg.run.seed,
    )
    if d.max_images is not None:
        dataset = Subset(dataset, range(min(d.max_images, len(dataset))))
    dataset = SeededViews(dataset, cfg.run.seed)
    sampler = ResumableSampler(
        len(dataset), d.batch_size, info.rank, info.world_size, seed=cfg.run.seed
    )
    loader = DataLoader(
        dataset,
        batch_size=d.batch_size,
        sampler=sampler,
        num_workers=d.num_workers,
        collate_fn=collate_views,
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.run.seed),
    )

    o = cfg.optim
    backbone = create_model(cfg.model.name, **cfg.model.kwargs)
    _check_whitening_folder(cfg, backbone.ssl_dim)
    h = cfg.head
    head = DINOHead(
        backbone.ssl_dim,
        h.out_dim,
        h.hidden_dim,
        h.bottleneck_dim,
        h.num_layers,
        h.use_bn,
        h.norm_last_layer,
    )
    if cfg.init:
        from lafslib.models.export import load_export_weights

        load_export_weights(backbone, cfg.init)
        logger.print(f"student and teacher start from {cfg.init}")
    frozen = freeze_parameters(backbone, o.frozen)
    if frozen:
        logger.print(f"frozen: {frozen} backbone parameters ({', '.join(o.frozen)})")
    v = cfg.views
    grid_locals = v.kind == "lafs" and v.local_layout == "grid"
    if getattr(backbone, "flatten_pool", None) is not None and v.local_views and not grid_locals:
        raise ConfigError(
            "model.kwargs.ssl_pool: flatten needs the full token grid in every view, but "
            f"views.local_views is {v.local_views} with "
            + ("multicrop views" if v.kind == "multicrop" else "views.local_layout: mosaic")
            + ": set views.local_views: 0, or views.kind: lafs with views.local_layout: grid"
        )
    if o.drop_path is not None and not set_drop_path(backbone, o.drop_path) and o.drop_path > 0:
        raise ConfigError(f"optim.drop_path: {cfg.model.name} has no blocks with drop path")
    student = SSLNetwork(backbone, head, mosaic_views=cfg.views.kind == "lafs").to(device)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    loss_fn = DINOLoss(
        h.out_dim, cfg.loss.student_temp, cfg.loss.center_momentum, cfg.loss.centering
    ).to(device)
    lc = cfg.loss
    queue = (
        NeighbourQueue(lc.neighbour_queue, backbone.ssl_dim, h.out_dim, lc.neighbour_k).to(device)
        if lc.neighbour_weight > 0
        else None
    )
    skip = set(getattr(backbone, "no_weight_decay", lambda: set())())
    optimizer = torch.optim.AdamW(param_groups(student, skip), lr=0.0)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.run.precision == "fp16")
    # the backbone's embedding head is not used by forward_ssl: let DDP skip it
    net = (
        DistributedDataParallel(
            student,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
        if info.distributed
        else student
    )

    steps_per_epoch = max(sampler.batches_per_epoch // o.accumulate, 1)
    total_steps = o.epochs * steps_per_epoch
    last_step = min(total_steps, cfg.run.max_steps) if cfg.run.max_steps else total_steps
    global_batch = d.batch_size * info.world_size * o.accumulate
    peak_lr = o.lr * global_batch / 256.0
    warmup = o.warmup_epochs * steps_per_epoch
    temp_per_step = cfg.loss.teacher_temp_schedule == "step"
    temp_warmup = cfg.loss.warmup_teacher_temp_epochs * (steps_per_epoch if temp_per_step else 1)

    step = 0
    # the schedules read step + offset; the offset grows when the CPU budget runs ahead of steps
    schedule_offset = 0
    cpu_carried = 0.0
    ckpt_dir = run_dir / "checkpoints"
    keys = ("student", "teacher", "optimizer", "scaler", "loss", "rng") + (
        ("neighbours",) if queue is not None else ()
    )
    found = resume_checkpoint(ckpt_dir, resume, "pretrain", keys) if resume else None
    if found is not None:
        path, state = found
        with restoring(path):
            student.load_state_dict(state["student"])
            teacher.load_state_dict(state["teacher"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            loss_fn.load_state_dict(state["loss"])
            if queue is not None:
                queue.load_state_dict(state["neighbours"])
            step = int(state["step"])
            schedule_offset = int(state.get("schedule_offset", 0))
            cpu_carried = float(state.get("cpu_minutes", 0.0))
            set_rng_state(state["rng"])
        logger.print(f"resumed from {path} at step {step}")
    logger.resume_at(step)
    write_run_files(run_dir, cfg, info.world_size, info.is_main)

    def save(at_step: int) -> None:
        if not info.is_main:
            return
        state = {
            "student": student.state_dict(),
            "teacher": teacher.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "loss": loss_fn.state_dict(),
            "step": at_step,
            "schedule_offset": schedule_offset,
            "cpu_minutes": clock.minutes(),
            "rng": rng_state(),
            "config": config_to_dict(cfg),
        }
        if queue is not None:
            state["neighbours"] = queue.state_dict()
        save_checkpoint(ckpt_dir / f"step_{at_step:08d}.pt", state)
        prune_checkpoints(ckpt_dir, cfg.run.keep_last, upto=at_step)

    if info.is_main and step == 0 and cfg.run.tensorboard:
        from lafslib.data.base import first_readable_sample
        from lafslib.viz import views_grid

        base = dataset.dataset.dataset if isinstance(dataset.dataset, Subset) else dataset.dataset
        sample = first_readable_sample(base)
        if sample is not None:
            logger.image("views", views_grid(sample, views(sample)), 0)
    logger.print(
        f"pretraining {cfg.model.name} on {len(dataset)} images: {last_step} steps "
        f"({steps_per_epoch}/epoch), global batch {global_batch}, world size {info.world_size}, "
        f"device {device}, run dir {run_dir}"
    )
    student.train()
    clock = CPUClock(cpu_carried)

    def budget_used(cpu_minutes: float) -> float:
        """Share of ``run.max_cpu_minutes`` used, the largest over ranks (so every rank stops
        and schedules alike); 0 without a budget."""
        if cfg.run.max_cpu_minutes is None:
            return 0.0
        used = torch.tensor([cpu_minutes / cfg.run.max_cpu_minutes], dtype=torch.float64)
        return float(all_reduce_max(used.to(device)))

    t_start = time.time()
    images_seen = 0
    micro = 0
    while step < last_step:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch, (step % steps_per_epoch) * o.accumulate)
        dataset.epoch = epoch
        for batch in loader:
            at = step + schedule_offset
            lr = warmup_cosine(at, total_steps, warmup, peak_lr, o.min_lr)
            wd = cosine_schedule(at, total_steps, o.weight_decay, o.weight_decay_end)
            momentum = cosine_schedule(at, total_steps, o.momentum_teacher, 1.0)
            t_temp = teacher_temperature(
                at if temp_per_step else at // steps_per_epoch,
                temp_warmup,
                cfg.loss.warmup_teacher_temp,
                cfg.loss.teacher_temp,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
                if group["apply_wd"]:
                    group["weight_decay"] = wd
            batch = [
                {
                    k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                    for k, v in view.items()
                }
                for view in batch
            ]
            global_views = [v for v in batch if v["is_global"]]
            with autocast_context(device, cfg.run.precision):
                with torch.no_grad():
                    teacher_out, teacher_feats = teacher(global_views, return_features=True)
                student_out, student_feats = net(batch, return_features=True)
                loss = loss_fn(student_out, teacher_out, t_temp)
                if queue is not None:
                    if queue.ready:
                        neighbour_out = [queue.targets(f) for f in teacher_feats]
                        neighbour_loss = loss_fn(
                            student_out, neighbour_out, t_temp, update_center=False
                        )
                        loss = torch.lerp(loss, neighbour_loss, lc.neighbour_weight)
                    queue.push(teacher_feats[0], teacher_out[0])
                dino_loss = loss
                if cfg.loss.koleo_weight:
                    koleo = sum(
                        koleo_loss(f) for f, v in zip(student_feats, batch) if v["is_global"]
                    )
                    loss = loss + cfg.loss.koleo_weight * koleo
            scaler.scale(loss / o.accumulate).backward()
            micro += 1
            images_seen += len(batch[0]["image"]) * info.world_size
            if micro % o.accumulate:
                continue
            scaler.unscale_(optimizer)
            if o.clip_grad > 0:
                clip_gradients(student, o.clip_grad)
            if epoch < o.freeze_last_layer_epochs:
                for p in student.head.last_layer.parameters():
                    p.grad = None
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            update_ema(teacher, student, momentum)
            step += 1
            if step % cfg.run.log_every == 0 or step == last_step:
                cpu_minutes = clock.minutes()
                used = budget_used(cpu_minutes)
                if cfg.run.schedule_by_budget:
                    schedule_offset = max(schedule_offset, math.ceil(used * total_steps) - step)
                if used >= 1.0 or step + schedule_offset >= total_steps:
                    last_step = step
                elapsed = time.time() - t_start
                # the loss is read (a host sync on GPU) only here and before checkpoints
                loss_value = float(all_reduce_mean(loss.detach()))
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"loss is {loss_value} at step {step}; stopping")
                metrics = {
                    "loss": loss_value,
                    "dino_loss": float(all_reduce_mean(dino_loss.detach())),
                    **(
                        {"koleo": float(all_reduce_mean(koleo.detach()))}
                        if cfg.loss.koleo_weight
                        else {}
                    ),
                    "cpu_minutes": cpu_minutes,
                    "schedule_step": at,
                    "lr": lr,
                    "wd": wd,
                    "momentum": momentum,
                    "teacher_temp": t_temp,
                    "img_per_s": images_seen / max(elapsed, 1e-9),
                    "epoch": epoch,
                    **_collapse_stats(teacher_out, loss_fn.center, t_temp),
                }
                logger.log(step, metrics)
                logger.line(
                    step,
                    last_step,
                    metrics["img_per_s"],
                    elapsed,
                    {k: metrics[k] for k in ("loss", "lr", "wd", "momentum", "teacher_temp")},
                )
            if (
                cfg.eval.every
                and cfg.eval.bins
                and (step % cfg.eval.every == 0 or step == last_step)
            ):
                with clock.exclude():
                    _monitor(cfg, teacher.backbone, device, step, logger)
            if step % cfg.run.checkpoint_every == 0 or step == last_step:
                if not math.isfinite(float(loss.detach())):
                    raise FloatingPointError(f"loss is {float(loss)} at step {step}; stopping")
                save(step)
            if step >= last_step or step % steps_per_epoch == 0:
                break
    logger.close()
    return run_dir
