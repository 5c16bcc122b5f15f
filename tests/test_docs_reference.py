"""The generated reference pages of the documentation match the code, both ways.

``docs/hooks/reference.py`` writes the recipe-key, ``lafs`` command and model pages at every
documentation build. These tests introspect the code on their own (the config dataclasses, the
argparse parser, the model registry) and compare with what the pages list, so a key, option or
model that exists in one and not the other fails here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "docs_reference", ROOT / "docs/hooks/reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass needs its module registered
    spec.loader.exec_module(module)
    return module


reference = _load_generator()


# ----------------------------------------------------------------------------- recipe keys


def config_keys() -> set[tuple[str, str]]:
    """``(task, dotted key)`` of every leaf field of every recipe type."""
    from lafslib.config import TASKS

    out = set()

    def walk(task: str, cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(task, hints[f.name], f"{prefix}{f.name}.")
            else:
                out.add((task, f"{prefix}{f.name}"))

    for task, cls in TASKS.items():
        walk(task, cls, "")
    return out


def page_recipe_keys(page: str) -> set[tuple[str, str]]:
    """``(task, key)`` of every row of the recipe page (rows follow a ``## `task: X` `` title)."""
    out, task = set(), None
    for line in page.splitlines():
        title = re.match(r"## `task: (\w+)`", line)
        if title:
            task = title.group(1)
        row = re.match(r"\| `([\w.]+)` \|", line)
        if row and task:
            out.add((task, row.group(1)))
    return out


def recipe_drift(page: str) -> dict[str, set[tuple[str, str]]]:
    keys, listed = config_keys(), page_recipe_keys(page)
    return {"missing from the page": keys - listed, "not in the code": listed - keys}


def test_recipe_page_lists_every_key() -> None:
    assert recipe_drift(reference.recipes_page()) == {
        "missing from the page": set(),
        "not in the code": set(),
    }


def test_recipe_page_gives_type_default_range_and_description() -> None:
    keys = {k.key: k for k in reference.recipe_keys() if k.task == "pretrain"}
    assert all(k.doc and k.type and k.default for k in reference.recipe_keys())
    assert keys["data.batch_size"].allowed == ">= 1" and keys["data.batch_size"].default == "64"
    assert keys["run.precision"].allowed == "one of fp32, bf16, fp16"
    assert keys["run.threads"].allowed == ">= 1; or null"
    assert keys["loss.center_momentum"].allowed == ">= 0, <= 1"
    assert "0 < low <= high <= 1" in keys["views.global_scale"].allowed
    assert keys["data.train"].default == "required"
    row = next(line for line in reference.recipes_page().splitlines() if "`optim.lr`" in line)
    assert "5e-4" in row.replace("0.0005", "5e-4") and "per 256 images" in row


def test_recipe_drift_is_detected() -> None:
    page = reference.recipes_page()
    without = "\n".join(line for line in page.splitlines() if "| `optim.lr` |" not in line)
    drift = recipe_drift(without)
    assert drift["missing from the page"] == {("pretrain", "optim.lr"), ("finetune", "optim.lr")}
    extra = page + "\n| `optim.no_such_key` | int | 1 | | ghost |\n"
    assert recipe_drift(extra)["not in the code"] == {("finetune", "optim.no_such_key")}


def test_undocumented_key_fails_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    from lafslib.config import RunConfig

    monkeypatch.setattr(reference, "_field_docs", lambda cls: {} if cls is RunConfig else {"x": 1})
    with pytest.raises(ValueError, match="has no docstring"):
        reference.recipe_keys()


# ----------------------------------------------------------------------------- lafs commands


def parser_options() -> set[tuple[str, str]]:
    """``(command, option)`` of every argument of every ``lafs`` command, from the parser."""
    from lafslib.cli import build_parser

    out = set()

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.add((f"{path} {name}".strip(), "<command>"))
                    walk(sub, f"{path} {name}".strip())
            elif not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS:
                name = ", ".join(action.option_strings) or action.dest
                out.add((path, name))

    walk(build_parser(), "")
    return out


def page_cli_options(page: str) -> set[tuple[str, str]]:
    """``(command, option)`` of the command page: ``## `lafs X` `` titles and their rows."""
    out, command = set(), None
    for line in page.splitlines():
        title = re.match(r"## `lafs ?([\w -]*)`", line)
        if title:
            command = title.group(1).strip()
            if command:
                out.add((command, "<command>"))
        row = re.match(r"\| `([^`]+)` \|", line)
        if row and command is not None:
            out.add((command, row.group(1)))
    return out


def cli_drift(page: str) -> dict[str, set[tuple[str, str]]]:
    options, listed = parser_options(), page_cli_options(page)
    return {"missing from the page": options - listed, "not in the code": listed - options}


def test_cli_page_lists_every_command_and_option() -> None:
    options = parser_options()
    assert ("eval", "--whiten") in options and ("data pack", "src") in options
    assert cli_drift(reference.cli_page()) == {
        "missing from the page": set(),
        "not in the code": set(),
    }


def test_cli_drift_is_detected() -> None:
    page = reference.cli_page()
    without = "\n".join(line for line in page.splitlines() if not line.startswith("| `--whiten"))
    assert cli_drift(without)["missing from the page"] == {
        ("eval", "--whiten"),
        ("eval", "--whiten-shrink"),
    }
    extra = page + "\n| `--no-such-option` | | | ghost |\n"
    assert cli_drift(extra)["not in the code"] == {("show-attention", "--no-such-option")}


# ----------------------------------------------------------------------------- models


def page_models(page: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\| `(\w+)` \|", page, flags=re.MULTILINE)}


def test_models_page_lists_every_registered_model() -> None:
    from lafslib.models import list_models

    page = reference.models_page()
    assert page_models(page) == set(list_models())
    without = "\n".join(line for line in page.splitlines() if "| `vit_small` |" not in line)
    assert set(list_models()) - page_models(without) == {"vit_small"}
