"""The user-error hierarchy and its one-line form; ``lafs`` maps it to exit 2, ``--debug``."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest

from lafslib.cli import main
from lafslib.config import ConfigError
from lafslib.data.verification import UnsafePickleError
from lafslib.errors import (
    INTERRUPTED_EXIT_CODE,
    DataError,
    DiskFullError,
    DivergedError,
    LafsUserError,
    RunInterrupted,
    UnknownModelError,
    disk_full,
    disk_full_message,
    user_message,
)
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


def _enospc(filename: str | None) -> RuntimeError:
    """What a native writer raises on a full disk: its own error, the OSError as its cause."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device", filename)
    except OSError as exc:
        try:
            raise RuntimeError("[enforce fail at inline_container.cc:603] unexpected pos") from exc
        except RuntimeError as wrapped:
            return wrapped


@pytest.mark.parametrize("filename", ["out/report.json", None])
def test_a_full_disk_anywhere_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    filename: str | None,
) -> None:
    """Any command whose write fails on a full disk (here ``lafs export``'s, raising the
    chained error of torch's zip writer) ends with one line naming the file, and exit 2."""

    def full(*args, **kwargs):
        raise _enospc(filename)

    monkeypatch.setattr("lafslib.engine.export.export_run", full)
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    where = f"{filename}: " if filename else ""
    assert err == (
        f"lafs export: error: {where}no space left on device; nothing written before was "
        "changed: free space (or write elsewhere) and run the command again\n"
    )
    assert main(["export", str(tmp_path), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_quota_and_native_writer_messages_count_as_a_full_disk() -> None:
    quota = OSError(errno.EDQUOT, "Disk quota exceeded", "runs/x/metrics.jsonl")
    assert disk_full(quota) is quota
    assert disk_full_message(quota).startswith("runs/x/metrics.jsonl: disk quota exceeded;")
    native = Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
    assert disk_full(native) is native
    assert disk_full(RuntimeError("unexpected pos")) is None
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert issubclass(DiskFullError, OSError) and issubclass(DivergedError, FloatingPointError)


def test_an_interrupted_run_exits_with_its_own_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped(*args, **kwargs):
        raise RunInterrupted("stopped by SIGTERM after step 8: ...")

    monkeypatch.setattr("lafslib.engine.export.export_run", stopped)
    assert main(["export", "x"]) == INTERRUPTED_EXIT_CODE == 75
