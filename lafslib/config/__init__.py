"""Typed recipes: YAML files mapped onto dataclasses, with inheritance and overrides.

A recipe is a YAML mapping whose top-level ``task`` key names its root dataclass
(``pretrain`` or ``finetune``). ``base: other.yaml`` (relative to the recipe) inherits another
recipe, deep-merged; ``--set a.b=c`` overrides one value, parsed as YAML and coerced to the
field's type. Unknown keys, wrong types and missing required values raise :class:`ConfigError`
naming the key and the recipe file, before any work starts, and so do values out of their
range (``run.log_every: 0``, ``data.batch_size: 0``, ...). :func:`dump_config` writes the
resolved config as YAML that is itself a valid recipe.

Example:
    >>> cfg = load_recipe("recipes/pretrain/cpu_small.yaml", overrides=["optim.epochs=2"])
    >>> cfg.optim.epochs
    2
"""

from lafslib.config.common import EvalConfig, ModelConfig, RunConfig
from lafslib.config.finetune import (
    AdapterConfig,
    FinetuneConfig,
    FinetuneDataConfig,
    FinetuneOptimConfig,
    MarginLossConfig,
)
from lafslib.config.pretrain import (
    DataConfig,
    DINOHeadConfig,
    DINOLossConfig,
    PretrainConfig,
    PretrainOptimConfig,
    ViewsConfig,
)
from lafslib.config.recipe import (
    TASKS,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_recipe,
)
from lafslib.errors import ConfigError

__all__ = [
    "ConfigError",
    "RunConfig",
    "DataConfig",
    "ViewsConfig",
    "ModelConfig",
    "DINOHeadConfig",
    "DINOLossConfig",
    "PretrainOptimConfig",
    "EvalConfig",
    "PretrainConfig",
    "FinetuneDataConfig",
    "AdapterConfig",
    "MarginLossConfig",
    "FinetuneOptimConfig",
    "FinetuneConfig",
    "TASKS",
    "load_recipe",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "apply_overrides",
]
