"""MobileFaceNet checkpoints: the paper's 128-d layout and insightface's ``mbf``.

- ``conv1``, ``dw_conv``, ``features.N.conv``, ``conv2``, ``gdconv``, ``conv3``, ``bn``: the
  paper's network as widely published for MS1M (e.g. foamliu/MobileFaceNet), trained on RGB in
  [0, 1] with the ImageNet mean/std; the result keeps that normalisation inside the model
  (``input_mean``/``input_std``), so it takes the library's [-1, 1] input.
- ``layers.N.layers...``, ``conv_sep``, ``features.layers``: insightface ``mbf`` / ``mbf_large``
  (``backbone.pth`` or ``state_dict_backbone``), RGB in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lafslib.models.convert._common import (
    ConversionError,
    Plan,
    Request,
    State,
    block_count,
    short,
    strip,
    unwrap,
)
from lafslib.models.convert.detect import suggest_formats
from lafslib.models.mobilefacenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["plan_mobilefacenet"]


def plan_mobilefacenet(obj: Mapping[str, Any], req: Request) -> Plan:
    """Either MobileFaceNet layout -> ``mobilefacenet`` / ``mobilefacenet_mbf(_large)``."""
    state = strip(unwrap(obj, None, req.skipped), ("module.",))
    if "layers.0.layers.0.weight" in state:
        return _plan_mbf(state, req)
    if "conv1.0.weight" in state and "gdconv.depthwise.weight" in state:
        return _plan_paper(state, req)
    raise ConversionError(
        "not a MobileFaceNet: no 'conv1.0.weight' + 'gdconv.depthwise.weight' (paper layout) or "
        f"'layers.0.layers.0.weight' (insightface mbf); found {short(list(state), 4)}; "
        f"{suggest_formats(state)}"
    )


def _plan_paper(state: State, req: Request) -> Plan:
    """The paper's stages (strides are not in the weights; other stage layouts are reported as
    missing or mis-shaped keys)."""
    kwargs: dict[str, Any] = {
        "embed_dim": int(state["conv3.weight"].shape[0]),
        "input_mean": list(IMAGENET_MEAN),
        "input_std": list(IMAGENET_STD),
    }
    if kwargs["embed_dim"] == 128:
        kwargs.pop("embed_dim")
    return Plan(
        req.model_name or "mobilefacenet", kwargs, state, mean=IMAGENET_MEAN, std=IMAGENET_STD
    )


def _plan_mbf(state: State, req: Request) -> Plan:
    residual = [block_count(state, rf"layers\.{i}\.layers\.(\d+)\.layers\.") for i in (3, 5, 7)]
    first = block_count(state, r"layers\.1\.layers\.(\d+)\.layers\.") or 1
    blocks = [first, *residual]
    scale = int(state["layers.0.layers.0.weight"].shape[0]) // 64
    embed_dim = int(state["features.layers.2.weight"].shape[0])
    large = blocks == [2, 8, 12, 4] and scale == 4
    name = "mobilefacenet_mbf_large" if large else "mobilefacenet_mbf"
    kwargs: dict[str, Any] = (
        {}
        if large or (blocks == [1, 4, 6, 2] and scale == 2)
        else {
            "blocks": blocks,
            "scale": scale,
        }
    )
    if embed_dim != 512:
        kwargs["embed_dim"] = embed_dim
    return Plan(req.model_name or name, kwargs, state)
