"""LAFS (Sun et al., CVPR 2024) pretraining checkpoints and Part fViT fine-tuned checkpoints.

LAFS training files keep ``teacher``/``student`` networks (``module.``/``backbone.`` prefixes)
whose ViT uses the ``vit-pytorch`` layout (``patch_to_embedding``, ``transformer.layers``) and a
DINO head (``head.*``); Part fViT adds the landmark CNN (``stn``, ``output_layer``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from lafslib.models.convert._common import (
    ConversionError,
    Plan,
    Request,
    State,
    block_count,
    rename,
    skip,
    split,
    strip,
    unwrap,
)

__all__ = ["plan_lafs", "plan_partfvit", "lafs_vit"]

_LAFS_VIT_RULES = [
    (r"^pos_embedding$", "pos_embed"),
    (r"^patch_to_embedding\.", "patch_embed."),
    (r"^transformer\.layers\.(\d+)\.0\.fn\.norm\.", r"blocks.\1.norm1."),
    (r"^transformer\.layers\.(\d+)\.0\.fn\.fn\.to_qkv\.", r"blocks.\1.attn.qkv."),
    (r"^transformer\.layers\.(\d+)\.0\.fn\.fn\.to_out\.0\.", r"blocks.\1.attn.proj."),
    (r"^transformer\.layers\.(\d+)\.1\.fn\.norm\.", r"blocks.\1.norm2."),
    (r"^transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.0\.", r"blocks.\1.mlp.0."),
    (r"^transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.3\.", r"blocks.\1.mlp.2."),
    (r"^mlp_head\.0\.", "norm."),
]
_CLASSIFIER = {"loss.*": "margin-loss classifier (not part of the backbone)"}


def lafs_vit(state: State, transposed_patches: bool = True) -> tuple[State, dict[str, Any]]:
    """LAFS / Part fViT transformer keys -> lafslib fViT keys, and the inferred geometry.

    The release embeds patches with a Linear over ``(p1 p2 c)``; its landmark patches are
    sampled transposed (rows follow x), so the weight becomes a Conv2d kernel with the two
    spatial axes swapped (``transposed_patches``) to act on lafslib's upright patches.
    """
    out = rename(state, _LAFS_VIT_RULES)
    w = out.get("patch_embed.weight")
    if w is None or "cls_token" not in out:
        raise ConversionError(
            "not a LAFS/Part fViT transformer: 'patch_to_embedding.weight' or 'cls_token' missing"
        )
    dim = int(w.shape[0])
    patch = math.isqrt(int(w.shape[1]) // 3)
    kernel = w.reshape(dim, patch, patch, 3)
    out["patch_embed.weight"] = (
        kernel.permute(0, 3, 2, 1) if transposed_patches else kernel.permute(0, 3, 1, 2)
    ).contiguous()
    inner = int(out["blocks.0.attn.qkv.weight"].shape[0]) // 3
    grid = math.isqrt(int(out["pos_embed"].shape[1]) - 1)
    geometry = {
        "img_size": grid * patch,
        "patch_size": patch,
        "dim": dim,
        "depth": block_count(out, r"blocks\.(\d+)\."),
        "num_heads": max(1, inner // 64),
        "head_dim": 64 if inner >= 64 else inner,
        "mlp_dim": int(out["blocks.0.mlp.0.weight"].shape[0]),
        "qkv_bias": "blocks.0.attn.qkv.bias" in out,
        "attn_scale": dim**-0.5,
    }
    return out, geometry


def plan_lafs(obj: Mapping[str, Any], req: Request) -> Plan:
    """A LAFS teacher/student -> fViT (+ its DINO head)."""
    state = strip(unwrap(obj, req.branch, req.skipped), ("module.", "backbone."))
    head, state = split(state, "head.")
    state = skip(state, _CLASSIFIER, req.skipped)
    mapped, geometry = lafs_vit(state)
    return Plan(req.model_name or "fvit_base", geometry, mapped, head or None)


def plan_partfvit(obj: Mapping[str, Any], req: Request) -> Plan:
    """A Part fViT checkpoint -> :class:`~lafslib.models.part_fvit.PartFViT`."""
    state = strip(unwrap(obj, req.branch, req.skipped), ("module.", "backbone."))
    state = skip(state, _CLASSIFIER, req.skipped)
    trunk, state = split(state, "stn.")
    out_layer, state = split(state, "output_layer.")
    if not trunk or not out_layer:
        raise ConversionError("not a Part fViT checkpoint: no 'stn.*' / 'output_layer.*' keys")
    vit_state, geometry = lafs_vit(state)
    blocks = {int(m.group(1)) for k in trunk if (m := re.match(r"features\.(\d+)\.", k))}
    mapped = {f"vit.{k}": v for k, v in vit_state.items()}
    mapped.update({f"landmark_net.trunk.{k}": v for k, v in trunk.items()})
    mapped.update({f"landmark_net.head.{k}": v for k, v in out_layer.items()})
    kwargs = {
        "vit_kwargs": geometry,
        "num_landmarks": int(out_layer["1.weight"].shape[0]) // 2,
        "patch_size": geometry["patch_size"],
        "landmark_trunk": "lafs_large" if max(blocks) >= 15 else "lafs_small",
    }
    return Plan(req.model_name or "part_fvit_base", kwargs, mapped)
