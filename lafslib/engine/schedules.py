"""Training schedules as pure functions of the global step (resume restores only the step).

The values equal DINO's ``utils.cosine_scheduler`` and ``DINOLoss.teacher_temp_schedule``
(Caron et al., ICCV 2021, ``facebookresearch/dino``) read at one index.
"""

from __future__ import annotations

import math

__all__ = ["cosine_schedule", "linear_warmup", "warmup_cosine", "teacher_temperature"]


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total_steps``)."""
    if total_steps <= 0:
        return end
    step = min(max(step, 0), total_steps)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * step / total_steps))


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """``np.linspace(start, end, warmup_steps)[step]`` (``step`` clipped to the warmup):
    ``start`` at step 0, ``end`` at the last warmup step ``warmup_steps - 1``."""
    step = min(max(step, 0), warmup_steps - 1)
    if step <= 0:
        return start
    if step == warmup_steps - 1:
        return end
    return start + step * ((end - start) / (warmup_steps - 1))


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, peak: float, final: float, start: float = 0.0
) -> float:
    """DINO's ``cosine_scheduler``: linear warmup from ``start``, reaching ``peak`` at step
    ``warmup_steps - 1``; from step ``warmup_steps`` a cosine from ``peak`` towards ``final``
    (reached at ``total_steps``)."""
    if step < warmup_steps:
        return linear_warmup(step, warmup_steps, start, peak)
    return cosine_schedule(step - warmup_steps, total_steps - warmup_steps, peak, final)


def teacher_temperature(index: int, warmup: int, start: float, end: float) -> float:
    """DINO teacher temperature: ``linspace(start, end, warmup)`` over the first ``warmup``
    epochs, then ``end``.

    Args:
        index: epoch (DINO; the temperature is constant within an epoch) or global step (the
            per-step variant, with ``warmup`` in steps).
        warmup: warmup length in the same unit; 0 starts at ``end``.
        start: warmup temperature (DINO ``warmup_teacher_temp``).
        end: final temperature (DINO ``teacher_temp``).
    """
    if index >= warmup:
        return end
    return linear_warmup(index, warmup, start, end)
