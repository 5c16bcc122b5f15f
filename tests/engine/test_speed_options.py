"""Speed options: run.compile with its fallback, fused AdamW, bf16 on CPU."""

from __future__ import annotations

import pytest
import torch

from lafslib.config import RunConfig
from lafslib.engine import compile as compile_mod
from lafslib.engine import precision
from lafslib.engine.compile import compile_method, compile_methods
from lafslib.engine.optim import adamw


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward_ssl(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * 2


def test_a_method_that_fails_to_compile_runs_eager_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(fn):
        def call(*args, **kwargs):
            raise RuntimeError("backend failed to lower the graph\nmore detail")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    net, said = _Net(), []
    x = torch.randn(4, 3)
    expected = net.lin(x) * 2
    compile_method(net, "forward_ssl", said.append)
    torch.testing.assert_close(net.forward_ssl(x), expected)
    assert said == [
        "run.compile: _Net.forward_ssl runs uncompiled (backend failed to lower the graph)"
    ]
    assert net.forward_ssl.__func__ is _Net.forward_ssl  # the eager method is back
    assert "forward_ssl" not in str(list(net.state_dict()))


def test_compiled_method_is_used_after_the_first_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def tracing(fn):
        def call(*args, **kwargs):
            calls.append(1)
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(torch, "compile", tracing)
    net = _Net()
    compile_methods([(net, "forward_ssl")], torch.device("cpu"), print)
    x = torch.randn(2, 3)
    net.forward_ssl(x)
    net.forward_ssl(x)
    assert len(calls) == 2


def test_no_compiler_means_no_compile_and_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_mod.shutil, "which", lambda name: None)
    net, said = _Net(), []
    assert compile_methods([(net, "forward_ssl")], torch.device("cpu"), said.append) == 0
    assert said and "C++ compiler" in said[0] and "uncompiled" in said[0]
    assert "forward_ssl" not in vars(net)
    assert RunConfig().compile is False


def test_adamw_is_fused_where_torch_has_the_kernel_and_steps_like_foreach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(64, 32, generator=g), torch.randn(32, generator=g)]
    grads = [[torch.randn(t.shape, generator=g) for t in start] for _ in range(4)]
    results = []
    for make in (lambda p: adamw(p, 0.01), lambda p: torch.optim.AdamW(p, lr=0.01, foreach=True)):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = make([{"params": params, "weight_decay": 0.05}])
        for step in grads:
            for p, grad in zip(params, step):
                p.grad = grad.clone()
            opt.step()
        results.append((opt, [p.detach() for p in params]))
    assert results[0][0].defaults["fused"] is True  # CPU fused kernel (torch >= 2.4)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    real = torch.optim.AdamW

    def no_fused(*args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be CUDA tensors")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    fallback = adamw([{"params": [torch.nn.Parameter(torch.zeros(2))]}], 0.1)
    assert fallback.defaults["fused"] is None


def test_precision_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        precision.check_precision("fp16", cpu)
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    assert "no native bf16" in precision.check_precision("bf16", cpu)
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
    assert precision.check_precision("bf16", cpu) is None
    assert precision.check_precision("fp32", cpu) is None
