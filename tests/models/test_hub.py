"""Published models by name (hf://): a Hugging Face cache built here, read offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lafslib.errors import InputNotFoundError
from lafslib.models import create_model, load_export, save_export
from lafslib.models.convert import ConversionError, convert_checkpoint, convert_to_export
from lafslib.models.convert.hub import parse_hf_source
from lafslib.models.export import load_export_weights, read_export_info

from .test_convert import GOLDEN, _close, golden_state

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "minchul/cvlface_ir18_test"


def _repo_folder(cache: Path, repo: str, commit: str = COMMIT, ref: str = "main") -> Path:
    """``models--owner--name/snapshots/<commit>`` with ``refs/<ref>``, as huggingface_hub keeps."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _cvlface_repo(cache: Path, repo: str = REPO, json_colour: str = "BGR") -> Path:
    """CVLFace's Hub layout: model.safetensors (model.net.*), pretrained_model/model.pt (net.*),
    model.yaml rewritten to RGB, config.json with the colour space the weights were trained on,
    and the wrapper code that must never run."""
    snap = _repo_folder(cache, repo)
    state = golden_state("cvlface_ir18")
    save_file(
        {f"model.net.{k}": v.contiguous() for k, v in state.items()}, snap / "model.safetensors"
    )
    (snap / "pretrained_model").mkdir()
    torch.save({f"net.{k}": v for k, v in state.items()}, snap / "pretrained_model" / "model.pt")
    (snap / "pretrained_model" / "model.yaml").write_text(
        "input_size: [3, 112, 112]\ncolor_space: RGB\nname: ir18\noutput_dim: 512\n"
        "yaml_path: models/iresnet/configs/v1_ir18.yaml\nstart_from: ''\nfreeze: false\n"
    )
    conf = {"color_space": json_colour, "name": "ir18", "output_dim": 512}
    (snap / "config.json").write_text(json.dumps({"conf": conf, "model_type": "cvlface"}))
    (snap / "wrapper.py").write_text("raise SystemExit('repository code must not run')\n")
    return snap


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache under tmp_path, and a lafslib cache beside it."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAFS_CACHE", str(tmp_path / "lafs"))
    return cache


def test_parse_hf_source():
    assert parse_hf_source("hf://a/b").repo == "a/b"
    src = parse_hf_source("hf://minchul/cvlface_adaface_ir101_webface12m@v1.0")
    assert (src.repo, src.revision) == ("minchul/cvlface_adaface_ir101_webface12m", "v1.0")
    for bad in ("hf://nobody", "hf://a/b@", "hf://a/b/c"):
        with pytest.raises(InputNotFoundError, match="hf://owner/repo"):
            parse_hf_source(bad)


def test_cvlface_hub_layout_converts_like_its_local_files(hub_cache, tmp_path):
    snap = _cvlface_repo(hub_cache)
    ref = load_file(str(GOLDEN / "cvlface_ir18.safetensors"))
    with pytest.warns(UserWarning, match="config.json says BGR but pretrained_model/model.yaml"):
        out, report = convert_to_export(f"hf://{REPO}", tmp_path / "exp")
    info = json.loads((out / "model.json").read_text())["converted_from"]
    assert info["source"] == f"hf://{REPO}@{COMMIT}"
    assert info["hub"]["commit"] == COMMIT and info["hub"]["files"][0] == "model.safetensors"
    assert info["input"]["color_space"] == "BGR"
    # the local files, told BGR: the same export
    local, _, _ = convert_checkpoint(snap / "pretrained_model" / "model.pt", "cvlface", bgr=True)
    hub = load_export(out)
    x = ref["input"]
    with torch.no_grad():
        torch.testing.assert_close(hub(x), local(x))
        _close(hub(x.flip(1)), ref["output"])  # CVLFace feeds BGR weights x.flip(1)


def test_safetensors_are_read_before_the_pickle(hub_cache, tmp_path):
    snap = _cvlface_repo(hub_cache)
    (snap / "pretrained_model" / "model.pt").write_bytes(b"never read")
    with pytest.warns(UserWarning):
        _, report = convert_to_export(f"hf://{REPO}", tmp_path / "exp")
    assert report.ok
    (snap / "model.safetensors").unlink()  # then the pickle is the weights
    with pytest.raises(ConversionError, match="cannot be read safely"), pytest.warns(UserWarning):
        convert_checkpoint(f"hf://{REPO}")


def test_hf_model_for_eval_is_converted_once_and_embeds_like_the_local_export(hub_cache, tmp_path):
    from lafslib.evaluation.embed import embed_images
    from lafslib.evaluation.runtime import load_embedding_model

    _cvlface_repo(hub_cache, json_colour="RGB")
    model = load_embedding_model(f"hf://{REPO}")
    assert model.backend == "torch"
    converted = tmp_path / "lafs" / "hf" / REPO.replace("/", "--") / COMMIT
    assert (converted / "model.json").is_file()
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    # what finetune's --init reads: the same converted export
    assert read_export_info(f"hf://{REPO}")["name"] == "iresnet18"
    init = create_model("iresnet18", **read_export_info(f"hf://{REPO}")["kwargs"])
    load_export_weights(init, f"hf://{REPO}")
    again = load_embedding_model(f"hf://{REPO}@main")
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    faces = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    local, _ = convert_to_export(
        _repo_folder(hub_cache, REPO) / "pretrained_model" / "model.pt",
        tmp_path / "local",
        "cvlface",
    )
    np.testing.assert_allclose(
        embed_images(again, faces, 2), embed_images(load_export(local), faces, 2), rtol=1e-5
    )


def test_a_lafslib_export_on_the_hub_is_used_as_it_is(hub_cache):
    from lafslib.evaluation.runtime import load_embedding_model

    snap = _repo_folder(hub_cache, "someone/face-ir", ref="v2")
    model = create_model("iresnet_test").eval()
    save_export(model, snap)
    loaded = load_embedding_model("hf://someone/face-ir@v2")
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ConversionError, match="is a lafslib export already"):
        convert_checkpoint("hf://someone/face-ir@v2")


def test_missing_files_offline_name_the_repo_the_file_and_hf_hub_offline(hub_cache, tmp_path):
    from lafslib.cli import main

    snap = _cvlface_repo(hub_cache)
    (snap / "model.safetensors").unlink()
    (snap / "pretrained_model" / "model.pt").unlink()
    with pytest.raises(InputNotFoundError) as err:
        convert_checkpoint(f"hf://{REPO}")
    msg = str(err.value)
    assert REPO in msg and "model.safetensors" in msg and "HF_HUB_OFFLINE" in msg
    assert "\n" not in msg
    with pytest.raises(InputNotFoundError, match="not in the local Hugging Face cache"):
        convert_checkpoint("hf://nobody/nothing")
    with pytest.raises(InputNotFoundError, match="nobody/nothing.*HF_HUB_OFFLINE"):
        load_export("hf://nobody/nothing")  # what finetune's init reads
    assert main(["convert", "hf://nobody/nothing", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_cvlface_vit_is_named_by_its_model_yaml(hub_cache):
    src = create_model("cvlface_vit_test_kprpe").eval()
    torch.nn.init.normal_(src.kprpe.linear.weight, std=0.1)
    snap = _repo_folder(hub_cache, "minchul/cvlface_vit_test_kprpe")
    state = {
        f"model.net.{k.replace('kprpe.linear.', 'keypoint_linear.')}": v.contiguous()
        for k, v in src.state_dict().items()
    }
    save_file(state, snap / "model.safetensors")
    (snap / "pretrained_model").mkdir()
    (snap / "pretrained_model" / "model.yaml").write_text(
        "color_space: RGB\nname: test\nyaml_path: models/vit_kprpe/configs/v1_test.yaml\n"
    )
    model, report, _ = convert_checkpoint("hf://minchul/cvlface_vit_test_kprpe")
    assert report.model == "cvlface_vit_test_kprpe" and report.ok
    assert report.hub["files"] == ["model.safetensors", "pretrained_model/model.yaml"]
    x, kp = torch.randn(2, 3, 112, 112), torch.rand(2, 5, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, kp), src(x, kp))
