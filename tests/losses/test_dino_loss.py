"""DINOLoss against an explicit loop reference and DINO's own outputs (../shared/golden)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lafslib.engine.schedules import teacher_temperature
from lafslib.losses import DINOLoss


def _reference(student, teacher, center, t_temp, s_temp):
    total, n = 0.0, 0
    for ti, t in enumerate(teacher):
        q = torch.softmax((t - center) / t_temp, dim=-1)
        for si, s in enumerate(student):
            if si == ti:
                continue
            for b in range(len(s)):
                total += -(q[b] * torch.log_softmax(s[b] / s_temp, dim=-1)).sum()
            n += len(s)
    return total / n


@pytest.mark.parametrize("views", [(2, 0), (2, 4), (1, 3)])
@pytest.mark.parametrize("temps", [(0.04, 0.1), (0.07, 0.2)])
@pytest.mark.parametrize("batch", [1, 5])
def test_matches_loop(views, temps, batch) -> None:
    g, local = views
    torch.manual_seed(0)
    student = [torch.randn(batch, 12) for _ in range(g + local)]
    teacher = [torch.randn(batch, 12) for _ in range(g)]
    loss_fn = DINOLoss(12, student_temp=temps[1])
    loss_fn.center.normal_()
    center = loss_fn.center.clone()
    got = loss_fn(student, teacher, teacher_temp=temps[0])
    ref = _reference(student, teacher, center, temps[0], temps[1])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    expected_center = 0.9 * center + 0.1 * torch.cat(teacher).mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, expected_center)


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="teacher"):
        DINOLoss(4)([torch.randn(2, 4)], [], 0.04)
    with pytest.raises(ValueError, match="dims"):
        DINOLoss(4)([torch.randn(2, 5)] * 2, [torch.randn(2, 5)], 0.04)


def _dino_call(loss_fn: DINOLoss, g: dict, temp: float) -> tuple[torch.Tensor, torch.Tensor]:
    student = g["student_output"].clone().requires_grad_(True)
    # view-major rows, as DINO's .chunk(): 2 global + 4 local student views, 2 teacher views
    loss = loss_fn(list(student.chunk(6)), list(g["teacher_output"].chunk(2)), temp)
    loss.backward()
    return loss, student.grad


def test_equals_dino_reference_float64(golden: Path) -> None:
    """DINO v1 DINOLoss(out_dim=256, ncrops=6, warmup 0.04 -> 0.07 over 3 of 10 epochs),
    float64: schedule, loss per epoch, gradients, centre after one and two updates."""
    g = torch.load(golden / "dino_loss.pt", weights_only=True)
    for epoch in g["epochs"].tolist():
        temp = teacher_temperature(epoch, 3, 0.04, 0.07)
        assert temp == g["teacher_temp_schedule"][epoch].item()
        loss_fn = DINOLoss(256, student_temp=0.1, center_momentum=0.9).double()  # fresh centre
        loss, grad = _dino_call(loss_fn, g, temp)
        assert loss.dtype == grad.dtype == loss_fn.center.dtype == torch.float64
        torch.testing.assert_close(loss, g[f"loss_epoch{epoch}"], rtol=1e-15, atol=0)
        torch.testing.assert_close(grad, g[f"grad_student_epoch{epoch}"], rtol=1e-12, atol=1e-18)
        torch.testing.assert_close(loss_fn.center, g["center_after_one_update"], rtol=1e-15, atol=0)
    loss_fn = DINOLoss(256).double()
    _dino_call(loss_fn, g, teacher_temperature(0, 3, 0.04, 0.07))
    loss, _ = _dino_call(loss_fn, g, teacher_temperature(0, 3, 0.04, 0.07))
    torch.testing.assert_close(loss, g["loss_second_call_epoch0"], rtol=1e-15, atol=0)
    torch.testing.assert_close(loss_fn.center, g["center_after_two_updates"], rtol=1e-15, atol=0)


def test_keeps_float64_and_upcasts_half() -> None:
    loss_fn = DINOLoss(8)
    s = [torch.randn(3, 8, dtype=torch.float64) for _ in range(3)]
    t = [torch.randn(3, 8, dtype=torch.float64) for _ in range(2)]
    assert loss_fn(s, t, 0.04).dtype == torch.float64  # no cast to float32
    half = loss_fn([x.to(torch.bfloat16) for x in s], [x.to(torch.bfloat16) for x in t], 0.04)
    assert half.dtype == torch.float32
