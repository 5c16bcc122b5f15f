"""load_embedding_model: an export folder on PyTorch or ONNX Runtime, chosen or automatic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lafslib.errors import ExportError, InputNotFoundError
from lafslib.evaluation.embed import embed_images
from lafslib.evaluation.runtime import load_embedding_model
from lafslib.layers import KPRPE
from lafslib.models import create_model, save_export


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A plain export and the same one with model.onnx; a KP-RPE ViT export with model.onnx."""
    from lafslib.engine.export import add_onnx

    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    ir = create_model("iresnet_test").eval()
    with torch.no_grad():  # BatchNorm statistics of a trained model, not mean 0 / var 1
        for m in ir.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    save_export(ir, root / "plain")
    save_export(ir, root / "onnx")
    add_onnx(root / "onnx")
    vit = create_model("vit_test_kprpe").eval()
    for m in vit.modules():  # a trained projection: the keypoints change the embedding
        if isinstance(m, KPRPE):
            torch.nn.init.normal_(m.linear.weight, std=0.1)
    save_export(vit, root / "kprpe")
    add_onnx(root / "kprpe")
    return root


def _faces(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def test_auto_picks_onnxruntime_only_with_a_recorded_onnx_file(exports):
    plain = load_embedding_model(exports / "plain")
    assert plain.backend == "torch" and not plain.training
    fast = load_embedding_model(exports / "onnx")
    assert fast.backend == "onnxruntime"
    assert fast.pretrained_cfg == plain.pretrained_cfg
    assert load_embedding_model(exports / "onnx", "torch").backend == "torch"
    # the same embeddings through embed_images (flip test on), either runtime
    faces = _faces()
    np.testing.assert_allclose(
        embed_images(fast, faces, batch_size=2),
        embed_images(plain, faces, batch_size=2),
        rtol=1e-3,
        atol=1e-4,
    )


def test_keypoint_model_runs_on_both_backends(exports):
    torch_model = load_embedding_model(exports / "kprpe", "torch")
    ort_model = load_embedding_model(exports / "kprpe", "onnxruntime")
    assert ort_model.pretrained_cfg.needs_keypoints and ort_model.backend == "onnxruntime"
    faces = _faces(3)
    kp = np.random.default_rng(1).uniform(0.2, 0.8, (3, 5, 2)).astype(np.float32)
    np.testing.assert_allclose(
        embed_images(ort_model, faces, 2, keypoints=kp),
        embed_images(torch_model, faces, 2, keypoints=kp),
        rtol=1e-3,
        atol=1e-4,
    )


def test_a_stale_onnx_file_is_not_used(exports, tmp_path):
    import shutil

    shutil.copytree(exports / "onnx", tmp_path / "e")
    info = json.loads((tmp_path / "e" / "model.json").read_text())
    del info["onnx"]  # as after re-exporting the weights without --onnx
    (tmp_path / "e" / "model.json").write_text(json.dumps(info))
    assert load_embedding_model(tmp_path / "e").backend == "torch"
    with pytest.raises(ExportError, match="no model.onnx recorded"):
        load_embedding_model(tmp_path / "e", "onnxruntime")


def test_bad_requests_are_one_line_user_errors(exports, tmp_path):
    with pytest.raises(ExportError, match="no model.onnx recorded"):
        load_embedding_model(exports / "plain", "onnxruntime")
    with pytest.raises(ExportError, match="runs on the CPU, not on cuda"):
        load_embedding_model(exports / "onnx", "onnxruntime", device="cuda")
    with pytest.raises(ExportError, match="backend must be one of"):
        load_embedding_model(exports / "onnx", "tensorrt")
    with pytest.raises(InputNotFoundError, match="export folder not found"):
        load_embedding_model(tmp_path / "nowhere")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text((exports / "onnx" / "model.json").read_text())
    (tmp_path / "broken" / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ExportError, match="ONNX Runtime cannot load it"):
        load_embedding_model(tmp_path / "broken", "onnxruntime")


def _mmapped_bytes() -> int:
    """glibc's ``mallinfo2().hblkhd``: bytes held in blocks mapped with ``mmap``."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    return int(libc.mallinfo2().hblkhd)


def test_large_activations_come_from_the_reused_heap_while_embedding():
    from lafslib.evaluation.embed import _glibc, reuse_freed_memory

    if _glibc() is None or not hasattr(_glibc(), "mallinfo2"):
        pytest.skip("glibc >= 2.33 only")

    def mapped_by_a_large_tensor() -> int:
        before = _mmapped_bytes()
        t = torch.empty(64 * 2**20, dtype=torch.uint8)
        grown = _mmapped_bytes() - before
        del t
        return grown

    assert mapped_by_a_large_tensor() >= 64 * 2**20  # glibc's default: a fresh mapping
    with reuse_freed_memory():
        with reuse_freed_memory():  # nested: restored once, at the last exit
            assert mapped_by_a_large_tensor() == 0
        assert mapped_by_a_large_tensor() == 0
