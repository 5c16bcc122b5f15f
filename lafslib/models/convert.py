"""Load checkpoints published by the reference projects into lafslib models.

Supported layouts (``fmt``):

- ``insightface``: arcface_torch IResNet ``.pth`` (``conv1``, ``layer1.0.bn1``, ..., ``features``).
- ``cvlface``: CVLFace ``model.pt`` / ``model.safetensors`` (wrapper prefix ``net.``): its
  AdaFace-style IR-18/50/101 (``input_layer``/``body``/``output_layer``), its insightface IResNet,
  and its ViTs / ViT-KP-RPE (same key names as the lafslib model given with ``model_name``).
- ``lafs``: LAFS pretraining checkpoints (``teacher``/``student`` with ``module.``/``backbone.``
  prefixes, DINO head with legacy ``weight_g``/``weight_v``) -> fViT (+ the DINO head).
- ``partfvit``: Part fViT / LAFS fine-tuned checkpoints (``stn``, ``output_layer``,
  ``transformer``) -> :class:`~lafslib.models.part_fvit.PartFViT`.
- ``dino``: DINO ViTs (hub weights or full checkpoints) -> lafslib ViT (+ the DINO head).
- ``timm`` / ``dinov2``: timm, original DINOv2 or CLIP ViT weights (FRoundation's backbones) ->
  :class:`~lafslib.models.timm_backbone.TimmViT` via timm's own key filter.

Files are read with ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed, as in
DINO/LAFS checkpoints) or safetensors; nothing in a checkpoint is executed. Every source key is
either loaded, listed as deliberately skipped (classifier of a margin loss, optimizer state,
...), or reported as unexpected; target keys without a source are reported as missing, and
shape mismatches are errors. Conversion is strict unless missing keys are named in
``allow_missing`` (glob patterns).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lafslib.errors import CheckpointError
from lafslib.models._registry import create_model, list_models
from lafslib.models.export import save_export
from lafslib.models.heads import DINOHead

__all__ = [
    "FORMATS",
    "ConversionError",
    "ConversionReport",
    "read_checkpoint",
    "convert_checkpoint",
    "convert_to_export",
    "dino_head_from_state",
    "load_dino_head",
]

FORMATS = ("cvlface", "lafs", "partfvit", "dino", "timm", "dinov2", "insightface")

State = dict[str, torch.Tensor]


class ConversionError(CheckpointError):
    """A checkpoint does not match the target model; the message lists the offending keys."""


@dataclass
class ConversionReport:
    """What happened to every key during a conversion."""

    source: str
    format: str
    model: str
    model_kwargs: dict[str, Any]
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    allowed_missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No missing (unless allowed), unexpected or mismatched keys."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """Human-readable multi-line summary."""
        lines = [
            f"{self.source} ({self.format}) -> {self.model} {json.dumps(self.model_kwargs)}",
            f"  loaded {len(self.loaded)} tensors",
        ]
        reasons: dict[str, list[str]] = {}
        for key, why in self.skipped.items():
            reasons.setdefault(why, []).append(key)
        for why, keys in reasons.items():
            lines.append(f"  skipped {len(keys)} ({why}): {_short(keys)}")
        lines += [f"  note: {n}" for n in self.notes]
        for label, keys in (
            ("missing (allowed)", self.allowed_missing),
            ("MISSING", self.missing),
            ("UNEXPECTED", self.unexpected),
            ("SHAPE MISMATCH", self.mismatched),
        ):
            if keys:
                lines.append(f"  {label} {len(keys)}: {_short(keys)}")
        return "\n".join(lines)


def _short(keys: list[str], n: int = 8) -> str:
    more = f" ... (+{len(keys) - n})" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# ----------------------------------------------------------------------------- reading


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint without executing code: safetensors, or ``torch.load(weights_only)``.

    Raises:
        FileNotFoundError: no such file.
        ConversionError: the pickle needs objects outside the safe allow-list.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "model.pt", "model.pth", "checkpoint.pth"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"no model.safetensors / model.pt / checkpoint.pth in {path}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return dict(load_file(str(path)))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ConversionError(
            f"{path}: cannot be read safely with torch.load(weights_only=True): {exc}"
        ) from exc
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def _is_state(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _unwrap(obj: Mapping[str, Any], branch: str, skipped: dict[str, str]) -> State:
    """Find the tensor dict inside a training checkpoint (``teacher``, ``state_dict``, ...)."""
    if _is_state(obj):
        return dict(obj)
    for key in (branch, "state_dict", "model", "model_state_dict", "module", "net"):
        if key in obj and isinstance(obj[key], Mapping):
            for other in obj:
                if other != key:
                    skipped[other] = "training state, not weights"
            return _unwrap(obj[key], branch, skipped)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConversionError(
            f"no tensor dict found in checkpoint (top-level keys: {_short(sorted(obj))}); "
            f"expected a state dict or a '{branch}'/'state_dict'/'model' entry"
        )
    for other in obj:
        if other not in tensors:
            skipped[other] = "not a tensor"
    return tensors


def _strip(state: State, prefixes: Iterable[str]) -> State:
    """Remove any of ``prefixes`` from the start of each key, repeatedly."""
    out: State = {}
    prefixes = tuple(prefixes)
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p) :], True
        out[k] = v
    return out


def _split(state: State, prefix: str) -> tuple[State, State]:
    inside = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    outside = {k: v for k, v in state.items() if not k.startswith(prefix)}
    return inside, outside


def _skip(state: State, patterns: Mapping[str, str], skipped: dict[str, str]) -> State:
    keep: State = {}
    for k, v in state.items():
        why = next((r for p, r in patterns.items() if fnmatch.fnmatch(k, p)), None)
        if why is None:
            keep[k] = v
        else:
            skipped[k] = why
    return keep


# ----------------------------------------------------------------------------- key maps


def _rename(state: State, rules: list[tuple[str, str]]) -> State:
    out: State = {}
    for k, v in state.items():
        for pat, rep in rules:
            new, n = re.subn(pat, rep, k)
            if n:
                k = new
                break
        out[k] = v
    return out


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


def _lafs_vit(state: State, transposed_patches: bool = True) -> tuple[State, dict[str, Any]]:
    """LAFS / Part fViT transformer keys -> lafslib fViT keys, and the inferred geometry.

    The release embeds patches with a Linear over ``(p1 p2 c)``; its landmark patches are
    sampled transposed (rows follow x), so the weight becomes a Conv2d kernel with the two
    spatial axes swapped (``transposed_patches``) to act on lafslib's upright patches.
    """
    out = _rename(state, _LAFS_VIT_RULES)
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
    depth = 1 + max(int(m.group(1)) for k in out if (m := re.match(r"blocks\.(\d+)\.", k)))
    inner = int(out["blocks.0.attn.qkv.weight"].shape[0]) // 3
    grid = math.isqrt(int(out["pos_embed"].shape[1]) - 1)
    geometry = {
        "img_size": grid * patch,
        "patch_size": patch,
        "dim": dim,
        "depth": depth,
        "num_heads": max(1, inner // 64),
        "head_dim": 64 if inner >= 64 else inner,
        "mlp_dim": int(out["blocks.0.mlp.0.weight"].shape[0]),
        "qkv_bias": "blocks.0.attn.qkv.bias" in out,
        "attn_scale": dim**-0.5,
    }
    return out, geometry


_TIMM_VIT_RULES = [
    (r"^patch_embed\.proj\.", "patch_embed."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"blocks.\1.mlp.0."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"blocks.\1.mlp.2."),
]


def _dino_vit(state: State) -> tuple[State, dict[str, Any]]:
    """DINO (timm-style) ViT keys -> lafslib ViT keys, and the inferred geometry."""
    out = _rename(state, _TIMM_VIT_RULES)
    if "patch_embed.weight" not in out or "pos_embed" not in out:
        raise ConversionError("not a DINO ViT: 'patch_embed.proj.weight' or 'pos_embed' missing")
    dim, _, patch, _ = out["patch_embed.weight"].shape
    depth = 1 + max(int(m.group(1)) for k in out if (m := re.match(r"blocks\.(\d+)\.", k)))
    grid = math.isqrt(int(out["pos_embed"].shape[1]) - 1)
    geometry = {
        "img_size": grid * int(patch),
        "patch_size": int(patch),
        "dim": int(dim),
        "depth": depth,
        "num_heads": max(1, int(dim) // 64),
        "mlp_dim": int(out["blocks.0.mlp.0.weight"].shape[0]),
        "qkv_bias": "blocks.0.attn.qkv.bias" in out,
    }
    return out, geometry


def _adaface_ir(state: State) -> tuple[State, dict[str, Any]]:
    """AdaFace/CVLFace IR (``input_layer``/``body``/``output_layer``) -> lafslib IResNet keys."""
    body = sorted({int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))})
    stages: list[list[int]] = []
    for i in body:
        in_ch = state[f"body.{i}.res_layer.0.weight"].shape[0]
        out_ch = state[f"body.{i}.res_layer.1.weight"].shape[0]
        if not stages or in_ch != out_ch:
            stages.append([i])
        else:
            stages[-1].append(i)
    if len(stages) != 4:
        raise ConversionError(f"expected 4 IR stages in 'body', found {len(stages)}")
    where = {b: (s + 1, j) for s, blocks in enumerate(stages) for j, b in enumerate(blocks)}
    res = {0: "bn1", 1: "conv1", 2: "bn2", 3: "prelu", 4: "conv2", 5: "bn3"}
    out: State = {}
    for k, v in state.items():
        if m := re.match(r"body\.(\d+)\.res_layer\.(\d)\.(.+)$", k):
            s, j = where[int(m.group(1))]
            out[f"layer{s}.{j}.{res[int(m.group(2))]}.{m.group(3)}"] = v
        elif m := re.match(r"body\.(\d+)\.shortcut_layer\.(\d)\.(.+)$", k):
            s, j = where[int(m.group(1))]
            out[f"layer{s}.{j}.downsample.{m.group(2)}.{m.group(3)}"] = v
        else:
            new = _rename(
                {k: v},
                [
                    (r"^input_layer\.0\.", "conv1."),
                    (r"^input_layer\.1\.", "bn1."),
                    (r"^input_layer\.2\.", "prelu."),
                    (r"^output_layer\.0\.", "bn2."),
                    (r"^output_layer\.3\.", "fc."),
                    (r"^output_layer\.4\.", "features."),
                ],
            )
            out.update(new)
    geometry = _iresnet_geometry(out)
    geometry.update(pool_shortcut=True, embedding_bn_affine="features.weight" in out)
    return out, geometry


def _iresnet_geometry(state: State) -> dict[str, Any]:
    layers, widths = [], []
    for s in range(1, 5):
        idx = {int(m.group(1)) for k in state if (m := re.match(rf"layer{s}\.(\d+)\.", k))}
        if not idx:
            raise ConversionError(f"not an IResNet: no 'layer{s}.*' keys")
        layers.append(max(idx) + 1)
        widths.append(int(state[f"layer{s}.0.conv1.weight"].shape[0]))
    fc = state["fc.weight"]
    side = math.isqrt(int(fc.shape[1]) // widths[-1])
    return {
        "layers": layers,
        "widths": widths,
        "stem_width": int(state["conv1.weight"].shape[0]),
        "embed_dim": int(fc.shape[0]),
        "img_size": side * 16,
    }


def _iresnet_target(geometry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Registered IResNet name for the geometry, with the non-default kwargs."""
    by_layers = {(2, 2, 2, 2): "iresnet18", (3, 4, 6, 3): "iresnet34", (3, 4, 14, 3): "iresnet50"}
    by_layers[(3, 13, 30, 3)] = "iresnet100"
    name = by_layers.get(tuple(geometry["layers"]), "iresnet50")
    kwargs = {k: v for k, v in geometry.items() if k != "layers"}
    if name == "iresnet50" and tuple(geometry["layers"]) != (3, 4, 14, 3):
        kwargs["layers"] = geometry["layers"]
    if kwargs.get("widths") == [64, 128, 256, 512]:
        kwargs.pop("widths")
    for key, value in (("stem_width", 64), ("embed_dim", 512), ("img_size", 112)):
        if kwargs.get(key) == value:
            kwargs.pop(key)
    if kwargs.get("pool_shortcut") is False:
        kwargs.pop("pool_shortcut")
    if kwargs.get("embedding_bn_affine") is True:
        kwargs.pop("embedding_bn_affine")
    return name, kwargs


def dino_head_from_state(state: State) -> DINOHead:
    """Build a :class:`DINOHead` from DINO/LAFS head weights (``mlp.*``, ``last_layer.*``).

    Legacy ``last_layer.weight_g`` / ``weight_v`` (``torch.nn.utils.weight_norm``) become the
    parametrization's ``original0`` / ``original1``. The head takes the weights' dtype (e.g.
    float64 stays float64); weights of mixed floating dtypes are an error.
    """
    state = _rename(
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
    _load_strict(head, state, "DINO head")
    return head


def _load_strict(module: nn.Module, state: State, what: str) -> None:
    target = module.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    bad = [k for k in set(state) & set(target) if state[k].shape != target[k].shape]
    if missing or unexpected or bad:
        raise ConversionError(
            f"{what}: missing {_short(missing)}; unexpected {_short(unexpected)}; "
            f"shape mismatch {_short(sorted(bad))}"
        )
    module.load_state_dict(state)


# ----------------------------------------------------------------------------- conversion


@dataclass
class _Plan:
    model: str
    kwargs: dict[str, Any]
    state: State
    head: State | None = None


_FIRST_CONVS = ("conv1.weight", "patch_embed.proj.weight", "patch_embed.weight")


def _fold_bgr(state: State) -> str:
    """Fold a BGR->RGB channel flip of the input into the first convolution (exact)."""
    for key in _FIRST_CONVS:
        w = state.get(key)
        if w is not None and w.ndim == 4 and w.shape[1] == 3:
            state[key] = w.flip(1).contiguous()
            return f"BGR input folded into {key} (the export takes RGB)"
    raise ConversionError(f"cannot fold BGR input: none of {_FIRST_CONVS} has 3 input channels")


def _cvlface_bgr(src: Path) -> bool:
    """Whether the CVLFace config beside ``src`` (``model.yaml``) declares BGR input."""
    import yaml

    folder, stem = (src, "model") if src.is_dir() else (src.parent, src.stem)
    config = folder / f"{stem}.yaml"
    if not config.is_file():
        return False
    data = yaml.safe_load(config.read_text()) or {}
    return str(data.get("color_space", "RGB")).upper() == "BGR"


def _plan_insightface(state: State, model_name: str | None) -> _Plan:
    state = _strip(state, ("module.",))
    name, kwargs = _iresnet_target(_iresnet_geometry(state))
    return _Plan(model_name or name, kwargs, state)


def _plan_cvlface(state: State, model_name: str | None) -> _Plan:
    state = _strip(state, ("module.", "model.", "net."))
    if any(k.startswith("input_layer.") for k in state):
        mapped, geometry = _adaface_ir(state)
        name, kwargs = _iresnet_target(geometry)
        return _Plan(model_name or name, kwargs, mapped)
    if "layer1.0.bn1.weight" in state:
        return _plan_insightface(state, model_name)
    state = _strip(state, ("vit.",))
    # CVLFace ViT-KP-RPE keeps its KP-RPE projection on the model; lafslib in ``kprpe``
    state = _rename(state, [(r"^keypoint_linear\.", "kprpe.linear.")])
    if model_name is None:
        raise ConversionError(
            "CVLFace ViT checkpoints need --model NAME (a lafslib ViT in CVLFace's key layout; "
            f"registered ViTs: {_short(list_models('*vit*'), 20)})"
        )
    return _Plan(model_name, {}, state)


def _plan_lafs(obj: Mapping[str, Any], branch: str, model_name: str | None, skipped) -> _Plan:
    state = _strip(_unwrap(obj, branch, skipped), ("module.", "backbone."))
    head, state = _split(state, "head.")
    state = _skip(state, {"loss.*": "margin-loss classifier (not part of the backbone)"}, skipped)
    mapped, geometry = _lafs_vit(state)
    return _Plan(model_name or "fvit_base", geometry, mapped, head or None)


def _plan_partfvit(obj: Mapping[str, Any], branch: str, model_name: str | None, skipped) -> _Plan:
    state = _strip(_unwrap(obj, branch, skipped), ("module.", "backbone."))
    state = _skip(state, {"loss.*": "margin-loss classifier (not part of the backbone)"}, skipped)
    trunk, state = _split(state, "stn.")
    out_layer, state = _split(state, "output_layer.")
    if not trunk or not out_layer:
        raise ConversionError("not a Part fViT checkpoint: no 'stn.*' / 'output_layer.*' keys")
    vit_state, geometry = _lafs_vit(state)
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
    return _Plan(model_name or "part_fvit_base", kwargs, mapped)


def _plan_dino(obj: Mapping[str, Any], branch: str, model_name: str | None, skipped) -> _Plan:
    state = _strip(_unwrap(obj, branch, skipped), ("module.", "backbone."))
    head, state = _split(state, "head.")
    mapped, geometry = _dino_vit(state)
    return _Plan(model_name or "vit_base", geometry, mapped, head or None)


def _dinov2_name(state: State) -> str:
    """timm name of a DINOv2 checkpoint from its width (and register tokens)."""
    if "cls_token" not in state:
        raise ConversionError("not a DINOv2 ViT: no 'cls_token'; pass --model TIMM_NAME")
    dim = int(state["cls_token"].shape[-1])
    sizes = {384: "small", 768: "base", 1024: "large", 1536: "giant"}
    if dim not in sizes:
        raise ConversionError(f"no DINOv2 size has width {dim}; pass --model TIMM_NAME")
    regs = "_reg4" if "register_tokens" in state else ""
    return f"vit_{sizes[dim]}_patch14{regs}_dinov2"


def _plan_timm(
    state: State,
    model_name: str | None,
    fmt: str,
    img_size: int | None,
    timm_kwargs: Mapping[str, Any] | None,
    skipped: dict[str, str],
) -> _Plan:
    state = _strip(state, ("module.",))
    if model_name is None:
        if fmt != "dinov2":
            raise ConversionError(
                "--format timm needs --model TIMM_NAME (e.g. vit_base_patch16_224)"
            )
        model_name = _dinov2_name(state)
    from timm.models.vision_transformer import checkpoint_filter_fn

    kwargs: dict[str, Any] = {"timm_name": model_name, "img_size": img_size or 112}
    if timm_kwargs:
        kwargs["timm_kwargs"] = dict(timm_kwargs)
    wrapper = create_model("timm_vit", **kwargs)
    filtered = checkpoint_filter_fn(dict(state), wrapper.model)
    for key in state:
        if key not in filtered:
            skipped[key] = "renamed, merged or dropped by timm's checkpoint_filter_fn"
    filtered = _skip(filtered, {"head.*": "classifier head (the backbone has none)"}, skipped)
    return _Plan("timm_vit", kwargs, {f"model.{k}": v for k, v in filtered.items()})


def convert_checkpoint(
    src: str | os.PathLike[str],
    fmt: str,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    allow_missing: Iterable[str] = (),
    branch: str = "teacher",
    img_size: int | None = None,
    bgr: bool | None = None,
    strict: bool = True,
) -> tuple[nn.Module, ConversionReport, DINOHead | None]:
    """Load a reference checkpoint into a lafslib model.

    Args:
        src: checkpoint file (or a folder with ``model.safetensors`` / ``model.pt``).
        fmt: one of :data:`FORMATS`.
        model_name: registry name of the target (timm name for ``timm``/``dinov2``). When
            omitted, the target and its geometry (IResNet depth and widths, fViT / DINO ViT
            size) are inferred from the keys; when given, its registered defaults are used.
        model_kwargs: factory keyword arguments overriding the inferred ones.
        allow_missing: glob patterns of target keys that may stay at their initial values.
        branch: ``"teacher"`` or ``"student"`` for DINO/LAFS training checkpoints.
        img_size: input size of ``timm``/``dinov2`` models (position embeddings are resampled).
        bgr: the checkpoint expects BGR input; the flip is folded into the first convolution so
            the result takes RGB. ``None``: read ``color_space`` from CVLFace's ``model.yaml``
            beside the checkpoint (``cvlface``), else RGB.
        strict: raise :class:`ConversionError` unless every key is accounted for.

    Returns:
        (model in eval mode, report, DINO head if the checkpoint has one).
    """
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    obj = read_checkpoint(src)
    skipped: dict[str, str] = {}
    if fmt in ("lafs", "partfvit", "dino"):
        planner = {"lafs": _plan_lafs, "partfvit": _plan_partfvit, "dino": _plan_dino}[fmt]
        plan = planner(obj, branch, model_name, skipped)
    else:
        state = _unwrap(obj, branch, skipped)
        if fmt == "insightface":
            plan = _plan_insightface(state, model_name)
        elif fmt == "cvlface":
            plan = _plan_cvlface(state, model_name)
        else:
            timm_kwargs = (model_kwargs or {}).get("timm_kwargs")
            plan = _plan_timm(state, model_name, fmt, img_size, timm_kwargs, skipped)
    # Inferred geometry applies when the target is inferred too; a named target keeps its
    # registered defaults (plus model_kwargs), so a mismatching checkpoint is reported.
    notes: list[str] = []
    if bgr is None:
        bgr = fmt == "cvlface" and _cvlface_bgr(Path(src))
    if bgr:
        notes.append(_fold_bgr(plan.state))
    kwargs = dict(plan.kwargs) if model_name is None or plan.model == "timm_vit" else {}
    for key, value in (model_kwargs or {}).items():
        if key == "vit_kwargs" and isinstance(value, Mapping):
            kwargs["vit_kwargs"] = {**kwargs.get("vit_kwargs", {}), **value}
        else:
            kwargs[key] = value
    try:
        model = create_model(plan.model, **kwargs)
    except TypeError as exc:
        raise ConversionError(
            f"cannot build '{plan.model}' with {kwargs}: {exc}; pass --model / --model-arg"
        ) from exc
    report = ConversionReport(str(src), fmt, plan.model, kwargs, skipped=skipped, notes=notes)
    target = model.state_dict()
    patterns = list(allow_missing)
    for key in sorted(set(target) - set(plan.state)):
        if any(fnmatch.fnmatch(key, p) for p in patterns):
            report.allowed_missing.append(key)
        else:
            report.missing.append(key)
    report.unexpected = sorted(set(plan.state) - set(target))
    for key in sorted(set(plan.state) & set(target)):
        if plan.state[key].shape != target[key].shape:
            report.mismatched.append(
                f"{key}: checkpoint {tuple(plan.state[key].shape)} vs model {tuple(target[key].shape)}"
            )
        else:
            report.loaded.append(key)
    if strict and not report.ok:
        raise ConversionError(
            report.summary() + "\n(name intentionally untrained keys with --allow-missing PATTERN, "
            "or choose the target with --model / --model-arg)"
        )
    model.load_state_dict({k: plan.state[k] for k in report.loaded}, strict=False)
    head = dino_head_from_state(plan.head) if plan.head else None
    return model.eval(), report, head


def convert_to_export(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    fmt: str,
    **kwargs: Any,
) -> tuple[Path, ConversionReport]:
    """Convert ``src`` and write an export folder (``model.safetensors`` + ``model.json``).

    A DINO head found in the checkpoint is written beside it as ``dino_head.safetensors`` +
    ``dino_head.json`` (read back with :func:`load_dino_head`).
    """
    model, report, head = convert_checkpoint(src, fmt, **kwargs)
    out = save_export(model, out_dir, converted_from={"source": str(src), "format": fmt})
    if head is not None:
        state = {k: v.contiguous() for k, v in head.state_dict().items()}
        save_file(state, str(Path(out) / "dino_head.safetensors"))
        (Path(out) / "dino_head.json").write_text(json.dumps(_head_kwargs(head), indent=2) + "\n")
    return out, report


def _head_kwargs(head: DINOHead) -> dict[str, Any]:
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
    """The DINO head written by :func:`convert_to_export` into an export folder."""
    folder = Path(folder)
    meta, weights = folder / "dino_head.json", folder / "dino_head.safetensors"
    if not meta.is_file() or not weights.is_file():
        raise FileNotFoundError(f"no dino_head.json / dino_head.safetensors in {folder}")
    head = DINOHead(**json.loads(meta.read_text()))
    _load_strict(head, dict(load_file(str(weights))), str(weights))
    return head
