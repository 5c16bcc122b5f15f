"""The user-error hierarchy and its one-line form; ``lafs`` maps it to exit 2, ``--debug``."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from lafslib.cli import main
from lafslib.config import ConfigError
from lafslib.data.verification import UnsafePickleError
from lafslib.errors import DataError, LafsUserError, UnknownModelError, user_message
from lafslib.io import BadImageError
from lafslib.landmarks.store import LandmarkFileError
from lafslib.models import create_model


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (ConfigError, ValueError),
        (BadImageError, ValueError),
        (LandmarkFileError, ValueError),
        (UnsafePickleError, pickle.UnpicklingError),
        (UnknownModelError, KeyError),
    ],
)
def test_every_user_error_is_in_the_hierarchy(cls: type, builtin: type) -> None:
    assert issubclass(cls, LafsUserError) and issubclass(cls, builtin)


def test_unknown_model_is_a_user_error_with_a_plain_message() -> None:
    with pytest.raises(UnknownModelError) as exc:
        create_model("vit_nonexistent")
    assert user_message(exc.value).startswith("unknown model 'vit_nonexistent'")


def test_user_message_keeps_the_original_line_of_a_worker_error() -> None:
    wrapped = BadImageError(
        "Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\nlafslib.io.images.BadImageError: a.jpg: '
        "empty file (0 bytes)\n"
    )
    assert user_message(wrapped) == "a.jpg: empty file (0 bytes)"
    assert user_message(ValueError("first\nsecond")) == "first"
    report = DataError("a.rec -> vit_test\n  MISSING 2: x, y")  # a deliberate report stays whole
    assert user_message(report) == "a.rec -> vit_test\n  MISSING 2: x, y"


def test_debug_flag_and_variable_show_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "missing.yaml")
    assert main(["show-config", missing]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "missing.yaml" in err
    for argv in (["--debug", "show-config", missing], ["show-config", missing, "--debug"]):
        assert main(argv) == 2
        assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("LAFS_DEBUG", "1")
    assert main(["show-config", missing]) == 2
    assert "Traceback" in capsys.readouterr().err
