"""LoRA and rsLoRA adapters for the linear projections of attention.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) freezes a
linear layer ``W`` and learns a low-rank update: ``y = W x + b + scale * B A dropout(x)`` with
``A`` (r, in) random and ``B`` (out, r) zero-initialised, so the adapted model equals the
original at initialisation. ``scale = alpha / r``; rsLoRA (Kalajdzievski, "A Rank Stabilization
Scaling Factor for Fine-Tuning with LoRA", 2023) uses ``alpha / sqrt(r)``, which keeps the update
magnitude stable as the rank grows. FRoundation (Chettaoui et al., 2024) adapts DINOv2 / CLIP
ViTs to faces with rsLoRA (r = 16, alpha = 16) on the query and value projections.

Vision transformers usually compute q, k and v with one fused ``qkv`` linear whose output rows
are ``[q; k; v]``. :class:`LoRALinear` with ``parts=3`` splits the output into three equal
chunks and adapts only the chosen ones, so q/v-only LoRA on a fused projection leaves the key
rows of the merged weight untouched.

Example:
    >>> model = create_model("vit_test")
    >>> names = apply_lora(model, r=16, alpha=16, dropout=0.1, targets=("q", "v"), rs=True)
    >>> mark_only_lora_trainable(model, extra=("head",))
    >>> ...  # train
    >>> merge_lora(model)  # plain nn.Linear modules with W + scale * B @ A, ready to export
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LoRALinear",
    "apply_lora",
    "lora_state_dict",
    "mark_only_lora_trainable",
    "merge_lora",
    "unmerge_lora",
]

PART_NAMES = ("q", "k", "v")
# Module names (last component) of attention projections, by role.
_ROLE_NAMES = {
    "qkv": {"qkv", "to_qkv", "qkv_proj", "in_proj", "wqkv"},
    "q": {"q", "q_proj", "query", "to_q", "wq"},
    "k": {"k", "k_proj", "key", "to_k", "wk"},
    "v": {"v", "v_proj", "value", "to_v", "wv"},
    "o": {"out_proj", "o_proj", "to_out", "wo"},
}
DEFAULT_PATTERN = (
    r"(^|\.)(" + "|".join(sorted(set().union(*_ROLE_NAMES.values()))) + r")$"
    r"|(^|\.)(attn|attention)\.proj$"
)


def lora_scale(r: int, alpha: float, rs: bool = False) -> float:
    """``alpha / r`` (LoRA) or ``alpha / sqrt(r)`` (rsLoRA)."""
    return alpha / math.sqrt(r) if rs else alpha / r


class LoRALinear(nn.Linear):
    """A linear layer with a (rs)LoRA update on some or all of its output chunks.

    It is an ``nn.Linear`` (same ``weight`` / ``bias`` parameters and state-dict names) plus
    ``lora_A`` (P, r, in) and ``lora_B`` (P, out / parts, r), one pair per adapted chunk.

    Args:
        in_features: input size.
        out_features: output size (divisible by ``parts``).
        bias: whether the layer has a bias.
        r: LoRA rank.
        alpha: LoRA alpha; ``scale = alpha / r`` (``alpha / sqrt(r)`` with ``rs``).
        dropout: dropout on the LoRA branch's input.
        rs: rank-stabilised scaling (rsLoRA).
        parts: number of equal output chunks (3 for a fused qkv projection, else 1).
        adapt: indices of the adapted chunks (default: all).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        r: int = 16,
        alpha: float = 16.0,
        dropout: float = 0.0,
        rs: bool = False,
        parts: int = 1,
        adapt: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        if out_features % parts:
            raise ValueError(f"out_features={out_features} is not divisible by parts={parts}")
        adapt = tuple(range(parts)) if adapt is None else tuple(sorted(set(adapt)))
        if not adapt or not all(0 <= i < parts for i in adapt):
            raise ValueError(f"adapt must name chunks in 0..{parts - 1}, got {adapt}")
        self.r, self.alpha, self.rs = r, float(alpha), rs
        self.scale = lora_scale(r, alpha, rs)
        self.parts, self.adapt = parts, adapt
        self.part_features = out_features // parts
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(
            torch.empty(len(adapt), r, in_features, device=device, dtype=dtype)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(len(adapt), self.part_features, r, device=device, dtype=dtype)
        )
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A as nn.Linear's default (Kaiming uniform), B = 0: the update starts at zero."""
        for a in self.lora_A:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        r: int = 16,
        alpha: float = 16.0,
        dropout: float = 0.0,
        rs: bool = False,
        parts: int = 1,
        adapt: Sequence[int] | None = None,
    ) -> LoRALinear:
        """Wrap an existing linear: its ``weight`` / ``bias`` parameters are shared, not copied."""
        w = linear.weight
        new = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            r,
            alpha,
            dropout,
            rs,
            parts,
            adapt,
            device=w.device,
            dtype=w.dtype,
        )
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        return new

    def delta_weight(self) -> torch.Tensor:
        """The update ``scale * B @ A`` as an (out, in) matrix (zero rows for unadapted chunks)."""
        update = torch.bmm(self.lora_B, self.lora_A) * self.scale  # (P, out/parts, in)
        return self._all_parts(update, 0).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., in) -> (..., out)."""
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        h = torch.einsum("...i,pri->...pr", self.lora_dropout(x), self.lora_A.to(x.dtype))
        d = torch.einsum("...pr,por->...po", h, self.lora_B.to(x.dtype)) * self.scale
        return out + self._all_parts(d, -2).flatten(-2).to(out.dtype)

    def _all_parts(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """``t`` with its P adapted chunks along ``dim`` spread over all ``parts`` chunks (zeros
        for the unadapted ones)."""
        if len(self.adapt) == self.parts:
            return t
        shape = list(t.shape)
        shape[dim] = self.parts
        index = torch.tensor(self.adapt, device=t.device)
        return t.new_zeros(shape).index_copy(dim, index, t)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into ``weight`` (forward then skips the LoRA branch)."""
        if not self.merged:
            self.weight.add_(self.delta_weight().to(self.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from ``weight`` again."""
        if self.merged:
            self.weight.sub_(self.delta_weight().to(self.weight.dtype))
            self.merged = False

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding the merged weight (this module is merged first)."""
        self.merge()
        w = self.weight
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        linear.weight = self.weight
        linear.bias = self.bias
        linear.train(self.training)
        return linear

    def extra_repr(self) -> str:
        adapt = ",".join(PART_NAMES[i] if self.parts == 3 else str(i) for i in self.adapt)
        return (
            f"{super().extra_repr()}, r={self.r}, alpha={self.alpha}, rs={self.rs}, "
            f"scale={self.scale:.4g}, parts={self.parts}, adapt={adapt}, merged={self.merged}"
        )


def _role(name: str) -> str | None:
    last = name.rsplit(".", 1)[-1]
    for role, names in _ROLE_NAMES.items():
        if last in names:
            return role
    if last == "proj" and name.rsplit(".", 2)[-2:-1] in (["attn"], ["attention"]):
        return "o"
    return None


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_lora(
    model: nn.Module,
    r: int = 16,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] = ("q", "v"),
    rs: bool = True,
    module_pattern: str | None = None,
) -> list[str]:
    """Wrap the attention projections of ``model`` with (rs)LoRA, in place.

    Linears whose module name matches ``module_pattern`` (``re.search``; default: the usual
    projection names such as ``qkv``, ``q_proj``, ``query``, ``out_proj`` and ``attn.proj``)
    are adapted by role: a fused ``qkv`` gets LoRA on the chunks in ``targets``; separate
    ``q`` / ``k`` / ``v`` / output (``o``) projections are wrapped when their role is in
    ``targets``. Linears matched by a custom pattern whose role is unknown are adapted whole.

    Args:
        model: the backbone (modified in place).
        r: rank.
        alpha: LoRA alpha.
        dropout: dropout on the LoRA branch's input.
        targets: subset of ``("q", "k", "v", "o")``.
        rs: rsLoRA scaling ``alpha / sqrt(r)`` (else ``alpha / r``).
        module_pattern: regular expression over full module names.

    Returns:
        The names of the wrapped modules.

    Raises:
        ValueError: on unknown targets, or when nothing matched.
    """
    targets = tuple(targets)
    unknown = set(targets) - {"q", "k", "v", "o"}
    if unknown or not targets:
        raise ValueError(f"LoRA targets must be a non-empty subset of q, k, v, o; got {targets}")
    pattern = re.compile(module_pattern or DEFAULT_PATTERN)
    found = [
        (name, m)
        for name, m in model.named_modules()
        if name and type(m) is nn.Linear and pattern.search(name)
    ]
    wrapped = []
    for name, linear in found:
        role = _role(name)
        if role == "qkv":
            adapt = [PART_NAMES.index(t) for t in targets if t in PART_NAMES]
            if not adapt:
                continue
            new = LoRALinear.from_linear(linear, r, alpha, dropout, rs, parts=3, adapt=adapt)
        elif role is None or role in targets:
            new = LoRALinear.from_linear(linear, r, alpha, dropout, rs)
        else:
            continue
        _set_module(model, name, new)
        wrapped.append(name)
    if not wrapped:
        candidates = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:8]
        raise ValueError(
            f"apply_lora found no projection for targets {targets} matching "
            f"{pattern.pattern!r} in {type(model).__name__}; linear layers include {candidates}"
        )
    return wrapped


def lora_modules(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """The (name, module) pairs of all LoRA layers in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def mark_only_lora_trainable(model: nn.Module, extra: Sequence[str] = ("head",)) -> int:
    """Freeze everything except LoRA parameters and the parameters under ``extra`` prefixes.

    Args:
        model: a model with LoRA layers.
        extra: module-name prefixes that stay trainable too (e.g. the embedding ``head``).

    Returns:
        The number of trainable parameter elements.
    """
    lora = {id(p) for _, m in lora_modules(model) for p in (m.lora_A, m.lora_B)}
    if not lora:
        raise ValueError(
            "mark_only_lora_trainable: the model has no LoRA layers (apply_lora first)"
        )
    total = 0
    for name, p in model.named_parameters():
        keep = id(p) in lora or any(name == e or name.startswith(e + ".") for e in extra)
        p.requires_grad_(keep)
        total += p.numel() if keep else 0
    return total


def merge_lora(model: nn.Module, unwrap: bool = True) -> nn.Module:
    """Merge every LoRA update into its weight, in place.

    Args:
        model: a model with LoRA layers.
        unwrap: replace each LoRA layer by a plain ``nn.Linear`` (its state dict then matches
            the original model's, e.g. for export); else keep it merged but unmergeable.

    Returns:
        ``model``.
    """
    for name, m in lora_modules(model):
        if unwrap:
            _set_module(model, name, m.to_linear())
        else:
            m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo :func:`merge_lora` with ``unwrap=False``, in place; returns ``model``."""
    for _, m in lora_modules(model):
        m.unmerge()
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors (``<module>.lora_A`` / ``<module>.lora_B``) of ``model``."""
    return {
        k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B")
    }
