"""The ``lafs`` entry point: help for every command, show-config, error reporting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lafslib.cli import build_parser, main


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in _subcommands():
        assert name in out


@pytest.mark.parametrize("command", _subcommands())
def test_every_command_has_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command.split(), "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out or "COMMAND" in out
    assert "lafs " in out


def test_show_config_resolves_overrides(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({"task": "pretrain", "data": {"train": "synthetic"}, "model": {"name": "m"}})
    )
    assert main(["show-config", str(recipe), "--set", "optim.epochs=2"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["optim"]["epochs"] == 2
    assert resolved["data"]["train"] == "synthetic"


def test_bad_recipe_fails_with_named_key(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({"task": "pretrain", "data": {"train": "x", "batchsize": 2}}))
    assert main(["show-config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "data.batchsize" in err and "bad.yaml" in err


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lafslib.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "show-config" in out.stdout
    assert "Warning" not in out.stderr
