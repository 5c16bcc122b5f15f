"""timm, original DINOv2 and CLIP ViT weights (FRoundation's backbones) -> ``timm_vit``."""

from __future__ import annotations

from typing import Any

from lafslib.models._registry import create_model
from lafslib.models.convert._common import ConversionError, Plan, Request, State, skip, strip

__all__ = ["plan_timm", "dinov2_name"]


def dinov2_name(state: State) -> str:
    """timm name of a DINOv2 checkpoint from its width (and register tokens)."""
    if "cls_token" not in state:
        raise ConversionError("not a DINOv2 ViT: no 'cls_token'; pass --model TIMM_NAME")
    dim = int(state["cls_token"].shape[-1])
    sizes = {384: "small", 768: "base", 1024: "large", 1536: "giant"}
    if dim not in sizes:
        raise ConversionError(f"no DINOv2 size has width {dim}; pass --model TIMM_NAME")
    regs = "_reg4" if "register_tokens" in state else ""
    return f"vit_{sizes[dim]}_patch14{regs}_dinov2"


def plan_timm(state: State, req: Request, fmt: str) -> Plan:
    """Keys filtered by timm's own ``checkpoint_filter_fn`` (position embeddings resampled)."""
    state = strip(state, ("module.",))
    model_name = req.model_name
    if model_name is None:
        if fmt != "dinov2":
            raise ConversionError(
                "--format timm needs --model TIMM_NAME (e.g. vit_base_patch16_224)"
            )
        model_name = dinov2_name(state)
    from timm.models.vision_transformer import checkpoint_filter_fn

    kwargs: dict[str, Any] = {"timm_name": model_name, "img_size": req.img_size or 112}
    if req.timm_kwargs:
        kwargs["timm_kwargs"] = dict(req.timm_kwargs)
    wrapper = create_model("timm_vit", **kwargs)
    filtered = checkpoint_filter_fn(dict(state), wrapper.model)
    for key in state:
        if key not in filtered:
            req.skipped[key] = "renamed, merged or dropped by timm's checkpoint_filter_fn"
    filtered = skip(filtered, {"head.*": "classifier head (the backbone has none)"}, req.skipped)
    return Plan("timm_vit", kwargs, {f"model.{k}": v for k, v in filtered.items()})
