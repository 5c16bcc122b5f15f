"""What pretraining watches: collapse statistics of the teacher and the verification accuracy
of its SSL features (raw and PCA-whitened) on the recipe's ``.bin`` sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from lafslib.config import PretrainConfig
from lafslib.engine.logging import RunLogger
from lafslib.models.ssl_features import SSLFeatures

__all__ = ["collapse_stats", "log_views_picture", "monitor_teacher"]


def collapse_stats(teacher_out: list[torch.Tensor], center: torch.Tensor, temp: float) -> dict:
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


def monitor_teacher(
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


def log_views_picture(dataset: Any, views: Any, logger: RunLogger) -> None:
    """TensorBoard ``views``: the first readable face of ``dataset`` (a Subset of it allowed)
    and its views, made by ``views`` as the training step makes them."""
    from lafslib.data.base import first_readable_sample
    from lafslib.viz import views_grid

    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    sample = first_readable_sample(base)
    if sample is not None:
        logger.image("views", views_grid(sample, views(sample)), 0)
