"""Writes that fail or replace: a full disk while saving a checkpoint or an export (a real small
tmpfs where this process may mount one, and a simulated ENOSPC everywhere), ``--overwrite``
replacing a whole export (no stale ``model.onnx``), files with the umask's permissions."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from lafslib.cli import main
from lafslib.engine.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from lafslib.errors import DiskFullError
from lafslib.models import create_model, load_export, save_export

ROOT = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, run_dir: Path, **run) -> Path:
    data = yaml.safe_load((ROOT / "recipes/demo/pretrain_demo.yaml").read_text())
    data["run"].update(
        {"output_dir": str(run_dir), "checkpoint_every": 2, "log_every": 1, "tensorboard": False}
    )
    data["run"].update(run)
    data["data"].update({"batch_size": 4, "synthetic_identities": 4, "synthetic_per_identity": 4})
    data["views"]["local_views"] = 0
    data["head"]["out_dim"] = 64
    path = tmp_path / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s file system up to ``leave`` free bytes."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with (folder / "filler").open("wb") as f:
        f.write(bytes(max(free - leave, 0)))


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_full_disk_while_checkpointing_is_one_line_and_keeps_the_earlier_checkpoint(
    tmp_path: Path, small_disk: Callable[[int], Path], capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    assert main(["pretrain", str(_recipe(tmp_path, run, max_steps=2))]) == 0
    size = (run / "checkpoints/step_00000002.pt").stat().st_size
    disk = small_disk(3 * size)
    shutil.copytree(run, disk / "run")
    _fill(disk, size // 2)
    recipe = _recipe(tmp_path, disk / "run", max_steps=4)
    before = (disk / "run/checkpoints/step_00000002.pt").read_bytes()
    capsys.readouterr()
    assert main(["pretrain", str(recipe), "--resume", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    target = disk / "run/checkpoints/step_00000004.pt"
    assert err == (
        f"lafs pretrain: error: {target}: no space left on device; nothing written before was "
        "changed: free space (or write elsewhere) and run the command again"
    )
    assert [p.name for p in (disk / "run/checkpoints").iterdir()] == ["step_00000002.pt"]
    assert (disk / "run/checkpoints/step_00000002.pt").read_bytes() == before
    (disk / "filler").unlink()  # space again: the run goes on from its checkpoint
    assert main(["pretrain", str(recipe), "--resume", "auto"]) == 0
    assert [s for s, _ in list_checkpoints(disk / "run/checkpoints")] == [2, 4]


def test_full_disk_while_exporting_over_an_export_keeps_the_old_one(
    tmp_path: Path, small_disk: Callable[[int], Path], capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    assert main(["pretrain", str(_recipe(tmp_path, run, max_steps=2))]) == 0
    assert main(["export", str(run)]) == 0
    size = (run / "export/model.safetensors").stat().st_size
    disk = small_disk(4 * size + 2**20)
    shutil.copytree(run / "export", disk / "export")
    before = _tree(disk / "export")
    _fill(disk, size // 2)
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(disk / "export"), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{disk / 'export' / 'model.safetensors'}: no space left on device" in err
    assert _tree(disk / "export") == before  # no temporary left, nothing changed
    load_export(disk / "export")


def test_simulated_enospc_in_checkpoint_and_export_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no tmpfs can be mounted: the writers fail as on a full disk (torch's zip writer
    turns the OSError into a RuntimeError; safetensors raises its own error)."""
    path = save_checkpoint(tmp_path / "step_00000001.pt", {"step": 1})

    def full_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from exc

    monkeypatch.setattr("lafslib.engine.checkpoint.torch.save", full_save)
    with pytest.raises(DiskFullError, match="step_00000002.pt: no space left on device"):
        save_checkpoint(tmp_path / "step_00000002.pt", {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]

    def full_safetensors(*args, **kwargs):
        raise Exception(  # safetensors' SafetensorError is an Exception
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
            'space left on device" })'
        )

    model = create_model("vit_test").eval()
    save_export(model, tmp_path / "export")
    before = _tree(tmp_path / "export")
    monkeypatch.setattr("lafslib.models.export.save_file", full_safetensors)
    with pytest.raises(DiskFullError, match="model.safetensors: no space left on device"):
        save_export(model, tmp_path / "export")
    assert _tree(tmp_path / "export") == before


def test_overwrite_replaces_the_whole_export_and_keeps_the_umask(tmp_path: Path) -> None:
    out = tmp_path / "export"
    torch.manual_seed(0)
    save_export(create_model("vit_test").eval(), out)
    (out / "model.onnx").write_bytes(b"the old network's graph")
    (out / "model.onnx.data").write_bytes(b"its weights")
    (out / "dino_head.safetensors").write_bytes(b"the head of a converted DINO checkpoint")
    (out / "notes.txt").write_text("the user's own file")
    old = os.umask(0o002)
    try:
        save_export(create_model("vit_test", embed_dim=32).eval(), out)
    finally:
        os.umask(old)
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors", "notes.txt"]
    assert load_export(out)(torch.rand(1, 3, 112, 112)).shape == (1, 32)
    for name in ("model.json", "model.safetensors"):
        assert (out / name).stat().st_mode & 0o777 == 0o664, name
    staged = tmp_path / "model.onnx"
    staged.write_bytes(b"a new graph")
    old = os.umask(0o022)
    try:
        save_export(create_model("vit_test").eval(), out, staged={"model.onnx": staged})
    finally:
        os.umask(old)
    assert (out / "model.onnx").read_bytes() == b"a new graph"
    for name in ("model.json", "model.safetensors", "model.onnx"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def test_export_overwrite_from_the_cli_removes_a_stale_onnx(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["pretrain", str(_recipe(tmp_path, run, max_steps=2))]) == 0
    out = tmp_path / "export"
    out.mkdir()
    save_export(create_model("vit_test", embed_dim=32).eval(), out)
    (out / "model.onnx").write_bytes(b"the 32-d network")
    assert main(["export", str(run), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "model.onnx").exists()
    state = load_checkpoint(run / "checkpoints/step_00000002.pt")
    torch.testing.assert_close(
        load_export(out).backbone.state_dict()["pos_embed"], state["teacher"]["backbone.pos_embed"]
    )
