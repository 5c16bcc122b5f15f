"""Pictures: view grids and landmark overlays (PNG and TensorBoard)."""

from lafslib.viz.landmarks import draw_landmarks, landmarks_grid, log_landmarks
from lafslib.viz.views import to_uint8, views_grid

__all__ = [
    "draw_landmarks",
    "landmarks_grid",
    "log_landmarks",
    "to_uint8",
    "views_grid",
]
