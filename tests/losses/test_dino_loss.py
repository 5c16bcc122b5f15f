"""DINOLoss against an explicit loop reference."""

from __future__ import annotations

import pytest
import torch

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
