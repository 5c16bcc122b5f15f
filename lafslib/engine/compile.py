"""``run.compile``: ``torch.compile`` of the backbone's forward, with a fallback.

Where a backbone cannot be compiled (no compiler backend on this host, an operation dynamo
cannot trace), the run says so once and continues uncompiled instead of failing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["compile_method", "compile_unavailable"]


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run here (None when it can)."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python / platform"
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "torch.compile on CPU needs a C++ compiler (g++ or clang++), none found"
    return None


def compile_method(
    module: torch.nn.Module, name: str, say: Callable[[str], None]
) -> Callable[..., Any]:
    """Replace ``module.<name>`` by its compiled version (an instance attribute: the state
    dict and the class are unchanged); the first call that fails to compile prints why and
    puts the eager method back.

    Args:
        module: e.g. a backbone.
        name: the method, e.g. ``"forward_ssl"`` or ``"forward"``.
        say: where the fallback message goes (rank-0 print).

    Returns:
        The installed callable.
    """
    eager = getattr(module, name)
    compiled = torch.compile(eager)
    state = {"first": True}

    def call(*args: Any, **kwargs: Any) -> Any:
        if not state["first"]:
            return compiled(*args, **kwargs)
        state["first"] = False
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:  # dynamo / inductor failures have many types
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc)
            say(f"run.compile: {type(module).__name__}.{name} runs uncompiled ({reason})")
            setattr(module, name, eager)
            return eager(*args, **kwargs)

    setattr(module, name, call)
    return call


def compile_methods(
    targets: list[tuple[torch.nn.Module, str]], device: torch.device, say: Callable[[str], None]
) -> int:
    """``run.compile: true``: compile each ``(module, method)`` of ``targets``, or say why
    nothing is compiled on this host. Returns how many were compiled."""
    reason = compile_unavailable(device)
    if reason is not None:
        say(f"run.compile: {reason}; running uncompiled")
        return 0
    for module, name in targets:
        compile_method(module, name, say)
    return len(targets)
