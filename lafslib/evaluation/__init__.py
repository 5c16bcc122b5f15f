"""Evaluation: embeddings, 1:1 verification (10-fold .bin protocol, ROC, TAR@FAR), reports."""

from lafslib.evaluation.embed import embed_images, flip_keypoints
from lafslib.evaluation.identification import cmc, few_shot_identification, few_shot_split
from lafslib.evaluation.verification import (
    evaluate_bin,
    pair_distances,
    roc_curve,
    tar_at_far,
    verification_10fold,
)

__all__ = [
    "cmc",
    "few_shot_identification",
    "few_shot_split",
    "embed_images",
    "evaluate_bin",
    "flip_keypoints",
    "pair_distances",
    "roc_curve",
    "tar_at_far",
    "verification_10fold",
]
