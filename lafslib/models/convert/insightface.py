"""insightface ``arcface_torch``: IResNet ``.pth`` files and ``checkpoint_gpu_{rank}.pt``.

A ``backbone.pth`` is a plain state dict (``conv1``, ``layer1.0.bn1``, ..., ``fc``,
``features``); a training checkpoint keeps it under ``state_dict_backbone`` beside the PartialFC
classifier, optimizer and scheduler (skipped). Its ``mbf`` backbones go to
:mod:`~lafslib.models.convert.mobilefacenet`. Input: RGB in [-1, 1], the library's own.
"""

from __future__ import annotations

import math
import re
from typing import Any

from lafslib.models.convert._common import ConversionError, Plan, Request, State, short, strip

__all__ = ["plan_insightface", "iresnet_geometry", "iresnet_target"]


def iresnet_geometry(state: State) -> dict[str, Any]:
    """Blocks per stage, widths, stem width, embedding size and input size of IResNet keys."""
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


def iresnet_target(geometry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
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


def plan_insightface(state: State, req: Request) -> Plan:
    """IResNet (or ``mbf``) keys of arcface_torch, ``module.`` prefixes removed."""
    state = strip(state, ("module.",))
    if "layers.0.layers.0.weight" in state:
        from lafslib.models.convert.mobilefacenet import plan_mobilefacenet

        return plan_mobilefacenet(state, req)
    if "layer1.0.bn1.weight" not in state:
        from lafslib.models.convert.detect import suggest_formats

        raise ConversionError(
            "not an insightface IResNet or mbf: no 'layer1.0.bn1.weight' / "
            f"'layers.0.layers.0.weight' (found {short(list(state), 4)}); {suggest_formats(state)}"
        )
    name, kwargs = iresnet_target(iresnet_geometry(state))
    return Plan(req.model_name or name, kwargs, state)
