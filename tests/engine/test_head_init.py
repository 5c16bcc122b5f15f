"""Embedding head initialised by PCA whitening of its input (adapter.head_init=whiten)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lafslib.engine.finetune as finetune_module
from lafslib.config import ConfigError
from lafslib.engine.finetune import finetune
from lafslib.engine.head_init import embedding_linear, head_input_moments, whiten_head
from lafslib.models import create_model
from lafslib.models.export import load_export

from .test_finetune import _recipe
from .test_imprint import _faces, pixels


def test_moments_of_two_rank_shares_add_up_to_the_whole() -> None:
    model = create_model("vit_test")
    linear = embedding_linear(model)
    data = _faces(7, [0, 1, 2, 3, 4, 5, 6])
    cpu = torch.device("cpu")
    whole = head_input_moments(model, linear, data, 3, cpu, False)
    parts = [head_input_moments(model, linear, data, 3, cpu, False, r, 2) for r in (0, 1)]
    assert whole[0] == 7 == parts[0][0] + parts[1][0]
    torch.testing.assert_close(whole[1], parts[0][1] + parts[1][1])
    torch.testing.assert_close(whole[2], parts[0][2] + parts[1][2])
    with torch.no_grad():
        feats = model.eval().forward_ssl(pixels(data)).double()
    torch.testing.assert_close(whole[1], feats.sum(0))


class _Tiny(nn.Module):
    """A full-rank 12-d feature of the pixels and a Linear + BN embedding head of 16."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 12))
        self.head = nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_whiten_head_whitens_the_models_feature_and_keeps_its_mode() -> None:
    torch.manual_seed(0)
    model = _Tiny().train()
    data = _faces(60, list(range(60)))
    fitted = whiten_head(model, data, 16, torch.device("cpu"), False, shrink=0.0)
    assert fitted == 60 and model.training
    with torch.no_grad():
        y = model.head[0](model.body(pixels(data))).double().numpy()
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)
    eig = np.sort(np.linalg.eigvalsh(np.cov(y.T, bias=True)))[::-1]
    np.testing.assert_allclose(eig[:12], 1, atol=1e-3)
    np.testing.assert_allclose(eig[12:], 0, atol=1e-4)
    with pytest.raises(ConfigError, match="whiten_shrink > 0"):  # 12 images, 12 features
        whiten_head(model, data[:12], 8, torch.device("cpu"), False, shrink=0.0)


def test_the_embedding_linear_is_found_or_the_model_refused() -> None:
    with pytest.raises(ConfigError, match="no linear embedding head"):
        embedding_linear(nn.Sequential(nn.Flatten()))
    headless = nn.Module()
    headless.head = nn.Identity()
    with pytest.raises(ConfigError, match="no linear embedding head"):
        embedding_linear(headless)
    wide = nn.Module()
    wide.head = nn.Sequential(nn.Linear(5000, 8))
    with pytest.raises(ConfigError, match="5000 features"):
        embedding_linear(wide)
    vit = nn.Module()  # a Part fViT keeps its head in its ViT
    vit.vit = nn.Module()
    vit.vit.head = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4))
    assert embedding_linear(vit) is vit.vit.head[0]


def test_finetune_starts_from_the_whitened_head_and_resume_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fitted: list[torch.Tensor] = []
    real = finetune_module.whiten_head

    def spy(model: nn.Module, *args, **kwargs) -> int:
        count = real(model, *args, **kwargs)
        fitted.append(model.head[0].weight.detach().clone())
        return count

    monkeypatch.setattr(finetune_module, "whiten_head", spy)
    sets = ["adapter.head_init=whiten", "optim.lr=1e-12", "optim.weight_decay=0"]
    run = finetune(_recipe(tmp_path, "whiten", [*sets, "run.max_steps=2"]))
    assert len(fitted) == 1
    exported = load_export(run / "export").head[0].weight
    torch.testing.assert_close(exported, fitted[0], atol=1e-6, rtol=0)
    random_start = create_model("vit_test").head[0].weight
    assert not torch.allclose(exported, random_start, atol=1e-3)
    assert "embedding head whitened on 16 images" in capsys.readouterr().out
    finetune(_recipe(tmp_path, "whiten", [*sets, "run.max_steps=3"]), resume="auto")
    assert len(fitted) == 1  # a resumed run keeps its trained head


SCRIPT = """
import os, sys, torch
from lafslib.engine.distributed import init_distributed, teardown
from lafslib.engine.head_init import whiten_head
from lafslib.models import create_model
info = init_distributed("cpu")
torch.manual_seed(0)
model = create_model("vit_test")
g = torch.Generator().manual_seed(0)
data = [(torch.randint(0, 256, (3, 112, 112), generator=g, dtype=torch.uint8), i,
         torch.rand(5, 2, generator=g), torch.tensor(False)) for i in range(81)]  # as _faces
count = whiten_head(model, data, 4, torch.device("cpu"), False, 0.3, 0, info.rank, info.world_size)
torch.save({"count": count, "head": model.head[0].state_dict()}, sys.argv[1] + f"/rank{info.rank}.pt")
teardown()
"""


@pytest.mark.distributed
def test_two_gloo_processes_whiten_like_one(tmp_path: Path) -> None:
    """Each rank embeds its share (41 and 40 of 81 images); both get the one-process head."""
    script = tmp_path / "whiten.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run([*cmd, str(script), str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.manual_seed(0)
    model = create_model("vit_test")
    data = _faces(81, list(range(81)))
    assert whiten_head(model, data, 4, torch.device("cpu"), False, 0.3) == 81
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["count"] == 81
        for name, value in model.head[0].state_dict().items():
            torch.testing.assert_close(got["head"][name], value, atol=1e-5, rtol=1e-4)


def test_a_head_linear_without_bias_gets_the_whitening_and_the_batchnorm_centres() -> None:
    """A Linear without bias + BatchNorm (as CVLFace ViT's): the weight is whitened, and in
    training mode the BatchNorm removes the mean the missing bias would have removed."""
    torch.manual_seed(0)
    model = _Tiny()
    model.head[0] = nn.Linear(12, 16, bias=False)
    data = _faces(60, list(range(60)))
    whiten_head(model, data, 16, torch.device("cpu"), False, shrink=0.0)
    with torch.no_grad():
        y = model.head[0](model.body(pixels(data))).double().numpy()
    eig = np.sort(np.linalg.eigvalsh(np.cov(y.T, bias=True)))[::-1]
    np.testing.assert_allclose(eig[:12], 1, atol=1e-3)
    with pytest.raises(ConfigError, match="6272 features"):  # 49 tokens x 128
        embedding_linear(create_model("cvlface_vit_test"))
