"""PCA whitening of embeddings: the map, and ``lafs eval --whiten``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lafslib.cli import main as cli
from lafslib.errors import DataError
from lafslib.evaluation.embed import embed_images
from lafslib.evaluation.whitening import Whitened, fit_whitening, whitening
from lafslib.models import create_model
from lafslib.models.export import save_export


def _correlated(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) * np.linspace(3, 0.2, d)
    return rng.standard_normal((n, d)) @ mix.T + rng.standard_normal(d)


def _moments(x: np.ndarray) -> tuple[int, torch.Tensor, torch.Tensor]:
    t = torch.from_numpy(x)
    return len(x), t.sum(0), t.T @ t


@pytest.mark.parametrize("out_features", [4, 8, 12])
def test_whitening_gives_unit_covariance_on_its_top_components(out_features: int) -> None:
    x = _correlated(400, 8)
    weight, bias = whitening(*_moments(x), out_features, shrink=0.0)
    y = x @ weight.numpy().T + bias.numpy()
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-9)
    cov = np.cov(y.T, bias=True)
    k = min(out_features, 8)
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    np.testing.assert_allclose(eig[:k], 1, atol=1e-8)  # k unit directions ...
    np.testing.assert_allclose(eig[k:], 0, atol=1e-8)  # ... and nothing else
    # the kept directions are the top principal components: the others map to zero
    bottom = np.linalg.eigh(np.cov(x.T, bias=True))[1][:, : 8 - k]
    np.testing.assert_allclose(weight.numpy() @ bottom, 0, atol=1e-9)


def test_shrinkage_scales_each_component_by_its_shrunk_variance() -> None:
    x = _correlated(500, 6, seed=1)
    shrink = 0.5
    weight, bias = whitening(*_moments(x), 6, shrink=shrink)
    y = x @ weight.numpy().T + bias.numpy()
    lam = np.linalg.eigvalsh(np.cov(x.T, bias=True))
    expected = lam / (lam + shrink * lam.mean())
    np.testing.assert_allclose(
        np.sort(np.linalg.eigvalsh(np.cov(y.T, bias=True))), np.sort(expected)
    )


def test_whitening_rejects_too_few_vectors_and_negative_shrink() -> None:
    x = _correlated(5, 3)
    with pytest.raises(ValueError, match="at least 2"):
        whitening(*_moments(x[:1]), 3, 0.0)
    with pytest.raises(ValueError, match="shrink"):
        whitening(*_moments(x), 3, -0.1)


class _Pixels(nn.Module):
    """An 8-d linear feature of the pixels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _folder_images(root: Path) -> np.ndarray:
    from lafslib.io import list_images, read_image

    return np.stack([read_image(root / f) for f in list_images(root)])


def test_fit_whitening_whitens_the_folders_embeddings_and_skips_bad_images(
    faces_mini: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "faces"
    shutil.copytree(faces_mini / "identities", folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    model = _Pixels().eval()
    whitened, info = fit_whitening(model, folder)
    assert isinstance(whitened, Whitened)
    assert info == {"folder": str(folder), "images": 100, "skipped": 1, "shrink": 0.0}
    y = embed_images(whitened, _folder_images(faces_mini / "identities"), 32, flip=False)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(8), atol=1e-3)


def test_fit_whitening_refuses_too_few_images_and_a_missing_folder(
    faces_mini: Path, tmp_path: Path
) -> None:
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted((faces_mini / "identities").rglob("*.jpg"))[:8]:
        shutil.copy(f, few / f.name)
    with pytest.raises(DataError, match="8 readable images cannot whiten a 8-dimensional"):
        fit_whitening(_Pixels().eval(), few)
    _, info = fit_whitening(_Pixels().eval(), few, shrink=0.5)  # shrinkage makes it possible
    assert info["images"] == 8
    with pytest.raises(FileNotFoundError, match="whitening folder not found"):
        fit_whitening(_Pixels().eval(), tmp_path / "missing")


def test_lafs_eval_whiten_reports_the_whitened_accuracy(faces_mini: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    export = save_export(create_model("vit_test").eval(), tmp_path / "export", "ssl")
    common = ["eval", "--model", str(export), "--bin", str(faces_mini / "lfw_mini.bin")]
    assert cli([*common, "--out", str(tmp_path / "raw")]) == 0
    white = [*common, "--out", str(tmp_path / "white"), "--whiten"]
    assert cli([*white, str(faces_mini / "identities"), "--whiten-shrink", "0.3"]) == 0
    raw = json.loads((tmp_path / "raw" / "report.json").read_text())
    report = json.loads((tmp_path / "white" / "report.json").read_text())
    assert report["whitening"]["images"] == 100 and report["whitening"]["shrink"] == 0.3
    assert "PCA-whitened on 100 faces" in (tmp_path / "white" / "report.md").read_text()
    assert "whitening" not in raw
    a, b = raw["results"]["lfw_mini"], report["results"]["lfw_mini"]
    assert (a["accuracy"], a["val"]) != (b["accuracy"], b["val"])  # a different feature scored
    missing = [*common, "--out", str(tmp_path / "none"), "--whiten", str(tmp_path / "missing")]
    assert cli(missing) != 0
    assert not (tmp_path / "none").exists()  # refused before anything was written
