"""Converters: parity with reference implementations (golden data), strictness, head conversion;
the files people have (insightface ``mbf`` and training checkpoints, AdaFace Lightning ``.ckpt``,
``net_state_dict``), format detection and its one-line errors."""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lafslib.cli import main
from lafslib.models import create_model, load_export
from lafslib.models.convert import (
    ConversionError,
    convert_checkpoint,
    convert_to_export,
    detect_format,
    dino_head_from_state,
    load_dino_head,
    read_checkpoint,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def golden_tensor(key: str, shape: list[int]) -> torch.Tensor:
    """The deterministic reference weights described in tests/data/golden/README.md."""
    shape = tuple(shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("running_var"):
        return torch.rand(shape, generator=g) * 0.5 + 0.75
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    if key.endswith("weight"):
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)


def golden_state(name: str) -> dict[str, torch.Tensor]:
    keys = json.loads((GOLDEN / f"{name}_keys.json").read_text())
    return {k: golden_tensor(k, s) for k, s in keys.items()}


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=1e-5 * max(1.0, scale), rtol=1e-5)


def test_insightface_iresnet18_matches_reference(tmp_path):
    ref = load_file(str(GOLDEN / "insightface_iresnet18.safetensors"))
    state = {f"module.{k}": v for k, v in golden_state("insightface_iresnet18").items()}
    torch.save(state, tmp_path / "backbone.pth")
    model, report, head = convert_checkpoint(tmp_path / "backbone.pth", "insightface")
    assert report.model == "iresnet18" and report.model_kwargs == {} and report.ok
    assert head is None and len(report.loaded) == len(state)
    with torch.no_grad():
        _close(model(ref["input"]), ref["output"])


def _partfvit_inputs():
    ref = load_file(str(GOLDEN / "lafs_part_fvit_tiny.safetensors"))
    tiny = {"num_heads": 2, "head_dim": 16}
    return ref, tiny


def test_part_fvit_checkpoint_matches_release(tmp_path):
    ref, tiny = _partfvit_inputs()
    state = {f"module.{k}": v for k, v in golden_state("lafs_part_fvit_tiny").items()}
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "part_fvit.pth")
    model, report, _ = convert_checkpoint(
        tmp_path / "part_fvit.pth",
        "partfvit",
        model_kwargs={"vit_kwargs": tiny},
        allow_missing=["vit.head.*"],
    )
    assert report.model == "part_fvit_base" and report.skipped == {
        "epoch": "training state, not weights"
    }
    assert not report.missing and not report.unexpected
    with torch.no_grad():
        emb = model.forward_ssl(ref["input"])
    # The release's landmarks are pixels in [0, 111] with patches centred half a pixel before.
    expected_centres = (ref["landmarks_px"] - 0.5) / 112
    _close(model.last_landmarks, expected_centres)
    _close(emb, ref["output"])


def test_lafs_teacher_student_checkpoint_and_legacy_dino_head(tmp_path):
    ref, tiny = _partfvit_inputs()
    vit = {
        k: v
        for k, v in golden_state("lafs_part_fvit_tiny").items()
        if not k.startswith(("stn.", "output_layer."))
    }
    g = torch.Generator().manual_seed(0)
    head = {
        "mlp.0.weight": torch.randn(24, 32, generator=g),
        "mlp.0.bias": torch.randn(24, generator=g),
        "mlp.2.weight": torch.randn(8, 24, generator=g),
        "mlp.2.bias": torch.randn(8, generator=g),
        "last_layer.weight_g": torch.rand(50, 1, generator=g) + 0.5,
        "last_layer.weight_v": torch.randn(50, 8, generator=g),
    }
    teacher = {f"backbone.{k}": v for k, v in vit.items()} | {
        f"head.{k}": v for k, v in head.items()
    }
    ckpt = {
        "teacher": teacher,
        "student": {f"module.{k}": v for k, v in teacher.items()},
        "epoch": 3,
        "args": argparse.Namespace(arch="vit", lr=1e-3),
    }
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    model, report, dino_head = convert_checkpoint(
        tmp_path / "checkpoint.pth", "lafs", model_kwargs=tiny, allow_missing=["head.*"]
    )
    assert report.model == "fvit_base"
    assert set(report.skipped) == {"student", "epoch", "args"}
    assert "loss.weight" not in report.loaded
    # The LAFS backbone sees the mosaic of landmark patches (here: at the release's landmarks).
    part = create_model("part_fvit_test")
    mosaic = part.mosaic(ref["input"], (ref["landmarks_px"] - 0.5) / 112)
    with torch.no_grad():
        _close(model.forward_ssl(mosaic), ref["output"])
        z = torch.randn(4, 32)
        h = F.normalize(
            F.gelu(z @ head["mlp.0.weight"].T + head["mlp.0.bias"]) @ head["mlp.2.weight"].T
            + head["mlp.2.bias"],
            dim=-1,
        )
        w = (
            head["last_layer.weight_g"]
            * head["last_layer.weight_v"]
            / head["last_layer.weight_v"].norm(dim=1, keepdim=True)
        )
        _close(dino_head(z), h @ w.T)


def test_dino_head_keeps_float64_and_rejects_mixed_dtypes():
    g = torch.Generator().manual_seed(1)
    state = {
        "mlp.0.weight": torch.randn(12, 16, generator=g, dtype=torch.float64),
        "mlp.0.bias": torch.randn(12, generator=g, dtype=torch.float64),
        "mlp.2.weight": torch.randn(6, 12, generator=g, dtype=torch.float64),
        "mlp.2.bias": torch.randn(6, generator=g, dtype=torch.float64),
        "last_layer.weight_g": torch.ones(20, 1, dtype=torch.float64),
        "last_layer.weight_v": torch.randn(20, 6, generator=g, dtype=torch.float64),
    }
    head = dino_head_from_state(state)
    assert {p.dtype for p in head.state_dict().values()} == {torch.float64}
    z = torch.randn(3, 16, generator=g, dtype=torch.float64)
    h = F.gelu(z @ state["mlp.0.weight"].T + state["mlp.0.bias"])
    h = F.normalize(h @ state["mlp.2.weight"].T + state["mlp.2.bias"], dim=-1)
    v = state["last_layer.weight_v"]
    with torch.no_grad():  # float64 precision: a float32 head would be ~1e-7 off
        torch.testing.assert_close(
            head(z), h @ (v / v.norm(dim=1, keepdim=True)).T, rtol=1e-12, atol=1e-12
        )
    state["mlp.0.bias"] = state["mlp.0.bias"].float()
    with pytest.raises(ConversionError, match="mix dtypes"):
        dino_head_from_state(state)


def test_lafs_margin_classifier_is_reported_not_silently_dropped(tmp_path):
    _, tiny = _partfvit_inputs()
    vit = {
        k: v
        for k, v in golden_state("lafs_part_fvit_tiny").items()
        if not k.startswith(("stn.", "output_layer."))
    }
    vit["loss.weight"] = torch.randn(10, 32)
    torch.save(vit, tmp_path / "finetuned.pth")
    _, report, _ = convert_checkpoint(
        tmp_path / "finetuned.pth", "lafs", model_kwargs=tiny, allow_missing=["head.*"]
    )
    assert report.skipped == {"loss.weight": "margin-loss classifier (not part of the backbone)"}
    assert "loss.weight" in report.summary()


def test_strictness_names_missing_unexpected_and_mismatched_keys(tmp_path):
    state = create_model("iresnet_test").state_dict()
    bad = dict(state)
    bad["extra.weight"] = torch.zeros(3)
    bad.pop("bn2.bias")
    bad["prelu.weight"] = torch.zeros(5)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(tmp_path / "bad.pth", "insightface", model_name="iresnet_test")
    msg = str(err.value)
    assert "extra.weight" in msg and "bn2.bias" in msg and "prelu.weight" in msg
    assert len(msg.splitlines()) == 1 and "MISSING 1" in msg and "SHAPE MISMATCH 1" in msg
    bad.pop("extra.weight")
    bad["prelu.weight"] = state["prelu.weight"]
    torch.save(bad, tmp_path / "missing.pth")
    model, report, _ = convert_checkpoint(
        tmp_path / "missing.pth", "insightface", model_name="iresnet_test", allow_missing=["bn2.*"]
    )
    assert report.allowed_missing == ["bn2.bias"] and report.ok
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"])


def test_unsafe_pickles_are_refused(tmp_path):
    from fractions import Fraction  # any class outside torch's weights_only allow-list

    torch.save({"w": torch.zeros(1), "obj": Fraction(1, 3)}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match="weights_only"):
        read_checkpoint(tmp_path / "evil.pth")


def test_unknown_format_is_rejected(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(ConversionError, match="unknown format"):
        convert_checkpoint(tmp_path / "x.pth", "onnx")


def test_dino_vit_matches_timm_reference(tmp_path):
    import timm

    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=112,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=4,
        mlp_ratio=2.0,
        qkv_bias=True,
        num_classes=0,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-5),  # lafslib's ViT eps; DINO uses 1e-6
    ).eval()
    torch.save(
        {"teacher": {f"backbone.{k}": v for k, v in ref.state_dict().items()}},
        tmp_path / "dino.pth",
    )
    model, report, head = convert_checkpoint(
        tmp_path / "dino.pth", "dino", model_kwargs={"num_heads": 4}, allow_missing=["head.*"]
    )
    assert report.model_kwargs["patch_size"] == 8 and report.model_kwargs["dim"] == 64
    assert head is None
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        _close(model.forward_features(x), ref.forward_features(x))


def test_timm_and_export_round_trip(tmp_path):
    import timm

    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=112).eval()
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    out, report = convert_to_export(
        tmp_path / "timm.pth", tmp_path / "export", "timm", model_name="vit_tiny_patch16_224"
    )
    assert report.ok and report.model == "timm_vit"
    assert set(report.skipped) == {"head.weight", "head.bias"}
    model = load_export(out)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref.forward_features(x)[:, 0])
        assert model.forward_ssl(torch.randn(1, 3, 48, 48)).shape == (1, 192)


def test_export_writes_dino_head(tmp_path):
    _, tiny = _partfvit_inputs()
    vit = {
        k: v
        for k, v in golden_state("lafs_part_fvit_tiny").items()
        if not k.startswith(("stn.", "output_layer."))
    }
    head = {
        "mlp.weight": torch.randn(8, 32),
        "mlp.bias": torch.randn(8),
        "last_layer.weight_g": torch.ones(20, 1),
        "last_layer.weight_v": torch.randn(20, 8),
    }
    ckpt = {
        "teacher": {
            **{f"backbone.{k}": v for k, v in vit.items()},
            **{f"head.{k}": v for k, v in head.items()},
        }
    }
    torch.save(ckpt, tmp_path / "c.pth")
    out, _ = convert_to_export(
        tmp_path / "c.pth", tmp_path / "exp", "lafs", model_kwargs=tiny, allow_missing=["head.*"]
    )
    loaded = load_dino_head(out)
    assert loaded(torch.randn(3, 32)).shape == (3, 20)
    info = json.loads((out / "model.json").read_text())
    assert info["name"] == "fvit_base" and info["converted_from"]["format"] == "lafs"


def test_cli_convert_writes_an_export_and_reports_errors(tmp_path, capsys):
    from lafslib.cli import main
    from lafslib.cli.train import CONVERT_FORMATS
    from lafslib.models.convert import FORMATS

    assert set(CONVERT_FORMATS) == set(FORMATS)
    model = create_model("iresnet_test").eval()
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, tmp_path / "ir.pth")
    args = ["convert", str(tmp_path / "ir.pth"), str(tmp_path / "exp"), "--format", "insightface"]
    assert main([*args, "--model", "iresnet_test"]) == 0
    out = capsys.readouterr().out
    assert "loaded" in out and "epoch" in out
    x = torch.randn(2, 3, 112, 112)
    torch.testing.assert_close(load_export(tmp_path / "exp")(x), model(x))
    # Without --model the geometry (1 block per stage, widths 8..32) is inferred.
    assert main([*args[:2], str(tmp_path / "exp2"), "--format", "insightface"]) == 0
    inferred = load_export(tmp_path / "exp2")
    torch.testing.assert_close(inferred(x), model(x))
    assert main([*args, "--model", "iresnet18", "--overwrite"]) == 2
    assert "SHAPE MISMATCH" in capsys.readouterr().err
    torch.testing.assert_close(load_export(tmp_path / "exp")(x), model(x))  # nothing written


def test_cvlface_adaface_ir18_matches_reference(tmp_path):
    ref = load_file(str(GOLDEN / "cvlface_ir18.safetensors"))
    state = {f"net.{k}": v for k, v in golden_state("cvlface_ir18").items()}
    torch.save(state, tmp_path / "model.pt")
    model, report, _ = convert_checkpoint(tmp_path, "cvlface")
    assert report.model == "iresnet18" and report.ok
    assert report.model_kwargs == {"pool_shortcut": True, "embedding_bn_affine": False}
    assert isinstance(model.layer1[0].downsample, torch.nn.MaxPool2d)
    with torch.no_grad():
        _close(model(ref["input"]), ref["output"])


def test_dinov2_original_layout_resampled_to_faces(tmp_path):
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    name, short = "vit_small_patch14_dinov2", {"depth": 2}
    src = timm.create_model(name, pretrained=False, num_classes=0, **short)
    state = dict(src.state_dict())
    state["mask_token"] = torch.zeros(1, 384)  # present in the original DINOv2 release
    torch.save(state, tmp_path / "dinov2_vits14.pth")
    model, report, _ = convert_checkpoint(
        tmp_path / "dinov2_vits14.pth", "dinov2", img_size=112, model_kwargs={"timm_kwargs": short}
    )
    assert report.ok and report.model_kwargs["timm_name"] == name
    assert "mask_token" in report.skipped
    ref = timm.create_model(name, pretrained=False, num_classes=0, img_size=112, **short)
    ref.load_state_dict(checkpoint_filter_fn(dict(state), ref))
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref.eval().forward_features(x)[:, 0])


def test_cvlface_bgr_config_is_folded_into_the_first_conv(tmp_path):
    ref = load_file(str(GOLDEN / "cvlface_ir18.safetensors"))
    torch.save(
        {f"net.{k}": v for k, v in golden_state("cvlface_ir18").items()}, tmp_path / "model.pt"
    )
    (tmp_path / "model.yaml").write_text("color_space: BGR\nname: ir18\n")
    model, report, _ = convert_checkpoint(tmp_path / "model.pt", "cvlface")
    assert any("BGR" in n for n in report.notes)
    # CVLFace feeds BGR models x.flip(1); the converted model takes RGB, so it sees the flip.
    with torch.no_grad():
        _close(model(ref["input"].flip(1)), ref["output"])


# ----------------------------------------------------------------------------- sources


def _arcface_torch_checkpoint(backbone: dict[str, torch.Tensor]) -> dict:
    """The dict arcface_torch's train_v2.py saves as checkpoint_gpu_{rank}.pt."""
    fc = torch.nn.Linear(512, 10, bias=False)
    opt = torch.optim.SGD(fc.parameters(), lr=0.1, momentum=0.9)
    fc(torch.randn(2, 512)).sum().backward()
    opt.step()
    return {
        "epoch": 3,
        "global_step": 1200,
        "state_dict_backbone": backbone,
        "state_dict_softmax_fc": {"weight": fc.weight.detach()},
        "state_optimizer": opt.state_dict(),
        "state_lr_scheduler": {"base_lrs": [0.1], "last_epoch": 1200, "_step_count": 1201},
    }


def test_insightface_mbf_matches_reference(tmp_path):
    ref = load_file(str(GOLDEN / "insightface_mbf.safetensors"))
    torch.save(golden_state("insightface_mbf"), tmp_path / "backbone.pth")
    model, report, _ = convert_checkpoint(tmp_path / "backbone.pth", "insightface")
    assert report.model == "mobilefacenet_mbf" and report.model_kwargs == {} and report.ok
    with torch.no_grad():
        _close(model(ref["input"]), ref["output"])
    # the same file through --format mobilefacenet and through detection
    assert detect_format(torch.load(tmp_path / "backbone.pth"), "x") == "mobilefacenet"
    model2, _, _ = convert_checkpoint(tmp_path / "backbone.pth")
    with torch.no_grad():
        _close(model2(ref["input"]), ref["output"])


def test_arcface_torch_training_checkpoint_converts(tmp_path):
    ref = load_file(str(GOLDEN / "insightface_mbf.safetensors"))
    ckpt = _arcface_torch_checkpoint(golden_state("insightface_mbf"))
    torch.save(ckpt, tmp_path / "checkpoint_gpu_0.pt")
    out, report = convert_to_export(
        tmp_path / "checkpoint_gpu_0.pt", tmp_path / "exp", "insightface"
    )
    assert report.ok
    for entry in ("state_dict_softmax_fc", "state_optimizer", "state_lr_scheduler", "epoch"):
        assert entry in report.skipped
    info = json.loads((out / "model.json").read_text())
    assert "state_dict_softmax_fc" in info["converted_from"]["skipped"]
    with torch.no_grad():
        _close(load_export(out)(ref["input"]), ref["output"])


def test_net_state_dict_and_fp16_module_prefix(tmp_path):
    model = create_model("iresnet_test").eval()
    state = {
        f"module.{k}": v.half() if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }
    torch.save({"net_state_dict": state, "epoch": 1}, tmp_path / "net.pth")
    converted, report, _ = convert_checkpoint(tmp_path / "net.pth", "insightface")
    assert report.ok and "epoch" in report.skipped
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        expected = model.half().float()(x)
        torch.testing.assert_close(converted.float()(x), expected, atol=1e-3, rtol=1e-3)


def _fake_lightning_attribute_dict() -> type:
    """A class pickled under Lightning's name, as AdaFace's hyper-parameters are."""
    name = "pytorch_lightning.utilities.parsing"
    for part in ("pytorch_lightning", "pytorch_lightning.utilities", name):
        sys.modules.setdefault(part, types.ModuleType(part))
    cls = type("AttributeDict", (dict,), {"__module__": name})
    sys.modules[name].AttributeDict = cls
    return cls


def _adaface_ckpt(tmp_path):
    attribute_dict = _fake_lightning_attribute_dict()
    state = {f"model.{k}": v for k, v in golden_state("adaface_ir18").items()}
    state["head.kernel"] = torch.randn(512, 70)
    state["head.t"] = torch.zeros(1)
    state["head.batch_mean"] = torch.ones(1) * 20
    state["head.batch_std"] = torch.ones(1) * 100
    ckpt = {
        "epoch": 25,
        "global_step": 100,
        "pytorch-lightning_version": "1.8.6",
        "state_dict": state,
        "hyper_parameters": attribute_dict(arch="ir_18", head="adaface", m=0.4, h=0.333),
    }
    path = tmp_path / "adaface_ir18_webface4m.ckpt"
    torch.save(ckpt, path)
    del sys.modules["pytorch_lightning.utilities.parsing"]  # reading must not need Lightning
    return path


def test_adaface_lightning_checkpoint_converts_without_flags(tmp_path):
    ref = load_file(str(GOLDEN / "adaface_ir18.safetensors"))
    path = _adaface_ckpt(tmp_path)
    out, report = convert_to_export(path, tmp_path / "exp")  # format detected
    assert report.format == "adaface" and report.model == "iresnet18" and report.ok
    assert report.skipped["head.kernel"].startswith("AdaFace margin head")
    info = json.loads((out / "model.json").read_text())
    source = info["converted_from"]
    assert source["input"]["color_space"] == "BGR"
    assert {"head.kernel", "head.t", "hyper_parameters"} <= set(source["skipped"])
    rgb = ref["input"].flip(1)  # AdaFace's model saw BGR; the export takes the same face as RGB
    with torch.no_grad():
        ours = F.normalize(load_export(out)(rgb))
    assert (ours - ref["output"]).abs().max() <= 1e-4  # AdaFace returns normalised embeddings


def test_overriding_the_recorded_convention_says_so(tmp_path, capsys):
    path = _adaface_ckpt(tmp_path)
    assert main(["convert", str(path), str(tmp_path / "rgb"), "--rgb"]) == 0
    out = capsys.readouterr().out
    assert "RGB as asked overrides the adaface default (BGR)" in out
    info = json.loads((tmp_path / "rgb" / "model.json").read_text())
    assert info["converted_from"]["input"]["color_space"] == "RGB"
    mean = ["--input-mean", "0.485", "0.456", "0.406", "--input-std", "0.229", "0.224", "0.225"]
    assert main(["convert", str(path), str(tmp_path / "x"), *mean]) == 2
    assert "iresnet18" in capsys.readouterr().err  # an IResNet cannot renormalise its input


def test_wrong_format_and_unknown_layouts_fail_in_one_line(tmp_path, capsys):
    model = create_model("mobilefacenet_test")
    torch.save(model.state_dict(), tmp_path / "mfn.pt")
    assert (
        main(["convert", str(tmp_path / "mfn.pt"), str(tmp_path / "o"), "--format", "cvlface"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "conv1.0.weight" in err
    assert "--format mobilefacenet" in err
    torch.save({"weights": {"foo.bar": torch.zeros(2)}, "epoch": 1}, tmp_path / "odd.pt")
    assert main(["convert", str(tmp_path / "odd.pt"), str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights" in err and "--format" in err
    torch.save({"epoch": 1, "state": {"a": 1}}, tmp_path / "none.pt")
    assert (
        main(
            ["convert", str(tmp_path / "none.pt"), str(tmp_path / "o3"), "--format", "insightface"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "state_dict_backbone" in err and "'teacher'" not in err


def test_ambiguous_ir_layout_asks_for_a_format(tmp_path):
    state = golden_state("adaface_ir18")  # bare IR keys: AdaFace (BGR) or CVLFace (RGB)?
    with pytest.raises(ConversionError, match="--format adaface or --format cvlface"):
        detect_format(state, "ir.pt")


def test_convert_onnx_includes_the_input_convention(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    model = create_model("mobilefacenet_test").eval()  # paper layout: ImageNet-normalised input
    torch.save(model.state_dict(), tmp_path / "mfn.pt")
    out = tmp_path / "exp"
    assert (
        main(
            [
                "convert",
                str(tmp_path / "mfn.pt"),
                str(out),
                "--model",
                "mobilefacenet_test",
                "--onnx",
            ]
        )
        == 0
    )
    assert "model.onnx" in capsys.readouterr().out
    info = json.loads((out / "model.json").read_text())
    assert info["onnx"]["file"] == "model.onnx" and info["kwargs"]["input_std"][0] == 0.229
    x01 = torch.rand(3, 3, 112, 112)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model((x01 - mean) / std).numpy()  # the source network on its own input
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": (x01 * 2 - 1).numpy()})[0]  # the library's input
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
