"""Every kind of bad input, through ``lafs`` in a subprocess: one clear error, inputs untouched.

Each case runs a ``lafs`` command on a bad input and checks the exit code, that stderr holds
exactly one ``lafs CMD: ...`` line naming the file or key, that nothing printed a traceback, and
that every input file is byte-identical afterwards (and no file appeared among the inputs).
Cases that must succeed despite bad data (bad images, a corrupt record) check exit code 0.

Importing torch costs seconds, so the cases run in one subprocess that calls the ``lafs``
entry point once per case and hashes the inputs around each call; two cases also run as their
own ``python -m lafslib.cli`` process to check the real exit status and stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from lafslib.config import load_recipe
from lafslib.data import pack_folder, render_face, write_bin
from lafslib.data.recordio import RecordReader
from lafslib.engine.finetune import finetune
from lafslib.engine.pretrain import pretrain
from lafslib.evaluation.identity import model_identity
from lafslib.models import create_model, save_export

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """A ``lafs`` command on a bad input. ``{I}``: the inputs folder, ``{O}``: outputs."""

    id: str
    argv: tuple[str, ...]
    code: int = 2
    names: tuple[str, ...] = ()  # in the error line: the file or key, and the reason
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards (no output, no exploit)


PRE, FT = "{I}/recipes/pretrain.yaml", "{I}/recipes/finetune.yaml"


def _pre(out: str, *sets: str, recipe: str = PRE) -> tuple[str, ...]:
    return ("pretrain", recipe, "--set", f"run.output_dir={out}", *_sets(sets))


def _ft(out: str, *sets: str, recipe: str = FT) -> tuple[str, ...]:
    return ("finetune", recipe, "--set", f"run.output_dir={out}", *_sets(sets))


def _sets(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(x for item in items for x in ("--set", item))


def _verify(a: str, b: str, model: str = "{I}/export_ok") -> tuple[str, ...]:
    return ("verify", a, b, "--model", model)


def _eval(model: str, *bins: str) -> tuple[str, ...]:
    return ("eval", "--model", model, "--bin", *bins, "--out", "{O}/eval", "--batch-size", "8")


CASES = [
    # recipes
    Case("recipe-yaml-syntax", ("show-config", "{I}/recipes/syntax.yaml"), names=("syntax.yaml",)),
    Case("recipe-empty", ("show-config", "{I}/recipes/empty.yaml"), names=("empty.yaml", "task")),
    Case("recipe-python-tag", _pre("{O}/tag", recipe="{I}/recipes/python_tag.yaml"),
         names=("python_tag.yaml",), absent=("{O}/pwned_yaml",)),
    Case("recipe-unknown-key", _ft("{O}/uk", recipe="{I}/recipes/unknown_key.yaml"),
         names=("unknown_key.yaml", "data.batchsize")),
    Case("recipe-wrong-type", _ft("{O}/wt", "optim.lr=fast"), names=("optim.lr",)),
    Case("recipe-task-mismatch", _ft("{O}/tm", recipe=PRE), names=("pretrain.yaml", "task")),
    Case("recipe-checkpoint-every-0", _pre("{O}/ce", "run.checkpoint_every=0"),
         names=("run.checkpoint_every",), absent=("{O}/ce",)),
    Case("recipe-log-every-0", _pre("{O}/le", "run.log_every=0"), names=("run.log_every",)),
    Case("recipe-keep-last-0", _pre("{O}/kl", "run.keep_last=0"), names=("run.keep_last",)),
    Case("recipe-batch-size-0", _ft("{O}/bs", "data.batch_size=0"), names=("data.batch_size",)),
    Case("recipe-accumulate-0", _ft("{O}/ac", "optim.accumulate=0"), names=("optim.accumulate",)),
    # images: corrupt, empty, non-image, truncated and huge files
    Case("images-none-readable-info", ("data", "info", "{I}/allbad", "--check"),
         names=("allbad", "none of the 4 images")),
    Case("images-none-readable-pretrain", _pre("{O}/nr", "data.train={I}/allbad"),
         names=("allbad", "no readable image")),
    Case("images-none-readable-finetune", _ft("{O}/nrf", "data.train={I}/allbad_ids"),
         names=("allbad_ids", "no readable image")),
    Case("images-none-readable-pack", ("data", "pack", "{I}/allbad_ids", "{O}/x.rec", "--quiet"),
         names=("allbad_ids", "none of the 4 images"), absent=("{O}/x.rec",)),
    Case("images-some-bad-pretrain", _pre("{O}/mixed", "data.train={I}/mixed"), code=0),
    Case("images-some-bad-finetune-few-shot",
         _ft("{O}/mixed_ft", "data.train={I}/mixed_ids", "data.images_per_identity=3",
             "data.max_images=10"), code=0),
    Case("images-show-landmarks-non-image",
         ("show-landmarks", "{I}/allbad/text.png", "--out", "{O}/lm.png"),
         names=("text.png",), absent=("{O}/lm.png",)),
    # landmark sidecars
    Case("sidecar-out-of-range", _pre("{O}/s1", "data.train={I}/side_range"),
         names=("side_range/landmarks5.csv", "row 3")),
    Case("sidecar-3-points", _ft("{O}/s2", "data.train={I}/side_3pts"),
         names=("side_3pts/landmarks5.csv", "3 points")),
    Case("sidecar-nan", _ft("{O}/s3", "data.train={I}/side_nan"),
         names=("side_nan/landmarks5.csv", "NaN")),
    Case("sidecar-missing-rows", _ft("{O}/s4", "data.train={I}/side_missing"),
         names=("side_missing/landmarks5.csv", "no landmarks for 2")),
    Case("sidecar-npz-pickle", _ft("{O}/s5", "data.train={I}/faces",
                                   "data.landmarks={I}/hostile.npz"), names=("hostile.npz",)),
    # hostile pickles
    Case("pickle-bin", _eval("{I}/export_ok", "{I}/evil.bin"), names=("evil.bin", "refusing"),
         absent=("{O}/pwned_bin", "{O}/eval")),
    Case("pickle-checkpoint-export", ("export", "{I}/ckpt/evil.pt", "--out", "{O}/ex"),
         names=("evil.pt",), absent=("{O}/pwned_pt", "{O}/ex")),
    Case("pickle-checkpoint-resume", (*_pre("{O}/rp"), "--resume", "{I}/ckpt/evil.pt"),
         names=("evil.pt",), absent=("{O}/pwned_pt",)),
    Case("pickle-safetensors-eval", _eval("{I}/export_pickle", "{I}/ok.bin"),
         names=("export_pickle/model.safetensors",), absent=("{O}/pwned_st", "{O}/eval")),
    Case("pickle-safetensors-init", (*_ft("{O}/ip"), "--init", "{I}/export_pickle"),
         names=("export_pickle/model.safetensors",), absent=("{O}/pwned_st",)),
    # RecordIO
    Case("rec-corrupt-record-finetune", _ft("{O}/rec", "data.train={I}/corrupt.rec"), code=0),
    Case("rec-garbage", ("data", "info", "{I}/garbage.rec"), names=("garbage.rec", "bad magic")),
    Case("rec-bad-idx", ("data", "info", "{I}/badidx.rec"), names=("badidx.idx", "line 1")),
    Case("rec-empty", ("data", "info", "{I}/empty.rec"), names=("empty.rec", "no records")),
    # wrong or partial exports
    Case("export-truncated-json", _eval("{I}/export_truncated", "{I}/ok.bin"),
         names=("export_truncated/model.json", "JSON"), absent=("{O}/eval",)),
    Case("export-unknown-model", _eval("{I}/export_unknown", "{I}/ok.bin"),
         names=("unknown model 'vit_nonexistent'",)),
    Case("export-wrong-model", _eval("{I}/export_wrong", "{I}/ok.bin"),
         names=("export_wrong/model.safetensors", "iresnet_test")),
    Case("export-no-weights", _eval("{I}/export_partial", "{I}/ok.bin"),
         names=("export_partial", "model.safetensors")),
    Case("export-no-json-init", (*_ft("{O}/nj"), "--init", "{I}/export_nojson"),
         names=("export_nojson", "model.json")),
    Case("export-missing-eval", _eval("{I}/nothere_export", "{I}/ok.bin"),
         names=("nothere_export", "not found"), absent=("{O}/eval",)),
    Case("export-without-head", _eval("{I}/export_nohead", "{I}/ok.bin"),
         names=("export_nohead/model.safetensors", "head.0.weight"), absent=("{O}/eval",)),
    Case("eval-onnxruntime-without-onnx",
         (*_eval("{I}/export_ok", "{I}/ok.bin"), "--backend", "onnxruntime"),
         names=("export_ok", "no model.onnx", "--onnx"), absent=("{O}/eval",)),
    Case("eval-broken-onnx", _eval("{I}/export_badonnx", "{I}/ok.bin"),
         names=("export_badonnx/model.onnx", "ONNX Runtime"), absent=("{O}/eval",)),
    Case("eval-hf-not-cached-offline", _eval("hf://lafs-tests/not-cached", "{I}/ok.bin"),
         names=("lafs-tests/not-cached", "HF_HUB_OFFLINE"), absent=("{O}/eval",)),
    Case("export-run-without-checkpoint", ("export", "{I}/empty_run"), names=("empty_run",)),
    Case("export-over-an-export", ("export", "{I}/runs/pre", "--out", "{I}/export_ok"),
         names=("export_ok", "already holds an export", "--overwrite")),
    Case("convert-over-an-export", ("convert", "{I}/export_ok/model.safetensors", "{I}/export_ok"),
         names=("export_ok", "already holds an export", "--overwrite")),
    # checkpoints and run directories
    Case("rerun-pretrain-into-a-run", _pre("{I}/runs/pre", "optim.lr=0.01"),
         names=("runs/pre", "--resume auto", "--overwrite")),
    Case("rerun-finetune-into-a-run", _ft("{I}/runs/ft"), names=("runs/ft", "--resume auto")),
    Case("resume-finetune-checkpoint-in-pretrain",
         (*_pre("{O}/wrong_task"), "--resume", "{I}/runs/ft/checkpoints/step_00000001.pt"),
         names=("step_00000001.pt", "a finetune checkpoint")),
    Case("resume-other-head", (*_pre("{I}/runs/pre", "head.out_dim=32"), "--resume", "auto"),
         names=("step_00000001.pt", "head.out_dim 64 -> 32", "--allow-change head.out_dim")),
    Case("resume-other-head-allowed",
         (*_pre("{I}/runs/pre", "head.out_dim=32"), "--resume", "auto",
          "--allow-change", "head.out_dim"),
         names=("step_00000001.pt", "does not fit this recipe")),
    Case("resume-missing-file", (*_pre("{O}/rm"), "--resume", "{I}/nothere.pt"),
         names=("nothere.pt",)),
    # paths
    Case("align-dst-contains-src", ("align", "{I}/raw", "{I}", "--quiet"),
         names=("overlap", "raw")),
    Case("align-missing-src", ("align", "{I}/nothere", "{O}/al", "--quiet"),
         names=("nothere",), absent=("{O}/al",)),
    Case("eval-missing-bin", _eval("{I}/export_ok", "{I}/nothere.bin"),
         names=("nothere.bin",), absent=("{O}/eval",)),
    # photos in, answers out
    Case("verify-no-face", _verify("{I}/blank.png", "{I}/raw/x.jpg"),
         names=("blank.png", "no face found", "yunet")),
    Case("verify-unreadable-photo", _verify("{I}/raw/x.jpg", "{I}/allbad/text.png"),
         names=("text.png", "cannot decode")),
    Case("verify-export-without-head", _verify("{I}/raw/x.jpg", "{I}/raw/x.jpg",
                                               model="{I}/export_ssl"),
         names=("export_ssl", "without a trained embedding head")),
    Case("verify-threshold-of-another-model",
         (*_verify("{I}/raw/x.jpg", "{I}/raw/x.jpg"), "--threshold", "{I}/report_other.json@1e-3"),
         names=("report_other.json", "another model")),
    Case("embed-no-face-anywhere", ("embed", "{I}/allbad", "{O}/e.npy", "--model",
                                    "{I}/export_ok", "--quiet"),
         names=("allbad", "no face found in any"), absent=("{O}/e.npy",)),
]  # fmt: skip


# ----------------------------------------------------------------------------- the inputs


class _Exploit:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height pixels (a decompression bomb) and holds none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _bad_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not an image at all\n")
    face = Image.fromarray(render_face(0, 0)["image"])
    face.save(folder / "full.jpg")
    (folder / "truncated.jpg").write_bytes((folder / "full.jpg").read_bytes()[:300])
    (folder / "full.jpg").unlink()
    _png_header_only(folder / "huge.png", 40_000, 40_000)


def _edit_sidecar(folder: Path, edit) -> None:
    path = folder / "landmarks5.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def _recipes(root: Path) -> None:
    root.mkdir(parents=True)
    pre = yaml.safe_load((ROOT / "recipes/demo/pretrain_demo.yaml").read_text())
    pre["run"].update(max_steps=1, checkpoint_every=1, log_every=1, tensorboard=False)
    pre["data"].update(batch_size=4, synthetic_identities=2, synthetic_per_identity=4)
    pre["views"]["local_views"] = 2
    pre["head"]["out_dim"] = 64
    (root / "pretrain.yaml").write_text(yaml.safe_dump(pre))
    ft = yaml.safe_load((ROOT / "recipes/demo/finetune_demo.yaml").read_text())
    ft["run"].update(max_steps=1, checkpoint_every=1, log_every=1, tensorboard=False)
    ft["data"].update(batch_size=4, synthetic_identities=2, synthetic_per_identity=4)
    (root / "finetune.yaml").write_text(yaml.safe_dump(ft))
    (root / "syntax.yaml").write_text("task: pretrain\ndata: {train: [unclosed\n")
    (root / "empty.yaml").write_text("")
    marker = root.parents[1] / "outputs" / "pwned_yaml"
    (root / "python_tag.yaml").write_text(
        f"task: pretrain\nrun: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    ft["data"]["batchsize"] = 8
    (root / "unknown_key.yaml").write_text(yaml.safe_dump(ft))


def _exports(inputs: Path) -> None:
    torch.manual_seed(0)
    ok = save_export(create_model("vit_test").eval(), inputs / "export_ok")
    for name in ("export_pickle", "export_truncated", "export_unknown", "export_wrong"):
        shutil.copytree(ok, inputs / name)
    marker = inputs.parent / "outputs" / "pwned_st"
    (inputs / "export_pickle/model.safetensors").write_bytes(pickle.dumps(_Exploit(marker)))
    text = (ok / "model.json").read_text()
    (inputs / "export_truncated/model.json").write_text(text[: len(text) // 2])
    info = json.loads(text)
    (inputs / "export_unknown/model.json").write_text(
        json.dumps({**info, "name": "vit_nonexistent"})
    )
    (inputs / "export_wrong/model.json").write_text(json.dumps({**info, "name": "iresnet_test"}))
    (inputs / "export_nohead").mkdir()
    state = load_file(str(ok / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("head.")},
              str(inputs / "export_nohead/model.safetensors"))  # fmt: skip
    shutil.copy(ok / "model.json", inputs / "export_nohead")
    (inputs / "export_badonnx").mkdir()
    shutil.copy(ok / "model.safetensors", inputs / "export_badonnx")
    (inputs / "export_badonnx/model.onnx").write_bytes(b"\x08\x07not a graph")
    (inputs / "export_badonnx/model.json").write_text(
        json.dumps({**info, "onnx": {"file": "model.onnx"}})
    )
    (inputs / "export_partial").mkdir()
    shutil.copy(ok / "model.json", inputs / "export_partial")
    (inputs / "export_nojson").mkdir()
    shutil.copy(ok / "model.safetensors", inputs / "export_nojson")
    save_export(create_model("vit_test").eval(), inputs / "export_ssl", feature="ssl")
    other = save_export(create_model("vit_test").eval(), inputs.parent / "other_export")
    threshold = {"similarity": 0.4, "distance": 1.2, "far": 1e-3, "tar": 0.9}
    report = {
        "model": str(other),
        "model_id": model_identity(other),
        "flip": True,
        "results": {"lfw": {"pairs": 6000, "thresholds": {"0.001": threshold}}},
    }
    (inputs / "report_other.json").write_text(json.dumps(report))
    Image.new("RGB", (200, 160), (128, 128, 128)).save(inputs / "blank.png")


def _records(inputs: Path) -> None:
    pack_folder(inputs / "faces", inputs / "corrupt.rec", progress=False)
    offset = RecordReader(inputs / "corrupt.rec").offsets[5]
    data = bytearray((inputs / "corrupt.rec").read_bytes())
    data[offset : offset + 4] = b"\0\0\0\0"  # bad magic in image record 5
    (inputs / "corrupt.rec").write_bytes(bytes(data))
    (inputs / "garbage.rec").write_bytes(np.random.default_rng(0).bytes(4096))
    shutil.copy(inputs / "corrupt.rec", inputs / "badidx.rec")
    (inputs / "badidx.idx").write_text("this is not an index\n")
    (inputs / "empty.rec").write_bytes(b"")
    (inputs / "corrupt.lst.csv").unlink()


def _runs(inputs: Path) -> None:
    recipes = inputs / "recipes"
    pretrain(load_recipe(recipes / "pretrain.yaml", [f"run.output_dir={inputs / 'runs/pre'}"]))
    finetune(load_recipe(recipes / "finetune.yaml", [f"run.output_dir={inputs / 'runs/ft'}"]))
    (inputs / "empty_run" / "checkpoints").mkdir(parents=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, face_folder) -> Path:
    """Every bad input of the table, under ``inputs/``; the commands write under ``outputs/``."""
    root = tmp_path_factory.mktemp("bad_inputs")
    inputs, outputs = root / "inputs", root / "outputs"
    outputs.mkdir()
    _recipes(inputs / "recipes")
    face_folder(inputs / "faces", identities=2, per_identity=4)
    _bad_images(inputs / "allbad")
    for ident, names in (("a", ("empty.jpg", "text.png")), ("b", ("truncated.jpg", "huge.png"))):
        (inputs / "allbad_ids" / ident).mkdir(parents=True)
        for name in names:
            shutil.copy(inputs / "allbad" / name, inputs / "allbad_ids" / ident / name)
    shutil.copytree(inputs / "faces", inputs / "mixed", ignore=shutil.ignore_patterns("*.csv"))
    _bad_images(inputs / "mixed" / "bad")
    shutil.copytree(inputs / "faces", inputs / "mixed_ids", ignore=shutil.ignore_patterns("*.csv"))
    for name in ("empty.jpg", "text.png", "truncated.jpg", "huge.png"):
        shutil.copy(inputs / "allbad" / name, inputs / "mixed_ids" / "id0" / name)
    for name, edit in (
        (
            "side_range",
            lambda ls: ls[:3] + [ls[3].replace(ls[3].split(",")[1], "5000", 1)] + ls[4:],
        ),
        ("side_3pts", lambda ls: [",".join(line.split(",")[:7]) for line in ls]),
        ("side_nan", lambda ls: ls[:2] + [ls[2].replace(ls[2].split(",")[2], "nan", 1)] + ls[3:]),
        ("side_missing", lambda ls: ls[:-2]),
    ):
        shutil.copytree(inputs / "faces", inputs / name)
        _edit_sidecar(inputs / name, edit)
    np.savez(inputs / "hostile.npz", keys=np.array(["id0/0.png"]), points=np.array([None]))
    images = [render_face(i // 2, i % 2)["image"] for i in range(8)]
    write_bin(inputs / "ok.bin", images, [True, False, True, False])
    (inputs / "evil.bin").write_bytes(pickle.dumps(_Exploit(outputs / "pwned_bin")))
    (inputs / "ckpt").mkdir()
    torch.save({"step": 1, "x": _Exploit(outputs / "pwned_pt")}, inputs / "ckpt" / "evil.pt")
    _exports(inputs)
    _records(inputs)
    _runs(inputs)
    (inputs / "raw" / "raw").mkdir(parents=True)
    for rel in ("raw/x.jpg", "raw/raw/x.jpg"):
        Image.fromarray(render_face(1, 0, 160)["image"]).save(inputs / rel)
    return root


# ----------------------------------------------------------------------------- the runs

_DRIVER = r"""
import contextlib, hashlib, io, json, os, sys, traceback
from pathlib import Path

from lafslib.cli import main

def digest(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        for name in dirnames:
            out[str((Path(dirpath) / name).relative_to(root)) + "/"] = "dir"
    return out

inputs, cases = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
results = {}
for case_id, argv in cases:
    before = digest(inputs)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
            code = "crashed"
    after = digest(inputs)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    results[case_id] = {"code": code, "stderr": err.getvalue(), "changed": changed}
Path(sys.argv[3]).write_text(json.dumps(results))
"""


def _argv(case: Case, root: Path) -> list[str]:
    fill = {"{I}": str(root / "inputs"), "{O}": str(root / "outputs")}
    out = []
    for arg in case.argv:
        for key, value in fill.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def _env() -> dict[str, str]:
    """The environment of a ``lafs`` subprocess that runs this tree's lafslib."""
    env = {k: v for k, v in os.environ.items() if k != "LAFS_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    env["HF_HUB_OFFLINE"] = "1"  # hf:// sources: the local cache only
    return env


@pytest.fixture(scope="module")
def results(world: Path) -> dict[str, dict]:
    table = world / "cases.json"
    table.write_text(json.dumps([(c.id, _argv(c, world)) for c in CASES]))
    out = world / "results.json"
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(world / "inputs"), str(table), str(out)],
        cwd=world / "outputs",
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _check(case: Case, code: object, stderr: str, world: Path) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("lafs ")]
    assert code == case.code, stderr
    if case.code == 0:
        assert errors == [], stderr
    else:
        assert len(errors) == 1, stderr  # one line ...
        for name in case.names:  # ... naming the file or key
            assert name.replace("{I}/", "") in errors[0], errors[0]
    for path in case.absent:
        assert not Path(path.replace("{O}", str(world / "outputs"))).exists(), path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: Path, results: dict[str, dict]) -> None:
    r = results[case.id]
    _check(case, r["code"], r["stderr"], world)
    assert r["changed"] == [], f"inputs changed: {r['changed']}"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("case_id", ["recipe-checkpoint-every-0", "rerun-pretrain-into-a-run"])
def test_bad_input_in_its_own_process(case_id: str, world: Path, results: dict) -> None:
    """The console entry point itself: real exit status and stderr of one process."""
    case = next(c for c in CASES if c.id == case_id)
    before = _digest(world / "inputs")
    proc = subprocess.run(
        [sys.executable, "-m", "lafslib.cli", *_argv(case, world)],
        cwd=world / "outputs",
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    _check(case, proc.returncode, proc.stderr, world)
    assert _digest(world / "inputs") == before


def test_the_subprocesses_run_this_tree() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import lafslib; print(lafslib.__file__)"],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(proc.stdout.strip()).resolve() == (ROOT / "lafslib" / "__init__.py").resolve()
