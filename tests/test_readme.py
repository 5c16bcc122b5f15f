"""The README's pipeline runs as written: the five `lafs` commands between its pipeline markers,
on the shared data, print what the README says they print."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lafslib.cli import main

ROOT = Path(__file__).resolve().parents[1]
# The pipeline block is also included in the documentation site (pymdownx.snippets section).
START, END = "<!-- --8<-- [start:pipeline] -->", "<!-- --8<-- [end:pipeline] -->"


def readme_pipeline(text: str) -> list[tuple[str, list[str]]]:
    """``(command, printed lines)`` of the README's pipeline block.

    A command may continue over lines ending in a backslash; the ``# ...`` lines after it are
    what it prints (abridged).
    """
    block = text.split(START, 1)[1].split(END, 1)[0]
    lines = block.strip().removeprefix("```bash").removesuffix("```").strip().splitlines()
    steps: list[tuple[str, list[str]]] = []
    pending = ""
    for line in lines:
        if line.startswith("#"):
            steps[-1][1].append(line[1:].strip())
        elif line.endswith("\\"):
            pending += line[:-1].strip() + " "
        else:
            steps.append((pending + line.strip(), []))
            pending = ""
    return steps


def _prefix(printed: str) -> str:
    """What a printed line says before its first number (numbers vary between machines)."""
    return re.split(r"\d", printed, maxsplit=1)[0]


def test_readme_pipeline_is_five_lafs_commands() -> None:
    steps = readme_pipeline((ROOT / "README.md").read_text())
    names = [shlex.split(command)[:2] for command, _ in steps]
    assert names == [
        ["lafs", "align"],
        ["lafs", "pretrain"],
        ["lafs", "export"],
        ["lafs", "finetune"],
        ["lafs", "eval"],
    ]
    assert all(printed for _, printed in steps)


def test_readme_parser_reads_continuations_and_outputs() -> None:
    text = f"{START}\n```bash\nlafs a x \\\n    --y 1\n# out 3\nlafs b\n# done\n```\n{END}"
    assert readme_pipeline(text) == [("lafs a x --y 1", ["out 3"]), ("lafs b", ["done"])]
    assert _prefix("lfw_mini: accuracy 43.00 +- 12.69") == "lfw_mini: accuracy "


@pytest.mark.slow
def test_readme_pipeline_runs(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """From a fresh checkout's point of view: ``recipes/`` beside, ``../shared/data`` above."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "recipes").symlink_to(ROOT / "recipes")
    (tmp_path / "shared").symlink_to(shared_data.parent)
    monkeypatch.chdir(repo)
    for command, printed in readme_pipeline((ROOT / "README.md").read_text()):
        assert main(shlex.split(command)[1:]) == 0, command
        out = capsys.readouterr().out
        for line in printed:
            assert _prefix(line) in out, f"{command!r} did not print {line!r}:\n{out}"
    runs = repo / "runs" / "readme"
    assert (runs / "aligned" / "landmarks5.csv").is_file()
    assert (runs / "pretrain" / "export" / "model.json").is_file()
    assert (runs / "finetune" / "export" / "model.safetensors").is_file()
    assert (runs / "eval" / "report.md").is_file()
