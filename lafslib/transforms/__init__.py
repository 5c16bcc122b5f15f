"""Landmark-aware and random multi-crop views."""

from lafslib.transforms.views import LAFSViews, MultiCropViews, collate_views, group_views

__all__ = ["LAFSViews", "MultiCropViews", "collate_views", "group_views"]
