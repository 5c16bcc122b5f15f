"""Landmark-aware and random multi-crop views."""

from lafslib.transforms.landmark import (
    LandmarkGeometric,
    flip_landmarks,
    perturb_landmarks,
    shuffle_landmarks,
    subset_landmarks,
)
from lafslib.transforms.view_batch import collate_views, group_views, move_views
from lafslib.transforms.views import LAFSViews, MultiCropViews

__all__ = [
    "LAFSViews",
    "LandmarkGeometric",
    "MultiCropViews",
    "collate_views",
    "flip_landmarks",
    "group_views",
    "move_views",
    "perturb_landmarks",
    "shuffle_landmarks",
    "subset_landmarks",
]
