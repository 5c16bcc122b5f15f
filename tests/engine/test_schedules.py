"""Schedules equal DINO's ``cosine_scheduler`` and teacher-temperature schedule (golden values)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lafslib.engine.schedules import (
    cosine_schedule,
    linear_warmup,
    teacher_temperature,
    warmup_cosine,
)


@pytest.mark.parametrize("name", ["lr_warmup", "wd", "momentum"])
def test_equals_dino_cosine_scheduler(golden: Path, name: str) -> None:
    sched = json.loads((golden / "dino_cosine_scheduler.json").read_text())["schedules"][name]
    c = sched["config"]
    total = c["epochs"] * c["niter_per_ep"]
    warmup = c.get("warmup_epochs", 0) * c["niter_per_ep"]
    start = c.get("start_warmup_value", 0.0)
    got = [
        warmup_cosine(i, total, warmup, c["base_value"], c["final_value"], start)
        for i in range(total)
    ]
    np.testing.assert_allclose(got, sched["values"], rtol=1e-15, atol=0)
    if warmup:  # the peak is reached at the last warmup iteration (13), not one later
        assert got[warmup - 1] == got[warmup] == c["base_value"]


def test_warmup_is_linspace_and_cosine_ends_at_final() -> None:
    for n in (1, 2, 5, 14):
        ramp = [linear_warmup(i, n, 0.1, 0.7) for i in range(n)]
        np.testing.assert_allclose(ramp, np.linspace(0.1, 0.7, n), rtol=1e-15, atol=0)
    assert warmup_cosine(13, 70, 14, 1.25e-4, 1e-6) == 1.25e-4
    assert warmup_cosine(12, 70, 14, 1.0, 0.0) == pytest.approx(12 / 13)
    assert cosine_schedule(0, 100, 0.996, 1.0) == 0.996
    assert cosine_schedule(100, 100, 0.996, 1.0) == 1.0
    assert math.isclose(cosine_schedule(50, 100, 0.04, 0.4), 0.22)
    assert cosine_schedule(5, 0, 0.04, 0.4) == 0.4


def test_teacher_temperature_equals_dino(golden: Path) -> None:
    """DINOLoss(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup epochs 3, 10 epochs)."""
    ref = torch.load(golden / "dino_loss.pt", weights_only=True)["teacher_temp_schedule"]
    got = [teacher_temperature(e, 3, 0.04, 0.07) for e in range(10)]
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-15, atol=0)
    assert got[:3] == pytest.approx([0.04, 0.055, 0.07])  # final value in the last warmup epoch
    assert teacher_temperature(0, 0, 0.04, 0.07) == 0.07  # no warmup
    assert teacher_temperature(0, 1, 0.04, 0.07) == 0.04  # linspace(0.04, 0.07, 1) = [0.04]


def test_teacher_temperature_per_step() -> None:
    """The per-step variant: the same linspace over warmup epochs x steps per epoch."""
    steps = [teacher_temperature(s, 3 * 4, 0.04, 0.07) for s in range(16)]
    np.testing.assert_allclose(steps[:12], np.linspace(0.04, 0.07, 12), rtol=1e-15)
    assert steps[11:] == [0.07] * 5
