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

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

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


REQUIRED: Any = MISSING


def bounded(
    default: Any,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A field whose value (when not None) must lie in the given range; checked at load."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return field(default=default, metadata={"bounds": bounds})


_SCALE = {"scale_range": True}  # [low, high] with 0 < low <= high <= 1 (crop area fractions)
_RELATION = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _check_value(value: Any, meta: Any, key: str, source: str) -> None:
    """Raise :class:`ConfigError` when a loaded value is outside its field's range."""
    if value is None:
        return
    for name, limit in meta.get("bounds", {}).items():
        ok = {"ge": value >= limit, "gt": value > limit, "le": value <= limit, "lt": value < limit}
        if not ok[name]:
            rules = ", ".join(f"{_RELATION[n]} {v:g}" for n, v in meta["bounds"].items())
            raise ConfigError(f"{source}: key '{key}' must be {rules}, got {value!r}")
    if meta.get("scale_range") and not (len(value) == 2 and 0 < value[0] <= value[1] <= 1):
        raise ConfigError(
            f"{source}: key '{key}' must be [low, high] with 0 < low <= high <= 1, got {value!r}"
        )


# ----------------------------------------------------------------------------- sections


@dataclass
class RunConfig:
    """Where and how a run executes."""

    output_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    threads: int | None = bounded(None, ge=1)  # torch CPU threads (None: torch's default)
    log_every: int = bounded(10, ge=1)
    checkpoint_every: int = bounded(500, ge=1)  # optimizer steps; the last step is always saved
    keep_last: int = bounded(3, ge=1)  # checkpoints kept (the newest of this run)
    deterministic: bool = False
    compile: bool = False  # torch.compile the backbone (a message, and eager, where it cannot)
    tensorboard: bool = True
    max_steps: int | None = bounded(None, ge=1)  # stop early after this many optimizer steps
    # pretraining: stop once training has used this many CPU minutes (process + DataLoader
    # workers, monitoring excluded), checked at log steps; None: no budget
    max_cpu_minutes: float | None = bounded(None, gt=0)
    # pretraining with max_cpu_minutes: the schedules (lr, weight decay, teacher momentum and
    # temperature) follow the larger of the steps done and the share of the budget used, so they
    # end with the budget on any host (a run is then no longer step-for-step reproducible)
    schedule_by_budget: bool = False


@dataclass
class DataConfig:
    """Unlabelled or labelled training images.

    ``train`` is an image folder, a ``.rec`` file, or ``synthetic`` (procedural faces).
    """

    train: str = REQUIRED
    landmarks: str | None = None  # sidecar (.csv / .npz); None: look next to the data
    batch_size: int = bounded(64, ge=1)  # per process
    num_workers: int = bounded(0, ge=0)
    max_images: int | None = bounded(None, ge=1)
    synthetic_identities: int = bounded(64, ge=1)
    synthetic_per_identity: int = bounded(8, ge=1)
    synthetic_size: int = bounded(112, ge=16)


@dataclass
class ViewsConfig:
    """View generation: LAFS landmark views or DINO random multi-crop (LAFS, CVPR 2024)."""

    kind: Literal["lafs", "multicrop"] = "lafs"
    landmark_source: Literal["sidecar", "template", "net"] = "sidecar"
    landmark_net: str | None = None  # Part fViT export whose landmark CNN gives the landmarks
    landmark_grid: Literal["similarity", "tps"] = "similarity"  # 5/68 points -> N-point grid
    global_views: int = bounded(2, ge=1)
    local_views: int = bounded(8, ge=0)
    num_landmarks: int = bounded(196, ge=1)
    local_landmarks: int = bounded(36, ge=1)
    patch_size: int = bounded(8, ge=1)
    sigma: float = bounded(5.0, ge=0)
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0], metadata=_SCALE)
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4], metadata=_SCALE)
    local_size: int = bounded(48, ge=1)
    image_size: int = bounded(112, ge=1)
    colour_strength: float = bounded(1.0, ge=0)  # scales colour jitter, grayscale, solarisation
    local_layout: Literal["mosaic", "grid"] = "mosaic"  # grid: landmark subsets in global layout
    relight_strength: float = bounded(0.0, ge=0)  # directional light ramp amplitude (0: off)


@dataclass
class ModelConfig:
    """A backbone from the registry (``lafs models`` lists names)."""

    name: str = REQUIRED
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DINOHeadConfig:
    """DINO projection head (Caron et al., ICCV 2021)."""

    out_dim: int = bounded(65536, ge=1)
    hidden_dim: int = bounded(2048, ge=1)
    bottleneck_dim: int = bounded(256, ge=1)
    num_layers: int = bounded(3, ge=1)
    use_bn: bool = False
    norm_last_layer: bool = True


@dataclass
class DINOLossConfig:
    """DINO self-distillation loss temperatures and centre momentum.

    The teacher temperature goes linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_epochs``: per epoch as DINO (``teacher_temp_schedule: epoch``, reaching
    ``teacher_temp`` in the last warmup epoch) or per optimizer step (``step``).
    """

    teacher_temp: float = bounded(0.04, gt=0)
    warmup_teacher_temp: float = bounded(0.07, gt=0)
    warmup_teacher_temp_epochs: int = bounded(30, ge=0)
    teacher_temp_schedule: Literal["epoch", "step"] = "epoch"
    student_temp: float = bounded(0.1, gt=0)
    center_momentum: float = bounded(0.9, ge=0, le=1)
    centering: Literal["ema", "sinkhorn"] = "ema"  # ema: DINO; sinkhorn: DINOv2
    koleo_weight: float = bounded(0.0, ge=0)  # KoLeo on the student's global SSL features
    # nearest-neighbour targets (NNCLR/MSF): the DINO loss becomes (1 - w) * own + w * neighbour,
    # the neighbour targets coming from a queue of the teacher's past outputs
    neighbour_weight: float = bounded(0.0, ge=0, le=1)
    neighbour_queue: int = bounded(4096, ge=1)
    neighbour_k: int = bounded(1, ge=1)


@dataclass
class PretrainOptimConfig:
    """AdamW with warmup + cosine schedules, as in DINO."""

    epochs: int = bounded(100, ge=1)
    lr: float = bounded(5e-4, ge=0)  # per 256 images of total batch
    min_lr: float = bounded(1e-6, ge=0)
    warmup_epochs: int = bounded(10, ge=0)
    weight_decay: float = bounded(0.04, ge=0)
    weight_decay_end: float = bounded(0.4, ge=0)
    momentum_teacher: float = bounded(0.996, ge=0, le=1)
    clip_grad: float = bounded(3.0, ge=0)  # 0 disables clipping
    freeze_last_layer_epochs: int = bounded(1, ge=0)
    accumulate: int = bounded(1, ge=1)
    drop_path: float | None = bounded(None, ge=0, lt=1)  # stochastic depth; None: the model's
    # backbone parameters kept at their initial (or --init) values for the whole run, by name
    # or name prefix: e.g. [patch_embed] (MoCo v3's frozen patch projection) or [flatten_pool]
    frozen: list[str] = field(default_factory=list)


@dataclass
class EvalConfig:
    """Periodic verification on insightface ``.bin`` sets."""

    bins: list[str] = field(default_factory=list)
    every: int = bounded(0, ge=0)  # optimizer steps; 0 disables periodic evaluation
    batch_size: int = bounded(128, ge=1)
    flip: bool = True
    # pretraining monitor: a folder of aligned faces (labels unused) to also log the accuracy
    # of the PCA-whitened SSL feature (as lafs eval --whiten), fitted on a seeded random subset
    # of whiten_images of them at every evaluation; whiten_shrink as lafs eval --whiten-shrink
    whiten: str | None = None
    whiten_images: int = bounded(2048, ge=2)
    whiten_shrink: float = bounded(0.0, ge=0)


@dataclass
class PretrainConfig:
    """Self-supervised DINO / LAFS pretraining recipe."""

    task: Literal["pretrain"] = "pretrain"
    init: str | None = None  # exported backbone to start student and teacher from
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: DINOHeadConfig = field(default_factory=DINOHeadConfig)
    loss: DINOLossConfig = field(default_factory=DINOLossConfig)
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class FinetuneDataConfig:
    """Labelled identities (folder of identity sub-folders, ``.rec``, or ``synthetic``)."""

    train: str = REQUIRED
    landmarks: str | None = None
    batch_size: int = bounded(64, ge=1)  # per process
    num_workers: int = bounded(0, ge=0)
    max_images: int | None = bounded(None, ge=1)
    images_per_identity: int | None = bounded(None, ge=1)  # few-shot: k images per identity
    identity_fraction: float = bounded(1.0, gt=0, le=1)  # few-shot: this fraction of identities
    flip: bool = True
    image_size: int = bounded(112, ge=1)
    synthetic_identities: int = bounded(64, ge=1)
    synthetic_per_identity: int = bounded(8, ge=1)
    synthetic_size: int = bounded(112, ge=16)


@dataclass
class AdapterConfig:
    """How the backbone is adapted."""

    mode: Literal["full", "lora", "rslora", "linear", "partial"] = "full"
    layer_decay: float = bounded(1.0, gt=0, le=1)  # layer-wise LR decay (full / partial)
    lora_rank: int = bounded(16, ge=1)
    lora_alpha: float = 16.0
    lora_dropout: float = bounded(0.1, ge=0, lt=1)
    lora_targets: list[str] = field(default_factory=lambda: ["q", "v"])  # of q, k, v, o
    lora_trainable: list[str] = field(default_factory=lambda: ["head"])  # also trained (prefixes)
    lora_module_pattern: str | None = None  # regex over module names (None: attention projections)
    partial_from_block: int = bounded(0, ge=0)
    embedding_dim: int = bounded(512, ge=1)
    # embedding head start: random, or whiten (PCA whitening of its input on the training
    # images, engine/head_init.py; shrinkage towards the mean eigenvalue by whiten_shrink)
    head_init: Literal["random", "whiten"] = "random"
    whiten_shrink: float = bounded(0.3, ge=0)


@dataclass
class MarginLossConfig:
    """Margin softmax loss (ArcFace / CosFace / combined / AdaFace / FRABSM)."""

    name: Literal["arcface", "cosface", "combined", "adaface", "frabsm"] = "arcface"
    scale: float = bounded(64.0, gt=0)
    m1: float = 1.0
    m2: float = 0.5
    m3: float = 0.0
    margin: float = 0.4  # AdaFace / FRABSM m
    h: float = 0.333
    t_alpha: float = 0.01
    gradient: Literal["true", "straight_through"] = "true"
    mining_alpha: float = bounded(0.0, ge=0)  # FRABSM sample-mining strength
    mining_p0: float = 0.6
    mining_mode: Literal["sample", "batch"] = "sample"
    partial_fc_rate: float = bounded(1.0, gt=0, le=1)
    classifier_init: Literal["random", "imprint"] = "random"  # imprint: centres from embeddings
    landmark_consistency: float = bounded(0.0, ge=0)  # Part fViT: MSE to the initial landmark CNN
    landmark_consistency_epochs: float = bounded(0.0, ge=0)  # linear decay to 0 (0: constant)


@dataclass
class FinetuneOptimConfig:
    """Optimizer and LR schedule for the supervised stage."""

    name: Literal["adamw", "sgd"] = "adamw"
    epochs: int = bounded(20, ge=1)
    lr: float = bounded(1e-3, gt=0)
    head_lr: float | None = bounded(None, ge=0)  # separate classifier LR (None: same as lr)
    min_lr: float = bounded(0.0, ge=0)
    warmup_epochs: float = bounded(1.0, ge=0)
    schedule: Literal["cosine", "step"] = "cosine"
    milestones: list[int] = field(default_factory=list)
    gamma: float = bounded(0.1, gt=0)
    weight_decay: float = bounded(0.05, ge=0)
    momentum: float = bounded(0.9, ge=0, lt=1)
    clip_grad: float | None = bounded(None, ge=0)
    accumulate: int = bounded(1, ge=1)
    head_weight_decay: float | None = bounded(None, ge=0)  # classifier (None: weight_decay)
    mixup_alpha: float = bounded(0.0, ge=0)  # lambda ~ Beta(alpha, alpha); 0: no mixup (LAFS: 0.2)
    mixup_prob: float = bounded(0.0, ge=0, le=1)  # probability that a batch is mixed (LAFS: 0.1)
    drop_path: float | None = bounded(None, ge=0, lt=1)  # stochastic depth; None: the model's


@dataclass
class FinetuneConfig:
    """Supervised margin-loss adaptation recipe."""

    task: Literal["finetune"] = "finetune"
    init: str | None = None  # exported backbone (safetensors + JSON) to start from
    run: RunConfig = field(default_factory=RunConfig)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    loss: MarginLossConfig = field(default_factory=MarginLossConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


TASKS: dict[str, type] = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}


# ----------------------------------------------------------------------------- machinery


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Return ``value`` converted to type ``tp`` or raise :class:`ConfigError`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            f"{source}: key '{key}' expects {_type_name(tp)}, got {value!r}"
        ) from None
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"{source}: key '{key}' must be one of {list(choices)}, got {value!r}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}' expects a mapping, got {value!r}")
        return _build(tp, value, key, source)
    if origin in (list, tuple):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: key '{key}' expects a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}' expects a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: key '{key}' expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: key '{key}' expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: key '{key}' expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: key '{key}' expects a string, got {value!r}")
    raise ConfigError(f"{source}: key '{key}' has an unsupported type {_type_name(tp)}")


def _build(cls: type, data: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"{source}: unknown key '{where}' (valid keys here: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key, source)
            _check_value(kwargs[name], f.metadata, key, source)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{source}: missing required key '{key}'")
        elif dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], {}, key, source)
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "kwargs":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{path}: circular 'base:' inheritance ({chain})")
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: key 'base' expects a recipe path, got {base!r}")
    parent = _read_yaml(path.parent / base, (*seen, path))
    return _deep_merge(parent, data)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides (values parsed as YAML) to a raw recipe mapping."""
    data = _deep_merge({}, data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(data, key, value)
    return data


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Any:
    """Build the task's root config from a raw mapping, validating every key."""
    task = data.get("task")
    if task is None:
        raise ConfigError(f"{source}: missing required key 'task' (one of {sorted(TASKS)})")
    if task not in TASKS:
        raise ConfigError(f"{source}: key 'task' must be one of {sorted(TASKS)}, got {task!r}")
    cfg = _build(TASKS[task], data, "", source)
    if isinstance(cfg, PretrainConfig):
        _check_pretrain(cfg, source)
    return cfg


def _check_pretrain(cfg: PretrainConfig, source: str) -> None:
    """Rules between keys of a pretraining recipe."""
    if cfg.loss.neighbour_k > cfg.loss.neighbour_queue:
        raise ConfigError(
            f"{source}: loss.neighbour_k is {cfg.loss.neighbour_k} but loss.neighbour_queue "
            f"holds only {cfg.loss.neighbour_queue} images: neighbour_k must be at most that"
        )
    if cfg.run.schedule_by_budget and cfg.run.max_cpu_minutes is None:
        raise ConfigError(
            f"{source}: run.schedule_by_budget: true needs a budget to follow: "
            "set run.max_cpu_minutes"
        )


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Any:
    """Load, inherit, override and validate a recipe file.

    Args:
        path: YAML recipe (may name a ``base:`` recipe).
        overrides: ``["optim.lr=1e-3", ...]`` applied after inheritance.

    Returns:
        A :class:`PretrainConfig` or :class:`FinetuneConfig`.
    """
    path = Path(path)
    data = apply_overrides(_read_yaml(path), overrides)
    source = str(path) if not overrides else f"{path} (with --set {' '.join(overrides)})"
    return config_from_dict(data, source)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any, path: str | Path | None = None) -> str:
    """Serialise a config as a recipe (YAML); write it to ``path`` when given."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    if path is not None:
        Path(path).write_text(text)
    return text
