"""Which precision a device runs well: fp16 needs CUDA; bf16 autocast on a CPU pays off only
where the CPU computes bf16 natively (AVX512-BF16 or AMX), elsewhere it is emulated."""

from __future__ import annotations

import torch

__all__ = ["check_precision", "native_cpu_bf16"]


def native_cpu_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (oneDNN's own test)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str, device: torch.device) -> str | None:
    """Check ``run.precision`` against the device.

    Args:
        precision: ``fp32``, ``bf16`` or ``fp16``.
        device: the training device.

    Returns:
        A note to print (bf16 on a CPU that emulates it), or None.

    Raises:
        ValueError: fp16 on a device other than CUDA.
    """
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("run.precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if precision == "bf16" and device.type == "cpu" and not native_cpu_bf16():
        return (
            "run.precision=bf16: this CPU has no native bf16 (AVX512-BF16 / AMX), so autocast "
            "emulates it and is usually slower than fp32"
        )
    return None
