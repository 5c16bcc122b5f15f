"""How much of the SSL-only accuracy is decorrelation? Features raw and PCA-whitened.

Usage: python benchmarks/study/ssl_whitening.py [--study runs/study] [--extra NAME=EXPORT ...]

SSL-only accuracy compares cosine similarities of a feature as it comes. A random network's
feature, or the pixels, are dominated by a few directions (brightness, pose), so part of what
pretraining gains over them can also be had by decorrelating them, without any training.
Here every feature of the study (benchmarks/study/study_cpu_small.py: random init, the LAFS teacher,
the DINO random-crop teacher) and the raw pixels (reduced to their top principal components,
as many as the SSL feature has) are scored on all of lfw.bin (10-fold, flip) as they are and
after PCA whitening fitted on the 6,019 celeba-112 faces without their labels (no shrinkage;
the map ``lafs eval --whiten ../shared/data/celeba-112/images`` applies; flip test: the
whitened features of a face and its mirror image are summed). A third, wide readout keeps what
the pooled feature throws away: the whole last-layer token grid of the backbone (7 x 7 x 128 =
6,272 numbers for cpu_small), or the pixels average-pooled to 28 x 28 RGB (2,352), reduced to
its top 512 principal components and whitened with shrinkage 1 (eigenvalues l -> l + mean l: the
grid has more dimensions than celeba-112 has faces). It is the classic whitened-PCA face
descriptor, and tells how much of a feature's identity content a linear readout of the
unpooled backbone already has without any training. Writes
benchmarks/results/ssl_whitening.json, its BENCHMARKS.md section and the
``ssl_only_whitened`` block of study.json. ``--extra`` adds rows for other exports, e.g. a
teacher checkpoint (``lafs export RUN/checkpoints/step_X.pt --out X``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import (  # noqa: E402
    RESULTS,
    ROOT,
    SHARED_DATA,
    accuracy_pct,
    markdown_table,
    render_benchmarks_md,
    write_result,
)

from lafslib.data.verification import load_bin  # noqa: E402
from lafslib.evaluation.embed import embed_images  # noqa: E402
from lafslib.evaluation.verification import evaluate_embeddings  # noqa: E402
from lafslib.evaluation.whitening import fit_whitening, whitening  # noqa: E402
from lafslib.io import list_images, read_image  # noqa: E402
from lafslib.models import load_export  # noqa: E402

FEATURES = {
    "random_init": ("random init", "random_init"),
    "lafs": ("LAFS teacher", "pretrain_lafs/export"),
    "dino_randomcrop": ("DINO random-crop teacher", "pretrain_dino_randomcrop/export"),
}


def whitened(train: np.ndarray, *tests: np.ndarray) -> list[np.ndarray]:
    """``tests`` mapped by the PCA whitening fitted on ``train`` (N, D)."""
    t = torch.from_numpy(train.astype(np.float64))
    weight, bias = whitening(len(t), t.sum(0), t.T @ t, t.shape[1], shrink=0.0)
    return [(torch.from_numpy(x.astype(np.float64)) @ weight.T + bias).numpy() for x in tests]


WIDE_COMPONENTS = 512
WIDE_SHRINK = 1.0
PIXEL_POOL = 4


class TokenGrid(nn.Module):
    """The backbone's last-layer patch tokens, flattened: (B, 3, H, W) -> (B, N * dim)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = getattr(model, "backbone", model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_features(x)
        return tokens[:, self.backbone.num_prefix_tokens :].flatten(1)


class PooledPixels(nn.Module):
    """Pixels average-pooled by ``PIXEL_POOL`` and flattened: (B, 3, H, W) -> (B, 3 H W / 16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, PIXEL_POOL).flatten(1)


def wide_score(
    readout: nn.Module,
    celeba: np.ndarray,
    lfw: np.ndarray,
    mirrored: np.ndarray,
    issame: np.ndarray,
) -> dict[str, float]:
    """LFW accuracy of ``readout`` reduced to its top ``WIDE_COMPONENTS`` principal components
    of celeba-112 and whitened with shrinkage ``WIDE_SHRINK``."""
    train = torch.from_numpy(embed_images(readout, celeba, 256, flip=False)).double()
    weight, bias = whitening(
        len(train), train.sum(0), train.T @ train, WIDE_COMPONENTS, shrink=WIDE_SHRINK
    )
    del train
    a, b = (
        (torch.from_numpy(embed_images(readout, x, 256, flip=False)).double() @ weight.T + bias)
        for x in (lfw, mirrored)
    )
    return score(a.numpy(), b.numpy(), issame)


def score(a: np.ndarray, b: np.ndarray, issame: np.ndarray) -> dict[str, float]:
    """10-fold LFW accuracy of per-image features ``a`` and their mirror images' ``b``."""
    r = evaluate_embeddings(a + b, issame)
    return {"accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"]}


def pixel_components(celeba: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (P,) and top-``k`` principal directions (P, k) of flattened pixels in [-1, 1]."""
    x = torch.from_numpy(celeba.reshape(len(celeba), -1)).double() / 127.5 - 1
    mu = x.mean(0)
    x -= mu
    values, vectors = torch.linalg.eigh(x @ x.T)  # the N x N Gram matrix: N << P
    top = vectors[:, -k:].flip(1) / values[-k:].flip(0).sqrt()
    return mu.numpy(), (x.T @ top).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", type=Path, default=ROOT / "runs" / "study")
    parser.add_argument("--lfw", type=Path, default=SHARED_DATA / "lfw" / "lfw.bin")
    parser.add_argument("--celeba", type=Path, default=SHARED_DATA / "celeba-112" / "images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", nargs="*", default=[], metavar="NAME=EXPORT")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    exports = {key: (what, args.study / folder) for key, (what, folder) in FEATURES.items()}
    for item in args.extra:
        name, sep, folder = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"ssl_whitening: --extra {item!r} is not NAME=EXPORT")
        exports[name] = (name, Path(folder))
    for _, folder in exports.values():
        if not (folder / "model.json").is_file():
            raise SystemExit(
                f"ssl_whitening: {folder} has no export (run benchmarks/study/study_cpu_small.py "
                "first, or lafs export)"
            )
    t0 = time.perf_counter()
    lfw, issame = load_bin(args.lfw)
    mirrored = np.ascontiguousarray(lfw[:, :, ::-1])
    celeba = np.stack([read_image(args.celeba / f) for f in list_images(args.celeba)])
    results: dict[str, dict[str, Any]] = {}
    dim = 0
    for key, (what, folder) in exports.items():
        model = load_export(folder)
        a, b = (embed_images(model, x, 256, flip=False) for x in (lfw, mirrored))
        if key == "random_init":
            dim = a.shape[1]  # the pixels keep as many components as the SSL feature has
        results[key] = {"feature": what, "raw": score(a, b, issame)}
        white, _ = fit_whitening(model, args.celeba, batch_size=256)  # as lafs eval --whiten
        weight, bias = white.weight.numpy(), white.bias.numpy()
        results[key]["whitened"] = score(a @ weight.T + bias, b @ weight.T + bias, issame)
        results[key]["wide"] = wide_score(TokenGrid(model), celeba, lfw, mirrored, issame)
    mu, components = pixel_components(celeba, dim)

    def pixels(x: np.ndarray) -> np.ndarray:
        """Top principal components of the pixels (chunked: the pixels are 37,632 numbers)."""
        rows = [
            (x[s : s + 1024].reshape(-1, mu.size) / 127.5 - 1 - mu) @ components
            for s in range(0, len(x), 1024)
        ]
        return np.concatenate(rows)

    flat = [x.reshape(len(x), -1).astype(np.float32) / 127.5 - 1 for x in (lfw, mirrored)]
    results["raw_pixels"] = {
        "feature": f"raw pixels (whitened: top {dim} principal components)",
        "raw": score(*flat, issame),
        "whitened": score(*whitened(pixels(celeba), pixels(lfw), pixels(mirrored)), issame),
        "wide": wide_score(PooledPixels(), celeba, lfw, mirrored, issame),
    }

    rows = [
        [
            r["feature"],
            accuracy_pct(r["raw"]),
            accuracy_pct(r["whitened"]),
            f"{100 * (r['whitened']['accuracy'] - r['raw']['accuracy']):+.2f}",
            accuracy_pct(r["wide"]),
        ]
        for r in results.values()
    ]
    table = markdown_table(
        [
            "feature",
            "raw (%)",
            "PCA-whitened (%)",
            "change",
            f"wide: token grid / pixels, top {WIDE_COMPONENTS} PCs whitened (%)",
        ],
        rows,
    )
    gain, wide_gain = (
        {
            k: results[k][column]["accuracy"] - results["random_init"][column]["accuracy"]
            for k in ("lafs", "dino_randomcrop")
        }
        for column in ("whitened", "wide")
    )
    notes = (
        f"SSL-only accuracy on all 6,000 LFW pairs (10-fold, flip). Whitening: PCA fitted on "
        f"the {len(celeba)} celeba-112 faces without labels, every direction scaled to unit "
        f"variance ({dim} dimensions). Whitened, the LAFS teacher is "
        f"{100 * gain['lafs']:+.2f} and the DINO random-crop teacher "
        f"{100 * gain['dino_randomcrop']:+.2f} points from random init; in the wide readout "
        f"(token grid, top {WIDE_COMPONENTS} PCs, shrinkage {WIDE_SHRINK:g}) "
        f"{100 * wide_gain['lafs']:+.2f} and {100 * wide_gain['dino_randomcrop']:+.2f}; the "
        f"pixels' row pools them to {112 // PIXEL_POOL} x {112 // PIXEL_POOL}. Study runs: "
        f"{args.study}. Wall {(time.perf_counter() - t0) / 60:.1f} min."
    )
    write_result(
        "ssl_whitening",
        "SSL-only features raw and PCA-whitened (celeba-112 -> LFW)",
        table,
        "python benchmarks/study/ssl_whitening.py " + shlex.join(sys.argv[1:]),
        results,
        notes,
    )
    study = RESULTS / "study.json"
    if study.is_file():
        payload = json.loads(study.read_text())
        keys = (*FEATURES, "raw_pixels")
        payload["data"]["ssl_only_whitened"] = {k: results[k]["whitened"] for k in keys}
        payload["data"]["ssl_only_wide"] = {k: results[k]["wide"] for k in keys}
        study.write_text(json.dumps(payload, indent=2, default=float) + "\n")
        render_benchmarks_md()
    print(table)
    print(notes)


if __name__ == "__main__":
    main()
