"""Shared fixtures: real faces from ../shared/data and reference outputs from ../shared/golden,
skipped (or failed in CI) when absent."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(
    os.environ.get(
        "LAFS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)
SHARED_MODELS = Path(
    os.environ.get(
        "LAFS_SHARED_MODELS", Path(__file__).resolve().parents[1].parent / "shared" / "models"
    )
)
GOLDEN = Path(
    os.environ.get("LAFS_GOLDEN", Path(__file__).resolve().parents[1].parent / "shared" / "golden")
)


def _require(path: Path, what: str = "real face data", env: str = "LAFS_SHARED_DATA") -> Path:
    if path.exists():
        return path
    reason = f"{what} not found at {path} (set {env} or put ../shared beside the repo)"
    if os.environ.get("LAFS_REQUIRE_TEST_DATA") == "1":
        pytest.fail(reason + "; LAFS_REQUIRE_TEST_DATA=1 makes this a failure")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def faces_mini(shared_data: Path) -> Path:
    """faces-mini: 20 LFW identities x 5 aligned images, pairs, lfw_mini.bin."""
    return _require(shared_data / "faces-mini")


@pytest.fixture(scope="session")
def celeba_112(shared_data: Path) -> Path:
    """celeba-112: aligned CelebA identities with landmarks5.csv."""
    return _require(shared_data / "celeba-112")


@pytest.fixture(scope="session")
def celeba_raw_mini(shared_data: Path) -> Path:
    """celeba-raw-mini: raw unaligned CelebA photos."""
    return _require(shared_data / "celeba-raw-mini")


@pytest.fixture(scope="session")
def lfw_bin(shared_data: Path) -> Path:
    """The standard 6,000-pair LFW .bin."""
    return _require(shared_data / "lfw" / "lfw.bin")


@pytest.fixture(scope="session")
def mobilefacenet_ms1m() -> Path:
    """The real MobileFaceNet (MS1M, 128-d) of ../shared/models/mobilefacenet-ms1m."""
    path = SHARED_MODELS / "mobilefacenet-ms1m" / "mobilefacenet.pt"
    return _require(path, "real MobileFaceNet weights", "LAFS_SHARED_MODELS")


@pytest.fixture(scope="session")
def golden() -> Path:
    """../shared/golden: outputs of the reference implementations (README there)."""
    return _require(GOLDEN, "golden reference data", "LAFS_GOLDEN")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


def write_face_folder(
    root: Path, identities: int = 2, per_identity: int = 4, size: int = 112
) -> list[Path]:
    """Write synthetic faces as ``root/id{i}/{j}.png`` with ``root/landmarks5.csv``."""
    import numpy as np
    from PIL import Image

    from lafslib.data.synthetic import render_face
    from lafslib.landmarks.store import save_landmarks

    files, keys, points = [], [], []
    for i in range(identities):
        (root / f"id{i}").mkdir(parents=True, exist_ok=True)
        for j in range(per_identity):
            face = render_face(i, j, size)
            path = root / f"id{i}" / f"{j}.png"
            Image.fromarray(face["image"]).save(path)
            files.append(path)
            keys.append(f"id{i}/{j}.png")
            points.append(face["landmarks5"])
    save_landmarks(root / "landmarks5.csv", keys, np.stack(points))
    return files


@pytest.fixture(scope="session")
def face_folder():
    """Factory: ``face_folder(root, identities, per_identity)`` writes labelled synthetic faces
    with a 5-point sidecar and returns the image paths (sorted like the dataset)."""
    return write_face_folder


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``make(size)``: a folder on a new tmpfs of ``size`` bytes (skips where mount fails)."""
    mounted: list[Path] = []

    def make(size: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
        )
        if proc.returncode:
            pytest.skip("cannot mount a tmpfs here (needs root); the simulated ENOSPC tests run")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
