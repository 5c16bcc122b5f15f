"""Loading recipes: YAML inheritance, ``--set`` overrides, type coercion and validation."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from lafslib.config.fields import check_value
from lafslib.config.finetune import FinetuneConfig
from lafslib.config.pretrain import PretrainConfig
from lafslib.errors import ConfigError

__all__ = [
    "TASKS",
    "load_recipe",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "apply_overrides",
]


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
            check_value(kwargs[name], f.metadata, key, source)
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
    d = cfg.data
    if isinstance(d.train, list):
        if cfg.views.landmark_source == "net":
            raise ConfigError(
                f"{source}: views.landmark_source: net predicts landmarks for one data.train "
                "source; annotate each source first (lafs landmarks) and list their sidecars"
            )
        if not d.train or "synthetic" in d.train:
            raise ConfigError(
                f"{source}: data.train lists {d.train!r}: a list needs one or more folders or "
                "'.rec' files ('synthetic' stands alone)"
            )
        if isinstance(d.landmarks, str) or (
            isinstance(d.landmarks, list) and len(d.landmarks) != len(d.train)
        ):
            raise ConfigError(
                f"{source}: data.landmarks must list one sidecar (or null) per data.train source "
                f"({len(d.train)}), got {d.landmarks!r}"
            )
    elif isinstance(d.landmarks, list):
        raise ConfigError(
            f"{source}: data.landmarks is a list but data.train is one source: give one sidecar"
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
