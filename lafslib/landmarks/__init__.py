"""Landmarks: templates, detectors, alignment and sidecar files."""

from lafslib.landmarks.detectors import DETECTORS, Face, FaceDetector, create_detector
from lafslib.landmarks.store import LandmarkFileError, LandmarkTable, load_landmarks, save_landmarks
from lafslib.landmarks.template import (
    ARCFACE_TEMPLATE_112,
    align_face,
    landmarks68_to_5,
    similarity_transform,
    warp_image,
)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DETECTORS",
    "Face",
    "FaceDetector",
    "LandmarkFileError",
    "LandmarkTable",
    "align_face",
    "create_detector",
    "landmarks68_to_5",
    "load_landmarks",
    "save_landmarks",
    "similarity_transform",
    "warp_image",
]
