"""Which backbone parameters a finetuning mode trains: all (full), blocks from k on (partial),
the embedding head (linear probe), or LoRA / rsLoRA adapters."""

from __future__ import annotations

from torch import nn

from lafslib.config import FinetuneConfig
from lafslib.layers.lora import apply_lora, mark_only_lora_trainable

__all__ = ["apply_adapter"]


def apply_adapter(model: nn.Module, cfg: FinetuneConfig) -> None:
    """Wrap or freeze ``model``'s parameters as ``cfg.adapter.mode`` says (in place)."""
    a = cfg.adapter
    mode = a.mode
    if mode in ("lora", "rslora"):
        apply_lora(
            model,
            r=a.lora_rank,
            alpha=a.lora_alpha,
            dropout=a.lora_dropout,
            targets=tuple(a.lora_targets),
            rs=mode == "rslora",
            module_pattern=a.lora_module_pattern,
        )
        mark_only_lora_trainable(model, extra=tuple(a.lora_trainable))
        return
    if mode == "full":
        return
    from_block = a.partial_from_block
    head = getattr(model, "head", None)
    head_params = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    for name, p in model.named_parameters():
        if mode == "linear":
            p.requires_grad_(id(p) in head_params)
        elif mode == "partial":
            block = name.split(".")[1] if name.startswith("blocks.") else None
            frozen = block is not None and int(block) < from_block
            frozen = frozen or name.startswith(("patch_embed", "pos_embed", "cls_token"))
            p.requires_grad_(not frozen)
