"""LoRA / rsLoRA: identity at init, merge/unmerge, scaling, trainable set, fused-qkv parts."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lafslib.layers import (
    LoRALinear,
    apply_lora,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    unmerge_lora,
)
from lafslib.models import create_model


class SeparateQKV(nn.Module):
    """Attention-like module with separate q/k/v/out projections (peft / HF layout)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.out_proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return self.head(self.out_proj(a @ v)).mean(1)


def _train(model: nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("rs", [False, True])
def test_vit_lora_identity_at_init_and_merge(rs: bool) -> None:
    torch.manual_seed(0)
    base = create_model("vit_test").eval()
    model = copy.deepcopy(base)
    names = apply_lora(model, r=4, alpha=8, dropout=0.1, targets=("q", "v"), rs=rs)
    assert names == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    model.eval()
    x = torch.randn(2, 3, 112, 112)
    assert torch.equal(model(x), base(x))  # B = 0: exactly the original
    mark_only_lora_trainable(model, extra=("head",))
    _train(model, x)
    ref = model(x)
    assert not torch.allclose(ref, base(x))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merge_lora(model, unwrap=False)
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=1e-6, rtol=0, msg=k)
    torch.testing.assert_close(model(x), ref, atol=1e-6, rtol=1e-6)
    plain = merge_lora(copy.deepcopy(model))
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert set(plain.state_dict()) == set(base.state_dict())
    fresh = create_model("vit_test").eval()
    fresh.load_state_dict(plain.state_dict())
    torch.testing.assert_close(fresh(x), ref, atol=1e-5, rtol=1e-5)


def test_scale_lora_vs_rslora() -> None:
    lin = nn.Linear(8, 6)
    a = LoRALinear.from_linear(lin, r=16, alpha=16, rs=False)
    b = LoRALinear.from_linear(lin, r=16, alpha=16, rs=True)
    assert a.scale == 1.0 and b.scale == 4.0  # 16/16 and 16/sqrt(16)
    assert LoRALinear.from_linear(lin, r=4, alpha=8, rs=True).scale == 4.0
    # The update is exactly scale * B @ A.
    nn.init.normal_(b.lora_B)
    x = torch.randn(5, 8)
    expected = lin(x) + 4.0 * x @ (b.lora_B[0] @ b.lora_A[0]).T
    torch.testing.assert_close(b(x), expected)
    torch.testing.assert_close(b.delta_weight(), 4.0 * b.lora_B[0] @ b.lora_A[0])
    assert b.weight is lin.weight  # wrapped, not copied


def test_only_lora_and_head_get_gradients() -> None:
    model = create_model("vit_test")
    apply_lora(model, r=2, alpha=2, targets=("q", "v"))
    n = mark_only_lora_trainable(model, extra=("head",))
    model(torch.randn(2, 3, 112, 112)).sum().backward()
    lora = {k for k in lora_state_dict(model)}
    assert lora == {f"blocks.{i}.attn.qkv.lora_{ab}" for i in (0, 1) for ab in "AB"}
    for name, p in model.named_parameters():
        trainable = name in lora or name.startswith("head.")
        assert p.requires_grad == trainable, name
        assert (p.grad is not None) == trainable, name
    qkv = model.blocks[0].attn.qkv
    head = sum(p.numel() for p in model.head.parameters())
    a, b = 2 * qkv.in_features, qkv.out_features // 3 * 2  # r x in, out/3 x r
    assert n == head + 2 * 2 * (a + b)  # blocks x (q, v) x (A + B)


def test_fused_qkv_q_v_only_leaves_k_rows() -> None:
    torch.manual_seed(0)
    model = create_model("vit_test").eval()
    w0 = model.blocks[0].attn.qkv.weight.detach().clone()
    apply_lora(model, r=4, alpha=4, targets=("q", "v"), rs=True)
    mark_only_lora_trainable(model, extra=())
    _train(model, torch.randn(2, 3, 112, 112))
    merge_lora(model)
    w1 = model.blocks[0].attn.qkv.weight
    inner = w1.shape[0] // 3
    torch.testing.assert_close(w1[inner : 2 * inner], w0[inner : 2 * inner], atol=0, rtol=0)
    assert not torch.allclose(w1[:inner], w0[:inner])
    assert not torch.allclose(w1[2 * inner :], w0[2 * inner :])


def test_separate_projections_and_targets() -> None:
    torch.manual_seed(0)
    model = SeparateQKV()
    base = copy.deepcopy(model)
    assert apply_lora(model, r=2, alpha=4, targets=("q", "v", "o"), rs=False) == [
        "q_proj",
        "v_proj",
        "out_proj",
    ]
    assert type(model.k_proj) is nn.Linear and type(model.head) is nn.Linear
    x = torch.randn(3, 5, 16)
    assert torch.equal(model(x), base(x))
    mark_only_lora_trainable(model, extra=())
    _train(model, x)
    ref = model(x)
    merge_lora(model)
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.k_proj.weight, base.k_proj.weight, atol=0, rtol=0)


def test_timm_vit_fused_qkv() -> None:
    pytest.importorskip("timm")
    model = create_model(
        "timm_vit", timm_name="vit_tiny_patch16_224", img_size=32, timm_kwargs={"depth": 2}
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    ref = model(x)
    names = apply_lora(model, r=4, alpha=4, targets=("q", "v"))
    assert names == [f"model.blocks.{i}.attn.qkv" for i in range(2)]
    assert torch.equal(model.eval()(x), ref)


def test_errors() -> None:
    with pytest.raises(ValueError, match="targets"):
        apply_lora(create_model("vit_test"), targets=("x",))
    with pytest.raises(ValueError, match="found no projection"):
        apply_lora(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="no LoRA layers"):
        mark_only_lora_trainable(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="divisible"):
        LoRALinear(4, 5, parts=3)
