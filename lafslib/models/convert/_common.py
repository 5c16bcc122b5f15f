"""Shared pieces of the converters: safe reading, the key report, key-map helpers, the plan."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from lafslib.errors import CheckpointError

State = dict[str, torch.Tensor]

#: The library's input: RGB in [0, 1] normalised with mean 0.5 / std 0.5, i.e. [-1, 1].
STANDARD_MEAN = (0.5, 0.5, 0.5)
STANDARD_STD = (0.5, 0.5, 0.5)


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
    input: dict[str, Any] = field(default_factory=dict)
    hub: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No missing (unless allowed), unexpected or mismatched keys."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        """The missing, unexpected and mis-shaped keys on one line."""
        parts = [
            f"{label} {len(keys)}: {short(keys, 4)}"
            for label, keys in (
                ("MISSING", self.missing),
                ("UNEXPECTED", self.unexpected),
                ("SHAPE MISMATCH", self.mismatched),
            )
            if keys
        ]
        return "; ".join(parts)

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
            lines.append(f"  skipped {len(keys)} ({why}): {short(keys)}")
        lines += [f"  note: {n}" for n in self.notes]
        for label, keys in (
            ("missing (allowed)", self.allowed_missing),
            ("MISSING", self.missing),
            ("UNEXPECTED", self.unexpected),
            ("SHAPE MISMATCH", self.mismatched),
        ):
            if keys:
                lines.append(f"  {label} {len(keys)}: {short(keys)}")
        return "\n".join(lines)


def short(keys: Iterable[str], n: int = 8) -> str:
    """The first ``n`` keys, comma-separated, with a count of the rest."""
    keys = list(keys)
    more = f" ... (+{len(keys) - n})" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


@dataclass
class Request:
    """What the caller asked for, passed to every family's planner."""

    model_name: str | None = None
    branch: str = "teacher"
    img_size: int | None = None
    timm_kwargs: Mapping[str, Any] | None = None
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """A family planner's answer: the target model, its state, and the source's input.

    ``bgr``, ``mean`` and ``std`` describe what the source weights expect (mean/std of RGB in
    [0, 1], listed in RGB order); the conversion makes the result take the library's input.
    """

    model: str
    kwargs: dict[str, Any]
    state: State
    head: State | None = None
    bgr: bool = False
    mean: tuple[float, ...] = STANDARD_MEAN
    std: tuple[float, ...] = STANDARD_STD


# ----------------------------------------------------------------------------- reading

# Harmless dict subclasses that training frameworks pickle into checkpoints (Lightning's
# hyper-parameters); they are read back as plain dicts, so nothing of theirs is executed.
_DICT_STAND_INS = [
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning_lite.utilities.data.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
]


def _plain_dict_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return type(name, (), {"__module__": module, "__new__": lambda cls, *a, **k: {}})


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint without executing code: safetensors, or ``torch.load(weights_only)``.

    CUDA tensors and legacy (pre-zip) files load on the CPU; Lightning's pickled
    hyper-parameters come back as plain dicts.

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
    allowed = [argparse.Namespace, *(_plain_dict_class(p) for p in _DICT_STAND_INS)]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        detail = str(exc).strip().splitlines()
        found = next(
            (ln for ln in detail if "Unsupported global" in ln), detail[-1] if detail else ""
        )
        raise ConversionError(
            f"{path}: cannot be read safely with torch.load(weights_only=True): {found.strip()}"
        ) from None
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def is_state(obj: Any) -> bool:
    """A non-empty mapping whose values are all tensors."""
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


#: Entries of training checkpoints that hold the weights, in the order they are looked for.
WEIGHT_ENTRIES = (
    "state_dict_backbone",  # insightface arcface_torch checkpoint_gpu_{rank}.pt
    "state_dict",  # Lightning (AdaFace), many others
    "model",
    "model_state_dict",
    "net_state_dict",
    "module",
    "net",
)


def unwrap(obj: Mapping[str, Any], branch: str | None, skipped: dict[str, str]) -> State:
    """Find the tensor dict inside a training checkpoint (``state_dict``, ...; ``branch``:
    the ``teacher``/``student`` entry of DINO-style checkpoints, looked for first)."""
    if is_state(obj):
        return dict(obj)
    entries = (branch, *WEIGHT_ENTRIES) if branch else WEIGHT_ENTRIES
    for key in entries:
        if key in obj and isinstance(obj[key], Mapping):
            for other in obj:
                if other != key:
                    skipped[other] = "training state, not weights"
            return unwrap(obj[key], branch, skipped)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConversionError(
            f"no tensor dict found in checkpoint (top-level keys: {short(sorted(obj))}); "
            f"looked for a state dict or one of the entries {short(entries, 9)}"
        )
    for other in obj:
        if other not in tensors:
            skipped[other] = "not a tensor"
    return tensors


def strip(state: State, prefixes: Iterable[str]) -> State:
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


def split(state: State, prefix: str) -> tuple[State, State]:
    """(keys under ``prefix`` with it removed, the other keys)."""
    inside = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    outside = {k: v for k, v in state.items() if not k.startswith(prefix)}
    return inside, outside


def skip(state: State, patterns: Mapping[str, str], skipped: dict[str, str]) -> State:
    """Drop keys matching a glob of ``patterns`` (recording its reason in ``skipped``)."""
    keep: State = {}
    for k, v in state.items():
        why = next((r for p, r in patterns.items() if fnmatch.fnmatch(k, p)), None)
        if why is None:
            keep[k] = v
        else:
            skipped[k] = why
    return keep


def rename(state: State, rules: list[tuple[str, str]]) -> State:
    """Rename keys by the first matching regex rule."""
    out: State = {}
    for k, v in state.items():
        for pat, rep in rules:
            new, n = re.subn(pat, rep, k)
            if n:
                k = new
                break
        out[k] = v
    return out


def load_strict(module: nn.Module, state: State, what: str) -> None:
    """Load ``state`` into ``module``; any missing, extra or mis-shaped key is an error."""
    target = module.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    bad = [k for k in set(state) & set(target) if state[k].shape != target[k].shape]
    if missing or unexpected or bad:
        raise ConversionError(
            f"{what}: missing {short(missing)}; unexpected {short(unexpected)}; "
            f"shape mismatch {short(sorted(bad))}"
        )
    module.load_state_dict(state)


def block_count(state: Mapping[str, Any], pattern: str) -> int:
    """1 + the largest index captured by ``pattern`` (group 1) over the keys; 0 if none."""
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return 1 + max(found) if found else 0
