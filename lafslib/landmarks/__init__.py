"""Landmarks: templates, detectors, alignment and sidecar files."""

from lafslib.landmarks.store import LandmarkFileError, LandmarkTable, load_landmarks, save_landmarks

__all__ = ["LandmarkFileError", "LandmarkTable", "load_landmarks", "save_landmarks"]
