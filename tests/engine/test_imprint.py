"""Imprinted class centres: normalised class means of the starting model's embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lafslib.engine.finetune import finetune
from lafslib.engine.imprint import imprint_centres
from lafslib.models import create_model

from .test_finetune import _recipe


def _faces(n: int, labels: list[int]) -> list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]:
    """Finetuning items as FaceTransform makes them: uint8 image, label, keypoints, no flip."""
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randint(0, 256, (3, 112, 112), generator=g, dtype=torch.uint8),
            y,
            torch.rand(5, 2, generator=g),
            torch.tensor(False),
        )
        for y in labels[:n]
    ]


def pixels(data: list) -> torch.Tensor:
    """The items' images as the model sees them: (N, 3, 112, 112) in [-1, 1]."""
    return torch.stack([item[0] for item in data]).float() / 127.5 - 1


def test_centres_are_normalised_means_of_normalised_embeddings() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 16))
    labels = [0, 1, 0, 2, 1, 0, 2]
    data = _faces(7, labels)
    centres, counts = imprint_centres(model, data, 4, 16, 3, torch.device("cpu"), False)
    with torch.no_grad():
        emb = F.normalize(model(pixels(data)), dim=1)
    for c in range(3):
        rows = [i for i, y in enumerate(labels) if y == c]
        torch.testing.assert_close(centres[c], F.normalize(emb[rows].mean(0), dim=0))
    assert counts.tolist() == [3, 2, 2, 0]
    assert torch.equal(centres[3], torch.zeros(16))  # no image: nothing to imprint


def test_batchnorm_statistics_and_mode_are_restored() -> None:
    model = create_model("vit_test").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # 5 images in batches of at most 4: split 3 + 2, never a single-image batch
    centres, counts = imprint_centres(
        model, _faces(5, [0, 1, 0, 1, 1]), 2, model.embed_dim, 4, torch.device("cpu"), False
    )
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert counts.tolist() == [2, 3]
    torch.testing.assert_close(centres.norm(dim=1), torch.ones(2))


def test_imprinted_classifier_starts_with_a_lower_loss(tmp_path: Path) -> None:
    def first_loss(name: str, init: str) -> float:
        sets = ["run.max_steps=1", "optim.warmup_epochs=0", f"loss.classifier_init={init}"]
        run = finetune(_recipe(tmp_path, name, sets))
        row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        return row["train/loss"]

    assert first_loss("imprint", "imprint") < 0.5 * first_loss("random", "random")
