"""DINO (Caron et al., ICCV 2021) ViTs and DINO / LAFS projection heads.

DINO's hub weights and full checkpoints (``teacher``/``student``) use timm-style ViT keys; their
heads (``head.mlp.*``, ``head.last_layer.*``) become a :class:`~lafslib.models.heads.DINOHead`,
written beside an export as ``dino_head.safetensors`` + ``dino_head.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from lafslib.models.convert._common import (
    ConversionError,
    Plan,
    Request,
    State,
    block_count,
    load_strict,
    rename,
    split,
    strip,
    unwrap,
)
from lafslib.models.heads import DINOHead

__all__ = ["plan_dino", "dino_head_from_state", "dino_head_kwargs", "load_dino_head"]

_TIMM_VIT_RULES = [
    (r"^patch_embed\.proj\.", "patch_embed."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"blocks.\1.mlp.0."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"blocks.\1.mlp.2."),
]


def _dino_vit(state: State) -> tuple[State, dict[str, Any]]:
    out = rename(state, _TIMM_VIT_RULES)
    if "patch_embed.weight" not in out or "pos_embed" not in out:
        raise ConversionError("not a DINO ViT: 'patch_embed.proj.weight' or 'pos_embed' missing")
    dim, _, patch, _ = out["patch_embed.weight"].shape
    grid = math.isqrt(int(out["pos_embed"].shape[1]) - 1)
    geometry = {
        "img_size": grid * int(patch),
        "patch_size": int(patch),
        "dim": int(dim),
        "depth": block_count(out, r"blocks\.(\d+)\."),
        "num_heads": max(1, int(dim) // 64),
        "mlp_dim": int(out["blocks.0.mlp.0.weight"].shape[0]),
        "qkv_bias": "blocks.0.attn.qkv.bias" in out,
    }
    return out, geometry


def plan_dino(obj: Mapping[str, Any], req: Request) -> Plan:
    """A DINO ViT (hub weights or a teacher/student checkpoint) -> lafslib ViT (+ head)."""
    state = strip(unwrap(obj, req.branch, req.skipped), ("module.", "backbone."))
    head, state = split(state, "head.")
    mapped, geometry = _dino_vit(state)
    return Plan(req.model_name or "vit_base", geometry, mapped, head or None)


def dino_head_from_state(state: State) -> DINOHead:
    """Build a :class:`DINOHead` from DINO/LAFS head weights (``mlp.*``, ``last_layer.*``).

    Legacy ``last_layer.weight_g`` / ``weight_v`` (``torch.nn.utils.weight_norm``) become the
    parametrization's ``original0`` / ``original1``. The head takes the weights' dtype (e.g.
    float64 stays float64); weights of mixed floating dtypes are an error.
    """
    state = rename(
        state,
        [
            (r"^last_layer\.weight_g$", "last_layer.parametrizations.weight.original0"),
            (r"^last_layer\.weight_v$", "last_layer.parametrizations.weight.original1"),
        ],
    )
    v = state.get("last_layer.parametrizations.weight.original1")
    if v is None:
        raise ConversionError("DINO head without last_layer.weight_v / parametrized weight")
    linears = sorted(
        int(m.group(1))
        for k in state
        if (m := re.match(r"mlp\.(\d+)\.weight$", k))
        if state[k].ndim == 2
    )
    if not linears and "mlp.weight" in state:
        state = {
            k.replace("mlp.", "mlp.0.", 1) if k.startswith("mlp.") else k: t
            for k, t in state.items()
        }
        linears = [0]
    dtypes = sorted({str(t.dtype) for t in state.values() if t.is_floating_point()})
    if len(dtypes) > 1:
        raise ConversionError(f"DINO head weights mix dtypes {dtypes}: cast them to one first")
    first = state[f"mlp.{linears[0]}.weight"]
    use_bn = any(re.match(r"mlp\.\d+\.running_mean$", k) for k in state)
    head = DINOHead(
        in_dim=int(first.shape[1]),
        out_dim=int(v.shape[0]),
        hidden_dim=int(first.shape[0]) if len(linears) > 1 else 2048,
        bottleneck_dim=int(v.shape[1]),
        num_layers=len(linears),
        use_bn=use_bn,
        norm_last_layer=False,
    ).to(v.dtype)
    load_strict(head, state, "DINO head")
    return head


def dino_head_kwargs(head: DINOHead) -> dict[str, Any]:
    """The :class:`DINOHead` constructor arguments that rebuild ``head``."""
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    last = head.last_layer
    return {
        "in_dim": linears[0].in_features,
        "out_dim": last.out_features,
        "hidden_dim": linears[0].out_features if len(linears) > 1 else 2048,
        "bottleneck_dim": last.in_features,
        "num_layers": len(linears),
        "use_bn": any(isinstance(m, nn.BatchNorm1d) for m in head.mlp),
        "norm_last_layer": False,
    }


def load_dino_head(folder: str | os.PathLike[str]) -> DINOHead:
    """The DINO head written by :func:`~lafslib.models.convert.convert_to_export`."""
    folder = Path(folder)
    meta, weights = folder / "dino_head.json", folder / "dino_head.safetensors"
    if not meta.is_file() or not weights.is_file():
        raise FileNotFoundError(f"no dino_head.json / dino_head.safetensors in {folder}")
    head = DINOHead(**json.loads(meta.read_text()))
    load_strict(head, dict(load_file(str(weights))), str(weights))
    return head
