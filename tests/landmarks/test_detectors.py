"""Detector backends: FAN offline error and plumbing, sidecar and learned landmark sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lafslib.data.synthetic import render_face
from lafslib.landmarks.detectors import (
    MissingWeightsError,
    SidecarDetector,
    create_detector,
    dlib_model_path,
)
from lafslib.landmarks.store import save_landmarks


def _fan_file() -> str:
    from face_alignment import api

    return Path(api.models_urls["2DFAN-4"]).name


def test_fan_without_weights_names_the_files(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("face_alignment")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(MissingWeightsError) as err:
        create_detector("face-alignment", boxes="full", device="cpu")
    message = str(err.value)
    assert _fan_file() in message and str(tmp_path / "torch_home") in message
    with pytest.raises(MissingWeightsError, match="s3fd"):
        create_detector("face-alignment", boxes="sfd", device="cpu")
    assert not list((tmp_path / "torch_home").rglob("*.tar"))  # nothing half-written


@pytest.fixture(scope="module")
def random_fan_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised FAN saved under the expected file name: tests the plumbing only."""
    pytest.importorskip("face_alignment")
    from face_alignment.models import FAN

    folder = tmp_path_factory.mktemp("fan_weights")
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), folder / _fan_file())
    return folder


@pytest.fixture(scope="module")
def fan_detector(random_fan_weights: Path):
    """FAN from ``--weights DIR`` with whole-image boxes; torch.hub's folder is restored."""
    hub_before = torch.hub.get_dir()
    det = create_detector("face-alignment", boxes="full", weights_dir=random_fan_weights)
    assert torch.hub.get_dir() == hub_before
    return det


def test_fan_loads_weights_from_torch_home(random_fan_weights: Path, tmp_path, monkeypatch) -> None:
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / _fan_file()).symlink_to(random_fan_weights / _fan_file())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    det = create_detector("face-alignment", boxes="full", device="cpu")
    saved = torch.load(random_fan_weights / _fan_file(), weights_only=True)
    loaded = det._fa.face_alignment_net.state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_fan_detects_68_points_with_given_boxes(fan_detector, celeba_raw_mini: Path) -> None:
    pytest.importorskip("dlib")
    from lafslib.io import read_image
    from lafslib.landmarks.detectors import DlibDetector

    photo = read_image(sorted(celeba_raw_mini.glob("*/*.jpg"))[0])
    dlib_det = DlibDetector()
    fan_detector.box_source = dlib_det  # boxes from dlib: no S3FD weights needed
    faces = fan_detector.detect(photo)
    boxes = dlib_det.boxes(photo)
    assert len(faces) == len(boxes) >= 1
    np.testing.assert_array_equal(faces[0].box, boxes[0][0])
    assert faces[0].landmarks.shape == (68, 2) and faces[0].layout == "ibug68"
    assert np.isfinite(faces[0].landmarks).all()
    assert faces[0].five_points().shape == (5, 2)


def test_dlib_backends_find_synthetic_free_models() -> None:
    pytest.importorskip("dlib")
    for name in ("shape_predictor_68_face_landmarks.dat", "mmod_human_face_detector.dat"):
        assert dlib_model_path(name).is_file()
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        dlib_model_path("nonexistent.dat")
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("retina")


def test_dlib_five_point_predictor_refuses_alignment(celeba_raw_mini: Path) -> None:
    pytest.importorskip("dlib")
    from lafslib.io import read_image

    photo = read_image(sorted(celeba_raw_mini.glob("*/*.jpg"))[0])
    five = create_detector("dlib5").detect(photo)
    full = create_detector("dlib").detect(photo)
    assert five[0].landmarks.shape == (5, 2) and five[0].layout == "dlib5"
    # dlib's 5 points are iBUG 45, 42, 36, 39 (eye corners) and 33 (nose base)
    np.testing.assert_allclose(five[0].landmarks, full[0].landmarks[[45, 42, 36, 39, 33]], atol=6)
    with pytest.raises(ValueError, match="68-point predictor"):
        five[0].five_points()


def test_sidecar_detector_looks_up_keys(tmp_path: Path) -> None:
    pts = np.stack([render_face(i, 0)["landmarks5"] for i in range(3)])
    save_landmarks(tmp_path / "lm.csv", ["a/0.jpg", "a/1.jpg", "b/2.jpg"], pts)
    det = SidecarDetector(tmp_path / "lm.csv")
    face = det.detect(np.zeros((112, 112, 3), np.uint8), "a/1.jpg")[0]
    np.testing.assert_allclose(face.landmarks, pts[1], atol=1e-3)
    assert face.layout == "arcface5"
    assert det.detect(np.zeros((112, 112, 3), np.uint8), "missing.jpg") == []
    with pytest.raises(ValueError, match="image key"):
        det.detect(np.zeros((112, 112, 3), np.uint8))


def test_learned_detector_runs_the_part_fvit_landmark_net(tmp_path: Path) -> None:
    from lafslib.models import create_model
    from lafslib.models.export import save_export

    model = create_model("part_fvit_test")
    model.eval()
    export = save_export(model, tmp_path / "export")
    det = create_detector("learned", export=export)
    image = render_face(1, 0, size=112)["image"]
    face = det.detect(image)[0]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        expected = model.predict_landmarks(x)[0].numpy() * 112
    assert face.landmarks.shape == (det.num_points, 2)
    np.testing.assert_allclose(face.landmarks, expected, atol=1e-4)


def test_yunet_maps_downscaled_detections_back_to_the_photo(celeba_raw_mini) -> None:
    import cv2

    from lafslib.io import read_image
    from lafslib.landmarks.detectors import create_detector

    photo = read_image(sorted(celeba_raw_mini.glob("*/*.jpg"))[0])
    big = cv2.resize(photo, None, fx=3.0, fy=3.0, interpolation=cv2.INTER_CUBIC)
    native = create_detector("yunet", input_size=0).detect(photo)
    reduced = create_detector("yunet", input_size=640).detect(big)  # detected at ~1/3 size
    assert len(native) == len(reduced) == 1
    assert reduced[0].layout == "arcface5" and reduced[0].landmarks.shape == (5, 2)
    iod = np.linalg.norm(native[0].landmarks[0] - native[0].landmarks[1])
    assert np.abs(reduced[0].landmarks / 3.0 - native[0].landmarks).max() < 0.1 * iod
    assert np.abs(reduced[0].box / 3.0 - native[0].box).max() < 0.15 * iod
    # image-left eye first (ArcFace order), mouth below the eyes
    pts = native[0].landmarks
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0] and pts[3, 1] > pts[0, 1]
