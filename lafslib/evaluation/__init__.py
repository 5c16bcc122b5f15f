"""Evaluation: embeddings, 1:1 verification (10-fold .bin protocol, ROC, TAR@FAR), IJB-B/C,
identification (CMC, few-shot, open-set DIR@FPIR), reports."""

from lafslib.evaluation.embed import embed_images, flip_keypoints
from lafslib.evaluation.identification import (
    cmc,
    few_shot_identification,
    few_shot_split,
    fpir_threshold,
    open_set_identification,
)
from lafslib.evaluation.ijb import (
    IJB_MODES,
    IJBEmbeddings,
    embed_ijb,
    evaluate_ijb,
    ijb_all_modes,
    ijb_verification,
    pool_templates,
    score_template_pairs,
)
from lafslib.evaluation.runtime import load_embedding_model
from lafslib.evaluation.verification import (
    evaluate_bin,
    pair_distances,
    roc_curve,
    tar_at_far,
    verification_10fold,
)

__all__ = [
    "IJB_MODES",
    "IJBEmbeddings",
    "cmc",
    "embed_ijb",
    "evaluate_ijb",
    "fpir_threshold",
    "ijb_all_modes",
    "ijb_verification",
    "open_set_identification",
    "pool_templates",
    "score_template_pairs",
    "few_shot_identification",
    "few_shot_split",
    "embed_images",
    "evaluate_bin",
    "flip_keypoints",
    "load_embedding_model",
    "pair_distances",
    "roc_curve",
    "tar_at_far",
    "verification_10fold",
]
