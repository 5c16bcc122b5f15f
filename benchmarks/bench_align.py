"""Alignment: the bundled YuNet against dlib (HOG + 68 points), side by side in one run.

Usage: python benchmarks/bench_align.py [--large-photos 20]

One process, one thread (OpenCV, torch and BLAS pinned to 1), so photos/s is per core. For each
detector and photo set, the detector's start-up (model load) is timed apart; then every photo
is timed in four phases: decode (read upright), detect, align (warp to the ArcFace template),
write (JPEG q95 encode + file), after a warm-up on 3 photos (steady state). Sets: the 80 photos
of ../shared/data/celeba-raw-mini (389x500) and the same photos upscaled to 1600 px on the
long side (the first ``--large-photos`` of them, dlib being slow there).

Quality, dlib as the reference on celeba-raw-mini: detection rate; photos where the two pick
different faces (box IoU < 0.3); on the others, the distance of YuNet's 5 points to dlib's
(68 -> 5) in units of dlib's inter-ocular distance; the cosine between the real MobileFaceNet
(../shared/models/mobilefacenet-ms1m) embeddings of each photo's two crops (no flip); and the
verification of all 3,160 pairs of the 80 photos (20 people) with each alignment (ROC AUC, best
accuracy). Independent reference: 600 crops of lfw.bin (insightface's own 5-point alignment),
padded by half their size; each detector's 5 points against the ArcFace template there.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import ROOT, SHARED_DATA, markdown_table, write_result  # noqa: E402
from PIL import Image  # noqa: E402

from lafslib.io import read_image  # noqa: E402
from lafslib.landmarks.detectors import create_detector  # noqa: E402
from lafslib.landmarks.template import align_face  # noqa: E402

SHARED_MODELS = Path(os.environ.get("LAFS_SHARED_MODELS", ROOT.parent / "shared" / "models"))
DETECTORS = {"dlib": {"upsample": 1}, "yunet": {}}


def _time_set(name: str, photos: list[Path], out: Path) -> dict:
    """Start-up and per-phase seconds of one detector over ``photos``."""
    t0 = time.perf_counter()
    detector = create_detector(name, **DETECTORS[name])
    startup = time.perf_counter() - t0
    for photo in photos[:3]:  # warm-up
        detector.detect(read_image(photo))
    phases = dict.fromkeys(("decode", "detect", "align", "write"), 0.0)
    points, crops, boxes = {}, {}, {}
    for i, photo in enumerate(photos):
        t = time.perf_counter()
        image = read_image(photo)
        t1 = time.perf_counter()
        faces = detector.detect(image)
        t2 = time.perf_counter()
        if faces:
            face = max(faces, key=lambda f: f.area)
            crop, _ = align_face(image, face.five_points(), 112)
            t3 = time.perf_counter()
            Image.fromarray(crop).save(out / f"{name}_{i}.jpg", quality=95)
            t4 = time.perf_counter()
            points[photo], crops[photo], boxes[photo] = face.five_points(), crop, face.box
        else:
            t3 = t4 = t2
        for key, dt in zip(phases, (t1 - t, t2 - t1, t3 - t2, t4 - t3)):
            phases[key] += dt
    total = sum(phases.values())
    return {
        "startup_s": startup,
        "photos": len(photos),
        "with_face": len(points),
        "phase_ms": {k: 1000 * v / len(photos) for k, v in phases.items()},
        "photos_per_s": len(photos) / total,
        "points": points,
        "crops": crops,
        "boxes": boxes,
    }


def _upscaled(photos: list[Path], folder: Path) -> list[Path]:
    out = []
    for photo in photos:
        image = Image.fromarray(read_image(photo))
        scale = 1600 / max(image.size)
        big = image.resize((round(image.width * scale), round(image.height * scale)), 3)
        path = folder / f"{photo.parent.name}_{photo.stem}.jpg"
        big.save(path, quality=95)
        out.append(path)
    return out


def _embeddings(sets: list[list[np.ndarray]], folder: Path) -> list[np.ndarray]:
    """Real MobileFaceNet embeddings (no flip) of each list of crops."""
    from lafslib.evaluation.embed import embed_images
    from lafslib.models.convert import convert_to_export
    from lafslib.models.export import load_export

    weights = SHARED_MODELS / "mobilefacenet-ms1m" / "mobilefacenet.pt"
    export, _ = convert_to_export(weights, folder / "mobilefacenet")
    model = load_export(export)
    return [embed_images(model, np.stack(crops), flip=False) for crops in sets]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union)


def _verification(emb: np.ndarray, people: list[str]) -> dict:
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    i, j = np.triu_indices(len(emb), 1)
    sims, same = (emb[i] * emb[j]).sum(1), np.array(people)[i] == np.array(people)[j]
    order = np.argsort(-sims)
    tpr = np.cumsum(same[order]) / same.sum()
    fpr = np.cumsum(~same[order]) / (~same).sum()
    auc = float(np.trapezoid(tpr, fpr))
    accuracy = max((same == (sims >= t)).mean() for t in sims[order])
    return {"pairs": len(sims), "same": int(same.sum()), "auc": auc, "accuracy": float(accuracy)}


def _template_error(name: str) -> float:
    """Mean 5-point error (inter-ocular units) of a detector on 600 lfw.bin crops."""
    from lafslib.data.verification import load_bin_raw
    from lafslib.io import decode_image
    from lafslib.landmarks.template import ARCFACE_TEMPLATE_112 as TEMPLATE

    raw, _ = load_bin_raw(SHARED_DATA / "lfw" / "lfw.bin")
    detector = create_detector(name, **DETECTORS[name])
    iod = np.linalg.norm(TEMPLATE[0] - TEMPLATE[1])
    errors = []
    for data in raw[::12][:600]:
        padded = cv2.copyMakeBorder(decode_image(data), 56, 56, 56, 56, cv2.BORDER_REPLICATE)
        faces = detector.detect(padded)
        if faces:
            centre = np.array([112.0, 112.0])
            face = min(faces, key=lambda f: np.abs(f.box.reshape(2, 2).mean(0) - centre).sum())
            errors.append(np.linalg.norm(face.five_points() - 56 - TEMPLATE, axis=1).mean() / iod)
    return float(np.mean(errors))


def _quality(photos: list[Path], ref: dict, new: dict, folder: Path) -> dict:
    both = [p for p in photos if p in ref["points"] and p in new["points"]]
    same = [p for p in both if _iou(ref["boxes"][p], new["boxes"][p]) >= 0.3]
    err = [
        np.linalg.norm(new["points"][p] - ref["points"][p], axis=1).mean()
        / np.linalg.norm(ref["points"][p][0] - ref["points"][p][1])
        for p in same
    ]
    a, b = _embeddings([[run["crops"][p] for p in both] for run in (new, ref)], folder)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    matched = np.array([p in same for p in both])
    people = [p.parent.name for p in both]
    return {
        "photos_both": len(both),
        "different_face": len(both) - len(same),
        "point_error_iod_mean": float(np.mean(err)),
        "point_error_iod_median": float(np.median(err)),
        "mobilefacenet_cosine_mean_all": float(cos.mean()),
        "mobilefacenet_cosine_mean_same_face": float(cos[matched].mean()),
        "verification_yunet": _verification(a, people),
        "verification_dlib": _verification(b, people),
        "lfw_template_error_iod": {name: _template_error(name) for name in DETECTORS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large-photos", type=int, default=20)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    small = sorted((SHARED_DATA / "celeba-raw-mini").glob("*/*.jpg"))
    rows, data = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {
            "celeba-raw-mini (389x500)": small,
            "upscaled to 1600 px": _upscaled(small[: args.large_photos], tmp),
        }
        for set_name, photos in sets.items():
            results = {name: _time_set(name, photos, tmp) for name in DETECTORS}
            for name, r in results.items():
                ms = r["phase_ms"]
                rows.append(
                    [
                        set_name,
                        name,
                        f"{r['with_face']}/{r['photos']}",
                        f"{r['startup_s']:.2f}",
                        *(f"{ms[k]:.1f}" for k in ("decode", "detect", "align", "write")),
                        f"{r['photos_per_s']:.1f}",
                    ]
                )
            speedup = results["yunet"]["photos_per_s"] / results["dlib"]["photos_per_s"]
            rows.append([set_name, "yunet / dlib", "", "", "", "", "", "", f"{speedup:.1f}x"])
            data[set_name] = {
                name: {k: v for k, v in r.items() if k not in ("points", "crops", "boxes")}
                for name, r in results.items()
            }
            data[set_name]["speedup"] = speedup
            if set_name.startswith("celeba"):
                data["quality"] = _quality(photos, results["dlib"], results["yunet"], tmp)
    header = ["photos", "detector", "faces", "start-up s"]
    header += [f"{k} ms" for k in ("decode", "detect", "align", "write")] + ["photos/s/core"]
    table = markdown_table(header, rows)
    q = data["quality"]
    vy, vd = q["verification_yunet"], q["verification_dlib"]
    lfw = q["lfw_template_error_iod"]
    table += (
        f"\n\nQuality on celeba-raw-mini ({q['photos_both']} photos with a face from both; "
        f"{q['different_face']} where they pick different faces): YuNet's 5 points lie "
        f"{100 * q['point_error_iod_mean']:.1f}% of dlib's inter-ocular distance from dlib's on "
        f"average (median {100 * q['point_error_iod_median']:.1f}%); on 600 lfw.bin crops "
        f"(insightface's alignment as the reference) YuNet errs {100 * lfw['yunet']:.1f}% and "
        f"dlib {100 * lfw['dlib']:.1f}%. MobileFaceNet cosine of a photo's two crops: "
        f"{q['mobilefacenet_cosine_mean_same_face']:.3f} on average where both pick the same "
        f"face ({q['mobilefacenet_cosine_mean_all']:.3f} over all). Verification of all "
        f"{vy['pairs']} pairs ({vy['same']} same): YuNet crops AUC {vy['auc']:.4f}, best "
        f"accuracy {100 * vy['accuracy']:.2f}%; dlib crops AUC {vd['auc']:.4f}, "
        f"{100 * vd['accuracy']:.2f}%."
    )
    notes = (
        "One process, one thread (OpenCV, torch, BLAS). Start-up = building the detector; "
        "phases per photo after 3 warm-up photos. dlib: HOG (upsample 1) + 68-point predictor; "
        "yunet: bundled YuNet-s, photos downscaled to 640 px on the long side for detection "
        "only. Crops 112x112 on the ArcFace template, JPEG q95."
    )
    write_result(
        "align",
        "Face alignment: YuNet vs dlib (lafs align)",
        table,
        "python benchmarks/bench_align.py",
        data,
        notes,
    )
    print(table)


if __name__ == "__main__":
    main()
