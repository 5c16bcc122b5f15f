"""The package layout: imports run one way through the layers, and no module grows too long."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lafslib"

# Lowest first (../shared/DESIGN.md): a package may import only packages of a lower rank (and
# itself). `lafslib` is the package root (version, create_model, list_models from models).
RANKS: dict[str, float] = {
    "errors": 0,
    "io": 1,
    "layers": 2,
    "losses": 3,
    "models": 4,
    "lafslib": 4.5,
    "landmarks": 5,
    "data": 6,
    "transforms": 6,
    "evaluation": 7,
    "viz": 7,
    "config": 7,
    "inference": 7.5,
    "engine": 8,
    "cli": 9,
    "demo": 10,
}

MAX_LINES = 500

# Names the package root re-exports lazily (a module ``__getattr__``, so ``import lafslib`` stays
# light): ``lafslib.FaceEmbedder`` from the inference layer.
ROOT_LAZY_EXPORTS = {"inference"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _sources() -> dict[str, str]:
    """Source text of every module, keyed by its path relative to the package."""
    return {p.relative_to(PACKAGE).as_posix(): p.read_text() for p in _modules()}


def _group(name: str) -> str:
    """The layer of a module (path relative to the package): its top-level package or module."""
    parts = Path(name).with_suffix("").parts
    return "lafslib" if parts == ("__init__",) else parts[0]


def _imported_groups(source: str) -> set[str]:
    """Layers named by every ``lafslib`` import of a module, function-level imports included."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "lafslib":
                out.add(parts[1] if len(parts) > 1 else "lafslib")
    return out


def layering_violations(sources: dict[str, str]) -> list[str]:
    """``module -> layer`` for every import of a layer that is not below the module's own."""
    bad = []
    for name, source in sources.items():
        group = _group(name)
        allowed = ROOT_LAZY_EXPORTS if group == "lafslib" else set()
        for target in sorted(_imported_groups(source) - {group} - allowed):
            if RANKS.get(target, len(RANKS)) >= RANKS.get(group, -1):
                bad.append(f"{name} -> {target}")
    return bad


def test_every_package_has_a_rank() -> None:
    assert {_group(name) for name in _sources()} <= set(RANKS)


def test_no_module_imports_a_higher_layer() -> None:
    assert layering_violations(_sources()) == []


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("landmarks/align.py", "from lafslib.data.folder import find_sidecar"),
        ("losses/partial_fc.py", "    from lafslib.engine.distributed import barrier"),
        ("data/transforms_probe.py", "import lafslib.transforms.views"),
    ],
)
def test_layering_check_finds_an_upward_import(name: str, line: str) -> None:
    source = "def f():\n" + line if line.startswith(" ") else line
    assert layering_violations({name: source}) == [f"{name} -> {line.split('.')[1]}"]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_length(path: Path) -> None:
    name = path.relative_to(PACKAGE).as_posix()
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"lafslib/{name} has {lines} lines (at most {MAX_LINES})"
