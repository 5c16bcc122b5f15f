"""Pictures: view grids (PNG and TensorBoard)."""

from lafslib.viz.views import to_uint8, views_grid

__all__ = ["to_uint8", "views_grid"]
