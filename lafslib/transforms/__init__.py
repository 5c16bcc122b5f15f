"""Landmark-aware and random multi-crop views."""

from lafslib.transforms.landmark import (
    LandmarkGeometric,
    flip_landmarks,
    perturb_landmarks,
    shuffle_landmarks,
    subset_landmarks,
)
from lafslib.transforms.multicrop import MultiCropViews
from lafslib.transforms.view_batch import group_views
from lafslib.transforms.views import LAFSViews

__all__ = [
    "LAFSViews",
    "LandmarkGeometric",
    "MultiCropViews",
    "flip_landmarks",
    "group_views",
    "perturb_landmarks",
    "shuffle_landmarks",
    "subset_landmarks",
]
