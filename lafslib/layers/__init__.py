"""Layers importable without the training stack (torch + einops only)."""

from lafslib.layers.attention import Attention
from lafslib.layers.kprpe import KPRPE, KPRPEBias
from lafslib.layers.lora import (
    LoRALinear,
    apply_lora,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    unmerge_lora,
)
from lafslib.layers.patch_sampling import grid_centers, patches_to_mosaic, sample_patches

__all__ = [
    "Attention",
    "KPRPE",
    "KPRPEBias",
    "LoRALinear",
    "apply_lora",
    "lora_state_dict",
    "mark_only_lora_trainable",
    "merge_lora",
    "unmerge_lora",
    "grid_centers",
    "patches_to_mosaic",
    "sample_patches",
]
