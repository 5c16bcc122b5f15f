"""Training schedules as pure functions of the global step (resume restores only the step)."""

from __future__ import annotations

import math

__all__ = ["cosine_schedule", "warmup_cosine", "teacher_temperature"]


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total_steps``)."""
    if total_steps <= 0:
        return end
    t = min(max(step, 0), total_steps) / total_steps
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, peak: float, final: float, start: float = 0.0
) -> float:
    """Linear warmup from ``start`` to ``peak`` over ``warmup_steps``, then cosine to ``final``."""
    if step < warmup_steps:
        return start + (peak - start) * step / max(warmup_steps, 1)
    return cosine_schedule(step - warmup_steps, total_steps - warmup_steps, peak, final)


def teacher_temperature(step: int, warmup_steps: int, start: float, end: float) -> float:
    """DINO teacher temperature: linear from ``start`` to ``end`` over warmup, then constant."""
    if step >= warmup_steps:
        return end
    return start + (end - start) * step / max(warmup_steps, 1)
