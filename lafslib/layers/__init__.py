"""Layers importable without the training stack (torch + einops only)."""

from lafslib.layers.patch_sampling import grid_centers, patches_to_mosaic, sample_patches

__all__ = ["grid_centers", "patches_to_mosaic", "sample_patches"]
