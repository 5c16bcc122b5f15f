"""``lafs data``, ``lafs align`` and ``lafs landmarks``: preparing faces and their landmarks."""

from __future__ import annotations

import argparse

from lafslib.cli.common import command, progress_bar

__all__ = [
    "add_align",
    "add_align_merge",
    "add_data",
    "add_detector_options",
    "add_landmarks",
    "detector_kwargs",
]


# ----------------------------------------------------------------------------- data


def add_data(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "data",
        "Dataset tools: pack identity folders into insightface RecordIO, inspect sources.",
        """
  lafs data pack ../shared/data/faces-mini/identities faces.rec
  lafs data info faces.rec
  lafs data info ../shared/data/celeba-112/images --labelled
""",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="COMMAND")
    pack = command(
        dsub,
        "pack",
        "Pack an identity-folder tree (one sub-folder per identity) into .rec/.idx with "
        "identity labels, plus a <name>.lst.csv sidecar of key,path,label.",
        """
  lafs data pack ../shared/data/faces-mini/identities out/faces.rec
""",
    )
    pack.add_argument("src", help="folder with one sub-folder of images per identity")
    pack.add_argument("out", help="output .rec path (.idx and .lst.csv are written beside it)")
    pack.add_argument("--quiet", action="store_true", help="no progress bar")
    pack.set_defaults(func=_run_data_pack)
    info = command(
        dsub,
        "info",
        "Print the size, identities, landmark sidecar and unreadable images of a data source.",
        """
  lafs data info faces.rec
  lafs data info ../shared/data/celeba-112/images --labelled --check
""",
    )
    info.add_argument("source", help="image folder, .rec file, or 'synthetic'")
    info.add_argument("--labelled", action="store_true", help="one sub-folder per identity")
    info.add_argument("--check", action="store_true", help="decode every image and count bad ones")
    info.set_defaults(func=_run_data_info)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _run_data_pack(args: argparse.Namespace) -> int:
    import json

    from lafslib.data import pack_folder

    if not str(args.out).endswith(".rec"):
        raise ValueError(f"output must end in .rec, got {args.out}")
    summary = pack_folder(args.src, args.out, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def _run_data_info(args: argparse.Namespace) -> int:
    import json
    import warnings

    from lafslib.data import open_dataset

    ds = open_dataset(args.source, labelled=args.labelled)
    info = {"source": args.source, "images": len(ds), "type": type(ds).__name__}
    if getattr(ds, "labelled", False) or args.labelled:
        info["identities"] = int(ds.num_classes)
    table = getattr(ds, "landmarks", None)
    if table is not None and hasattr(table, "source"):
        info["landmarks"] = {"file": table.source, "points": table.num_points}
    if args.check:
        from tqdm import tqdm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i in tqdm(range(len(ds)), desc="check", unit="img"):
                try:
                    ds.sample(i)
                except Exception as exc:  # noqa: BLE001 - counted and reported below
                    info.setdefault("unreadable", []).append(str(exc))
        info["unreadable_count"] = len(info.get("unreadable", []))
    print(json.dumps(info, indent=2))
    if args.check and info["unreadable_count"] == len(ds):
        from lafslib.errors import DataError

        raise DataError(f"{args.source}: none of the {len(ds)} images is readable")
    return 0


# ----------------------------------------------------------------------------- landmarks


def add_detector_options(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--detector",
        default=default,
        help="yunet (bundled, 5 points; the default), dlib (HOG + 68 points), dlib-cnn, dlib5, "
        "face-alignment (FAN), sidecar (with --landmarks-file) or learned (with --weights EXPORT)",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="yunet: faces scoring below this (0..1) are dropped (default 0.7); dlib: minimum "
        "detector confidence (default -0.5)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=640,
        help="yunet: photos are downscaled to this long side for detection (0: full size); "
        "crops are cut from the full-resolution photo",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="face-alignment: folder with the FAN weight files (default "
        "$TORCH_HOME/hub/checkpoints); learned: the exported Part fViT folder",
    )
    p.add_argument(
        "--boxes",
        default=None,
        help="face-alignment face boxes: sfd (its detector), dlib (no detector weights) "
        "or full (the whole image); dlib: full uses the whole image as the face box",
    )
    p.add_argument("--landmarks-file", default=None, help="sidecar for --detector sidecar")
    p.add_argument("--upsample", type=int, default=1, help="dlib: upsampling before detection")
    p.add_argument("--device", default="auto", help="face-alignment / learned: torch device")


def detector_kwargs(args: argparse.Namespace) -> dict:
    name = args.detector
    if name == "yunet":
        out = {"input_size": args.input_size}
        if args.score_threshold is not None:
            out["score_threshold"] = args.score_threshold
        return out
    if name in ("dlib", "dlib-cnn", "dlib5"):
        out = {"upsample": args.upsample}
        if args.score_threshold is not None:
            out["min_score"] = args.score_threshold
        if args.boxes == "full":
            out["detector"] = "full"
        return out
    if name == "face-alignment":
        boxes = args.boxes or "sfd"
        if boxes == "dlib":
            from lafslib.landmarks.detectors import DlibDetector

            boxes = DlibDetector(upsample=args.upsample)
        return {"boxes": boxes, "weights_dir": args.weights, "device": args.device}
    if name == "sidecar":
        if not args.landmarks_file:
            raise ValueError("--detector sidecar needs --landmarks-file FILE")
        return {"path": args.landmarks_file}
    if name == "learned":
        if not args.weights:
            raise ValueError("--detector learned needs --weights EXPORT_DIR (a Part fViT export)")
        device = "cpu" if args.device == "auto" else args.device
        return {"export": args.weights, "device": device}
    from lafslib.landmarks.detectors import DETECTORS

    raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")


def add_align(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "align",
        "Detect, align (ArcFace 5-point template) and crop the faces of raw photos; write the "
        "crops in the same tree under DST with landmarks5.csv (and landmarks68.csv for 68-point "
        "detectors) in crop pixels, and align_report.json listing every photo that gave no crop "
        "and the duplicates. Resumable; shardable across machines (--shard, then lafs "
        "align-merge); inputs are never modified and no file alignment did not write is "
        "replaced.",
        """
  lafs align ../shared/data/celeba-raw-mini aligned/ --workers 2
  lafs align photos/ aligned/ --faces all --min-face 40 --drop-duplicates exact
  lafs align more_photos/ aligned/ --add                 # a second source into the same folder
  lafs align photos/ aligned/ --shard 3/16               # or from SLURM_ARRAY_TASK_ID / RANK
  lafs align-merge aligned/                              # once every shard has finished
  lafs align photos/ aligned/ --detector dlib            # 68 points too (landmarks68.csv)
  lafs align photos/ aligned/ --detector face-alignment --boxes dlib   # no S3FD weights
""",
    )
    p.add_argument("src", help="folder of photos (any tree)")
    p.add_argument("dst", help="output folder (outside SRC)")
    add_detector_options(p, "yunet")
    p.add_argument("--size", type=int, default=112, help="side of the aligned crops")
    p.add_argument(
        "--faces", choices=("largest", "all"), default="largest", help="faces kept per photo"
    )
    p.add_argument(
        "--min-face",
        type=float,
        default=24.0,
        help="faces whose box is smaller (shorter side, photo pixels) are dropped; photos left "
        "without a face are listed as too_small",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument(
        "--shard",
        default=None,
        help="K/N: align only shard K (0..N-1) of N, for job arrays; default from "
        "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or RANK/WORLD_SIZE, else 0/1 (everything, "
        "merged at once)",
    )
    p.add_argument(
        "--add",
        action="store_true",
        help="DST holds another source's alignment: add this source to it (earlier rows kept)",
    )
    add_duplicate_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_align)


def add_duplicate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--drop-duplicates",
        choices=("exact", "near"),
        default=None,
        help="leave later copies out of the dataset (moved under DST/.lafs_align/left_out): "
        "exact (same decoded pixels) or near (also crops within --near-distance bits of "
        "perceptual hash); duplicates are always listed in the report",
    )
    p.add_argument(
        "--near-distance",
        type=int,
        default=12,
        help="Hamming distance (of 256 bits) under which two crops are near duplicates",
    )


def _run_align(args: argparse.Namespace) -> int:
    import json

    from lafslib.landmarks.align import REPORT, align_folder
    from lafslib.landmarks.align_state import parse_shard, shard_from_env

    if args.detector == "face-alignment" and args.boxes == "dlib" and args.workers > 1:
        raise ValueError("--boxes dlib with --workers > 1 is not supported; use --workers 1")
    shard = parse_shard(args.shard) if args.shard else shard_from_env()
    report = align_folder(
        args.src,
        args.dst,
        args.detector,
        detector_kwargs(args),
        size=args.size,
        policy=args.faces,
        workers=args.workers,
        progress=progress_bar(args.quiet, "align"),
        min_face=args.min_face,
        shard=shard,
        add=args.add,
        drop_duplicates=args.drop_duplicates,
        near_distance=args.near_distance,
    )
    summary = report.to_dict()
    for key in ("no_face", "too_small", "unreadable", "conflicts"):
        summary[key] = len(summary[key])
    summary["photos_per_s"] = round(report.photos / max(report.seconds, 1e-9), 1)
    if report.merged is not None:
        summary["duplicates"] = {
            k: len(report.merged["duplicates"][k]) for k in ("exact", "near", "left_out")
        }
    print(json.dumps(summary, indent=2))
    if report.merged is None:
        print(f"shard {shard} done; when every shard has finished: lafs align-merge {args.dst}")
    else:
        print(f"report: {args.dst}/{REPORT}")
    return 0


def add_align_merge(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "align-merge",
        "Merge the shards of 'lafs align --shard K/N' (run as N jobs) into the dataset: "
        "landmarks5.csv (landmarks68.csv) and align_report.json, the same files one run writes; "
        "duplicates across shards are found here.",
        """
  lafs align-merge aligned/
  lafs align-merge aligned/ --drop-duplicates near
""",
    )
    p.add_argument("dst", help="the output folder the shards wrote into")
    add_duplicate_options(p)
    p.set_defaults(func=_run_align_merge)


def _run_align_merge(args: argparse.Namespace) -> int:
    import json

    from lafslib.landmarks.align import REPORT, merge_alignment

    report = merge_alignment(args.dst, args.drop_duplicates, args.near_distance)
    summary = {
        "photos": report["photos"],
        "faces": report["faces"],
        "detection_rate": report["detection_rate"],
        **{k: len(report[k]) for k in ("no_face", "too_small", "unreadable", "conflicts")},
        "duplicates": {k: len(report["duplicates"][k]) for k in ("exact", "near", "left_out")},
    }
    print(json.dumps(summary, indent=2))
    print(f"report: {args.dst}/{REPORT}")
    return 0


def add_landmarks(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "landmarks",
        "Write a landmark sidecar for an already-aligned dataset (folder or .rec) with a "
        "detector (default yunet), or the canonical ArcFace template with --template. Images where no face "
        "is found get the template and are listed in the printed report.",
        """
  lafs landmarks ../shared/data/faces-mini/identities --out lm.csv
  lafs landmarks ../shared/data/faces-mini/identities --out lm.csv --detector dlib
  lafs landmarks faces.rec --out faces.landmarks.npz --template
  lafs landmarks aligned/ --out lm68.csv --detector face-alignment --boxes full --points 68
""",
    )
    p.add_argument("data", help="aligned image folder or .rec file")
    p.add_argument("--out", required=True, help="sidecar file (.csv or .npz; .npz for .rec)")
    add_detector_options(p, None)
    p.add_argument(
        "--template", action="store_true", help="write the ArcFace template for every image"
    )
    p.add_argument(
        "--points", choices=("5", "68", "native"), default="5", help="points written per image"
    )
    p.add_argument(
        "--fallback",
        choices=("template", "error"),
        default="template",
        help="what an image without a detected face gets",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_landmarks)


def _run_landmarks(args: argparse.Namespace) -> int:
    import json

    from lafslib.data.annotate import annotate_dataset
    from lafslib.landmarks.detectors import DEFAULT_DETECTOR, create_detector

    if args.template and args.detector:
        raise ValueError("choose one landmark source: --detector NAME or --template")
    if not args.template:
        args.detector = args.detector or DEFAULT_DETECTOR
    detector = None if args.template else create_detector(args.detector, **detector_kwargs(args))
    report = annotate_dataset(
        args.data,
        args.out,
        detector,
        points=args.points,
        fallback=args.fallback,
        progress=progress_bar(args.quiet, "landmarks"),
    )
    summary = report.to_dict()
    summary["fallback_count"] = len(report.fallback)
    print(json.dumps(summary, indent=2))
    return 0
