"""`lafs models`: the registry from the command line."""

from __future__ import annotations

from lafslib.cli import main
from lafslib.models import list_models


def test_models_lists_and_describes(capsys) -> None:
    assert main(["models"]) == 0
    assert capsys.readouterr().out.split() == list_models()
    assert main(["models", "*_test*", "--details"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[0] == "name"
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(list_models("*_test*"))
    assert float(rows["vit_test"][1]) > 0
    assert main(["models", "nothing*"]) == 2
