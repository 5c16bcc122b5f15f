"""AdaFace (Kim et al., CVPR 2022) and CVLFace IR backbones.

AdaFace trains with PyTorch Lightning: its ``.ckpt`` keeps the backbone under ``state_dict`` as
``model.*`` (``input_layer``, ``body.N.res_layer``, ``output_layer``) beside the AdaFace margin
head ``head.kernel`` (+ its ``t``/``batch_mean``/``batch_std`` buffers), which is left out and
listed. AdaFace models take BGR in [-1, 1]; the flip is folded into the first convolution.
CVLFace wraps the same IR layout (and its ViTs) as ``net.*``, RGB unless its ``model.yaml``
says ``color_space: BGR``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lafslib.models._registry import list_models
from lafslib.models.convert._common import (
    ConversionError,
    Plan,
    Request,
    State,
    rename,
    short,
    skip,
    split,
    strip,
    unwrap,
)
from lafslib.models.convert.insightface import iresnet_geometry, iresnet_target

__all__ = ["plan_adaface", "plan_cvlface", "adaface_ir", "cvlface_bgr"]

_RES = {0: "bn1", 1: "conv1", 2: "bn2", 3: "prelu", 4: "conv2", 5: "bn3"}
_IR_RULES = [
    (r"^input_layer\.0\.", "conv1."),
    (r"^input_layer\.1\.", "bn1."),
    (r"^input_layer\.2\.", "prelu."),
    (r"^output_layer\.0\.", "bn2."),
    (r"^output_layer\.3\.", "fc."),
    (r"^output_layer\.4\.", "features."),
]


def _stages(state: State) -> dict[int, tuple[int, int]]:
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
    return {b: (s + 1, j) for s, blocks in enumerate(stages) for j, b in enumerate(blocks)}


def adaface_ir(state: State) -> tuple[State, dict[str, Any]]:
    """AdaFace/CVLFace IR (``input_layer``/``body``/``output_layer``) -> lafslib IResNet keys."""
    where = _stages(state)
    out: State = {}
    for k, v in state.items():
        if m := re.match(r"body\.(\d+)\.res_layer\.(\d)\.(.+)$", k):
            s, j = where[int(m.group(1))]
            out[f"layer{s}.{j}.{_RES[int(m.group(2))]}.{m.group(3)}"] = v
        elif m := re.match(r"body\.(\d+)\.shortcut_layer\.(\d)\.(.+)$", k):
            s, j = where[int(m.group(1))]
            out[f"layer{s}.{j}.downsample.{m.group(2)}.{m.group(3)}"] = v
        else:
            out.update(rename({k: v}, _IR_RULES))
    geometry = iresnet_geometry(out)
    geometry.update(pool_shortcut=True, embedding_bn_affine="features.weight" in out)
    return out, geometry


def _ir_plan(state: State, req: Request, bgr: bool) -> Plan:
    mapped, geometry = adaface_ir(state)
    name, kwargs = iresnet_target(geometry)
    return Plan(req.model_name or name, kwargs, mapped, bgr=bgr)


def plan_adaface(obj: Mapping[str, Any], req: Request) -> Plan:
    """An AdaFace Lightning ``.ckpt`` (or its bare backbone state dict) -> IResNet, BGR."""
    state = unwrap(obj, None, req.skipped)
    state = strip(state, ("module.",))
    backbone, rest = split(state, "model.")
    if not backbone:
        backbone, rest = rest, {}
    head = "AdaFace margin head (classifier, not part of the backbone)"
    rest = skip(rest, {"head.*": head}, req.skipped)
    if rest:
        raise ConversionError(
            f"AdaFace checkpoint: keys outside 'model.*' and 'head.*': {short(sorted(rest))}"
        )
    if "input_layer.0.weight" not in backbone:
        from lafslib.models.convert.detect import suggest_formats

        raise ConversionError(
            "not an AdaFace IR backbone: no 'model.input_layer.0.weight' (found "
            f"{short(list(backbone), 4)}); {suggest_formats(backbone)}"
        )
    return _ir_plan(backbone, req, bgr=True)


def cvlface_bgr(src: Path) -> bool:
    """Whether the CVLFace config beside ``src`` (``model.yaml``) declares BGR input."""
    import yaml

    folder, stem = (src, "model") if src.is_dir() else (src.parent, src.stem)
    config = folder / f"{stem}.yaml"
    if not config.is_file():
        return False
    data = yaml.safe_load(config.read_text()) or {}
    return str(data.get("color_space", "RGB")).upper() == "BGR"


def plan_cvlface(state: State, req: Request, src: Path) -> Plan:
    """CVLFace ``model.pt`` (``net.`` prefix): its IR, its insightface IResNet, or its ViTs."""
    state = strip(state, ("module.", "model.", "net."))
    bgr = cvlface_bgr(src)
    if any(k.startswith("input_layer.") for k in state):
        return _ir_plan(state, req, bgr)
    if "layer1.0.bn1.weight" in state:
        name, kwargs = iresnet_target(iresnet_geometry(state))
        return Plan(req.model_name or name, kwargs, state, bgr=bgr)
    state = strip(state, ("vit.",))
    if "cls_token" not in state and "patch_embed.proj.weight" not in state:
        from lafslib.models.convert.detect import suggest_formats

        raise ConversionError(
            "not a CVLFace IR or ViT checkpoint (no 'input_layer.*', 'layer1.*', 'cls_token' or "
            f"'patch_embed.proj.weight'; found {short(list(state), 4)}); "
            f"{suggest_formats(state)}"
        )
    # CVLFace ViT-KP-RPE keeps its KP-RPE projection on the model; lafslib in ``kprpe``
    state = rename(state, [(r"^keypoint_linear\.", "kprpe.linear.")])
    if req.model_name is None:
        raise ConversionError(
            "CVLFace ViT checkpoints need --model NAME (a lafslib ViT in CVLFace's key layout; "
            f"registered ViTs: {short(list_models('*vit*'), 20)})"
        )
    return Plan(req.model_name, {}, state, bgr=bgr)
