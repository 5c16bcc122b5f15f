"""Generated reference pages of the documentation: recipe keys, ``lafs`` commands, models.

MkDocs runs this file as a hook (``hooks:`` in ``mkdocs.yml``): at every build it adds
``reference/recipes.md``, ``reference/cli.md`` and ``reference/models.md`` (and
``benchmarks.md``, a copy of the repository's ``BENCHMARKS.md``) from the code itself, so there
is no hand-written copy to drift. ``tests/test_docs_reference.py`` checks the pages against the
code. Run it alone to print a page: ``python docs/hooks/reference.py recipes``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import html
import inspect
import sys
import textwrap
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "RecipeKey",
    "recipe_keys",
    "recipes_page",
    "cli_options",
    "cli_page",
    "models_page",
    "PAGES",
    "on_files",
]


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (HTML escaped, pipes and newlines removed)."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "&#124;")


# ----------------------------------------------------------------------------- recipe keys


@dataclass
class RecipeKey:
    """One recipe key: where it lives, its type, default, allowed values and documentation."""

    task: str
    key: str
    type: str
    default: str
    allowed: str
    doc: str


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right after the field) of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _annotations(cls: type) -> dict[str, str]:
    """Field annotations as written in the source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {
        node.target.id: ast.unparse(node.annotation)
        for node in tree.body[0].body  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }


def _allowed(tp: Any, meta: Any) -> str:
    """Allowed values of a field: its choices, its range, or empty."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    literal = tp if typing.get_origin(tp) is typing.Literal else None
    if literal is None and len(args) == 1 and typing.get_origin(args[0]) is typing.Literal:
        literal = args[0]
    if literal is not None:
        return "one of " + ", ".join(str(c) for c in typing.get_args(literal))
    parts = []
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for name, limit in meta.get("bounds", {}).items():
        parts.append(f"{symbols[name]} {limit:g}")
    if meta.get("scale_range"):
        parts.append("[low, high] with 0 < low <= high <= 1")
    allowed = ", ".join(parts)
    if allowed and type(None) in typing.get_args(tp):
        allowed += "; or null"
    return allowed


def _default(f: dataclasses.Field) -> str:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def recipe_keys() -> list[RecipeKey]:
    """Every key of every recipe type, in declaration order.

    Raises:
        ValueError: a field has no attribute docstring.
    """
    from lafslib.config import TASKS

    out: list[RecipeKey] = []

    def walk(task: str, cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        docs = _field_docs(cls)
        written = _annotations(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(task, hints[f.name], key + ".")
                continue
            if f.name not in docs:
                raise ValueError(f"recipe key '{key}' ({cls.__name__}.{f.name}) has no docstring")
            out.append(
                RecipeKey(
                    task=task,
                    key=key,
                    type=written[f.name].replace("'", ""),
                    default=_default(f),
                    allowed=_allowed(hints[f.name], f.metadata),
                    doc=docs[f.name],
                )
            )

    for task, cls in TASKS.items():
        walk(task, cls, "")
    return out


def recipes_page() -> str:
    """Markdown of every recipe key, one table per task and section."""
    from lafslib.config import TASKS

    lines = [
        "# Recipe keys",
        "",
        "Generated from the config dataclasses (`lafslib/config/`) at every documentation "
        "build. A recipe is YAML with `task: pretrain` or `task: finetune`; `base: FILE` "
        "inherits another recipe and `--set KEY=VALUE` overrides a key. Unknown keys, wrong "
        "types and values outside the allowed range are errors naming the key and the file. "
        "See [Pretraining](../guides/pretraining.md#recipes-and-configuration) for how recipes work.",
        "",
    ]
    keys = recipe_keys()
    for task, cls in TASKS.items():
        lines += [f"## `task: {task}`", "", inspect.getdoc(cls) or "", ""]
        hints = typing.get_type_hints(cls)
        sections = [""] + [
            f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])
        ]
        for section in sections:
            rows = [
                k
                for k in keys
                if k.task == task
                and (k.key.split(".")[0] == section if section else "." not in k.key)
            ]
            title = f"`{section}`" if section else "top level"
            doc = inspect.getdoc(hints[section]) if section else ""
            lines += [f"### {task}: {title}", ""]
            if doc:
                lines += [doc, ""]
            lines += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
            lines += [
                f"| `{k.key}` | {_cell(k.type)} | {_cell(k.default)} | {_cell(k.allowed)} "
                f"| {_cell(k.doc)} |"
                for k in rows
            ]
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- lafs commands


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, Any]]:
    """``(command path, parser)`` of every subcommand, depth first, in declaration order."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                out.append((path, sub))
                out += _subcommands(sub, path)
    return out


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def _name(action: argparse.Action) -> str:
    return ", ".join(action.option_strings) if action.option_strings else action.dest


def cli_options() -> dict[str, list[str]]:
    """Every ``lafs`` command path (``""`` is ``lafs`` itself) and its option names."""
    from lafslib.cli import build_parser

    parser = build_parser()
    commands = [("", parser), *_subcommands(parser, "")]
    return {path: [_name(a) for a in _options(p)] for path, p in commands}


def cli_page() -> str:
    """Markdown of every ``lafs`` command: description, usage, options and examples."""
    from lafslib.cli import build_parser

    parser = build_parser()
    lines = [
        "# `lafs` commands",
        "",
        "Generated from the argument parser (`lafslib/cli/`) at every documentation build; "
        "`lafs COMMAND --help` prints the same. A user error exits with code 2 and one line "
        "naming the file or key ([Troubleshooting](../guides/troubleshooting.md)).",
        "",
    ]
    for path, p in [("", parser), *_subcommands(parser, "")]:
        title = f"lafs {path}".strip()
        lines += [f"## `{title}`", "", p.description or "", ""]
        usage = p.format_usage().replace("usage: ", "").strip()
        lines += ["```", usage, "```", ""]
        rows = []
        for a in _options(p):
            if a.help == argparse.SUPPRESS:
                continue
            if a.default in (None, False, argparse.SUPPRESS) or a.default == []:
                default = ""
            else:
                default = f"`{a.default}`"
            choices = f" (one of {', '.join(map(str, a.choices))})" if a.choices else ""
            rows.append(
                f"| `{_name(a)}` | {_cell(a.metavar or '')} | {default} "
                f"| {_cell((a.help or '') + choices)} |"
            )
        if rows:
            lines += ["| option | value | default | description |", "|---|---|---|---|", *rows]
            lines.append("")
        if p.epilog and p.epilog.startswith("examples:"):
            lines += ["Examples:", "", "```bash", *p.epilog.splitlines()[1:], "```", ""]
    return "\n".join(line.rstrip() for line in lines)


# ----------------------------------------------------------------------------- models


def models_page() -> str:
    """Markdown table of every registered model, built on the meta device (no weights)."""
    import torch

    from lafslib.models import create_model, list_models
    from lafslib.models._registry import _REGISTRY, model_info

    lines = [
        "# Models",
        "",
        "Generated from the model registry at every documentation build "
        "(`lafslib.list_models()`, `lafs models --details`). Every model takes 112x112 RGB "
        "faces in [-1, 1]; those marked with keypoints also take the 5 landmarks "
        "(B, 5, 2) in [0, 1] (KP-RPE). See [Models and KP-RPE](../guides/models.md).",
        "",
        "| name | parameters (M) | embedding | keypoints | module | description |",
        "|---|---|---|---|---|---|",
    ]
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name)
        info = model_info(model)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        factory = _REGISTRY[name]
        doc = (inspect.getdoc(factory) or "").split("\n\n")[0]
        lines.append(
            f"| `{name}` | {params:.2f} | {info.embed_dim} "
            f"| {'yes' if info.needs_keypoints else 'no'} | `{factory.__module__}` "
            f"| {_cell(doc)} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- mkdocs hook


def _benchmarks_page() -> str:
    return (ROOT / "BENCHMARKS.md").read_text()


PAGES = {
    "reference/recipes.md": recipes_page,
    "reference/cli.md": cli_page,
    "reference/models.md": models_page,
    "benchmarks.md": _benchmarks_page,
}

# Files of the repository outside docs/ that pages show.
COPIED = {"assets/study_curves.png": "benchmarks/results/study_curves.png"}


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated pages to the site's files."""
    from mkdocs.structure.files import File

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for uri, make in PAGES.items():
        files.append(File.generated(config, uri, content=make()))
    for uri, source in COPIED.items():
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / source)))
    return files


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    names = {"recipes": recipes_page, "cli": cli_page, "models": models_page}
    if len(sys.argv) != 2 or sys.argv[1] not in names:
        raise SystemExit(f"usage: python docs/hooks/reference.py {{{','.join(names)}}}")
    print(names[sys.argv[1]]())
