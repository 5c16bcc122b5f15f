"""``lafs data``, ``lafs align`` and ``lafs landmarks``: preparing faces and their landmarks."""

from __future__ import annotations

import argparse

from lafslib.cli.common import command, progress_bar

__all__ = ["add_data", "add_align", "add_landmarks", "add_detector_options", "detector_kwargs"]


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
        help="dlib (HOG + 68 points), dlib-cnn, dlib5, face-alignment (FAN), "
        "sidecar (with --landmarks-file) or learned (with --weights EXPORT)",
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
    if name in ("dlib", "dlib-cnn", "dlib5"):
        out = {"upsample": args.upsample}
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
        "crops in the same tree under DST with landmarks5.csv (and landmarks68.csv) in crop "
        "pixels, and align_report.json listing photos with no face. Resumable; inputs are "
        "never modified.",
        """
  lafs align ../shared/data/celeba-raw-mini aligned/ --detector dlib --workers 2
  lafs align photos/ aligned/ --detector face-alignment --weights ~/fan_weights --faces all
  lafs align photos/ aligned/ --detector face-alignment --boxes dlib   # no S3FD weights
""",
    )
    p.add_argument("src", help="folder of photos (any tree)")
    p.add_argument("dst", help="output folder (outside SRC)")
    add_detector_options(p, "dlib")
    p.add_argument("--size", type=int, default=112, help="side of the aligned crops")
    p.add_argument(
        "--faces", choices=("largest", "all"), default="largest", help="faces kept per photo"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_align)


def _run_align(args: argparse.Namespace) -> int:
    import json

    from lafslib.landmarks.align import REPORT, align_folder

    if args.detector == "face-alignment" and args.boxes == "dlib" and args.workers > 1:
        raise ValueError("--boxes dlib with --workers > 1 is not supported; use --workers 1")
    report = align_folder(
        args.src,
        args.dst,
        args.detector,
        detector_kwargs(args),
        size=args.size,
        policy=args.faces,
        workers=args.workers,
        progress=progress_bar(args.quiet, "align"),
    )
    summary = report.to_dict()
    summary["no_face"] = len(report.no_face)
    summary["unreadable"] = len(report.unreadable)
    print(json.dumps(summary, indent=2))
    print(f"report: {args.dst}/{REPORT}")
    return 0


def add_landmarks(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "landmarks",
        "Write a landmark sidecar for an already-aligned dataset (folder or .rec) with a "
        "detector, or the canonical ArcFace template with --template. Images where no face "
        "is found get the template and are listed in the printed report.",
        """
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
    from lafslib.landmarks.detectors import create_detector

    if args.template == bool(args.detector):
        raise ValueError("choose one landmark source: --detector NAME or --template")
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
