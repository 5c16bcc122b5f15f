"""PartialFC: equals a plain classifier on one process; 2 gloo processes equal 1 process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lafslib.losses import AdaFaceLoss, arcface
from lafslib.losses.partial_fc import PartialFC


@pytest.mark.parametrize(
    "margin", [arcface(scale=16.0), AdaFaceLoss(scale=16.0)], ids=["arcface", "adaface"]
)
def test_one_process_full_rate_is_a_plain_classifier(margin) -> None:
    torch.manual_seed(0)
    margin.eval()  # AdaFace: identical norm statistics for both computations
    pfc = PartialFC(margin, 8, 10, sample_rate=1.0)
    emb = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([0, 3, 9, 3, 5, 1])
    loss = pfc(emb, labels)
    w = pfc.weight.detach().clone().requires_grad_(True)
    e = emb.detach().clone().requires_grad_(True)
    cos = F.normalize(e) @ F.normalize(w).T
    logits = (
        margin(cos, e.norm(dim=1), labels)
        if isinstance(margin, AdaFaceLoss)
        else margin(cos, labels)
    )
    ref = F.cross_entropy(logits, labels)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(pfc.weight.grad, w.grad)
    torch.testing.assert_close(emb.grad, e.grad)


def test_sampling_keeps_positives() -> None:
    torch.manual_seed(0)
    pfc = PartialFC(arcface(scale=16.0), 8, 100, sample_rate=0.1)
    labels = torch.tensor([3, 50, 97, 50])
    loss = pfc(torch.randn(4, 8, requires_grad=True), labels)
    loss.backward()
    touched = (pfc.weight.grad.abs().sum(1) > 0).nonzero().squeeze(1).tolist()
    assert {3, 50, 97} <= set(touched) and len(touched) == 10


SCRIPT = """
import os, sys, torch, torch.distributed as dist
from lafslib.engine.distributed import init_distributed, teardown
from lafslib.losses import arcface
from lafslib.losses.partial_fc import PartialFC
info = init_distributed("cpu")
rank, world = info.rank, info.world_size
torch.manual_seed(0)
full_w = torch.randn(10, 8) * 0.1
emb = torch.randn(8, 8)
labels = torch.tensor([0, 3, 9, 3, 5, 1, 7, 7])
pfc = PartialFC(arcface(scale=16.0), 8, 10)
with torch.no_grad():
    pfc.weight.copy_(full_w[pfc.class_start : pfc.class_start + pfc.num_local])
mine = emb[rank * 4 : (rank + 1) * 4].clone().requires_grad_(True)
loss = pfc(mine, labels[rank * 4 : (rank + 1) * 4])
loss.backward()
torch.save({"loss": loss.detach(), "wgrad": pfc.weight.grad, "start": pfc.class_start,
            "egrad": mine.grad / world}, sys.argv[1] + f"/rank{rank}.pt")
teardown()  # barrier, process group destroyed, its threads joined: a normal exit follows
"""


@pytest.mark.distributed
def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    script = tmp_path / "pfc.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run([*cmd, str(script), str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.manual_seed(0)
    full_w = (torch.randn(10, 8) * 0.1).requires_grad_(True)
    emb = torch.randn(8, 8).requires_grad_(True)
    labels = torch.tensor([0, 3, 9, 3, 5, 1, 7, 7])
    ref = F.cross_entropy(
        arcface(scale=16.0)(F.normalize(emb) @ F.normalize(full_w).T, labels), labels
    )
    ref.backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], ref.detach())
        s = got["start"]
        torch.testing.assert_close(got["wgrad"], full_w.grad[s : s + len(got["wgrad"])])
        torch.testing.assert_close(got["egrad"], emb.grad[rank * 4 : (rank + 1) * 4])
