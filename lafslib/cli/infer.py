"""``lafs embed``, ``lafs verify`` and ``lafs search``: answers about photos from an export."""

from __future__ import annotations

import argparse
from typing import Any

from lafslib.cli.common import command

__all__ = ["add_embed", "add_verify", "add_search"]


# ----------------------------------------------------------------------------- shared options


def _add_model_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--model",
        required=required,
        help="export folder (model.safetensors + model.json) or hf://owner/repo[@revision]",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnxruntime"),
        help="what runs the model",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=64, help="faces per forward pass")
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the embedding of the mirrored face (flip test); default: as the threshold "
        "report was measured, else off",
    )
    p.add_argument(
        "--detector",
        default=None,
        help="face detector for raw photos: yunet (bundled, default), dlib, dlib-cnn, "
        "face-alignment",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="yunet: drop faces scoring below this (0..1; default 0.7)",
    )
    p.add_argument(
        "--allow-ssl",
        action="store_true",
        help="accept a pretraining export (its self-supervised feature; no embedding head)",
    )


def _add_input_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--aligned",
        dest="aligned",
        action="store_const",
        const=True,
        default=None,
        help="the inputs are faces already aligned at the model's input size (no detection)",
    )
    group.add_argument(
        "--raw",
        dest="aligned",
        action="store_const",
        const=False,
        help="the inputs are raw photos: detect and align (default for folders unless every "
        "photo is of the model's input size; a .rec is aligned)",
    )


def _embedder(args: argparse.Namespace, threshold: Any = None, max_faces: int = 0) -> Any:
    from lafslib.inference import DEFAULT_DETECTOR, FaceEmbedder

    detector = args.detector or DEFAULT_DETECTOR
    kwargs = {}
    if args.score_threshold is not None:
        if detector != "yunet":
            raise ValueError(f"--score-threshold applies to the yunet detector, not {detector}")
        kwargs["score_threshold"] = args.score_threshold
    return FaceEmbedder(
        args.model,
        detector,
        backend=args.backend,
        device=args.device,
        batch_size=args.batch_size,
        flip=args.flip,
        threshold=threshold,
        max_faces=max_faces,
        detector_kwargs=kwargs,
        allow_ssl=args.allow_ssl,
    )


def _listed(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# ----------------------------------------------------------------------------- embed


def add_embed(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "embed",
        "Embed every face of a folder of photos (raw or aligned) or of a .rec into OUT.npy "
        "(unit embeddings, float32 or float16) + OUT.csv (photo, face, score, box, 5 "
        "landmarks per row) + OUT.json (model, options, photos without a face); resumable.",
        """
  lafs embed ../shared/data/celeba-raw-mini celeba.npy --model exports/mobilefacenet
  lafs embed ../shared/data/faces-mini/identities lfw.npy --model exports/mobilefacenet
  lafs embed faces.rec faces.npy --model hf://owner/repo --dtype float16 --workers 4
""",
    )
    p.add_argument("src", help="folder of photos (any tree) or an insightface .rec")
    p.add_argument("out", help="output embeddings file (.npy; .csv and .json beside it)")
    _add_model_options(p)
    _add_input_options(p)
    p.add_argument("--max-faces", type=int, default=0, help="largest faces per photo (0: all)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    p.add_argument(
        "--workers", type=int, default=0, help="processes reading and detecting (0: this one)"
    )
    p.add_argument("--shard", type=int, default=512, help="photos per resumable shard")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from lafslib.inference.collection import embed_collection
    from lafslib.inference.store import index_paths

    embedder = _embedder(args, max_faces=args.max_faces)
    report = embed_collection(
        args.src,
        args.out,
        embedder,
        aligned=args.aligned,
        workers=args.workers,
        dtype=args.dtype,
        shard=args.shard,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    index, meta = index_paths(args.out)
    what = "aligned crops" if report.aligned else f"raw photos, detector {embedder.detector_name}"
    resumed = f", {report.skipped_done} done by an earlier run" if report.skipped_done else ""
    print(
        f"embedded {report.faces} faces of {report.photos} photos ({what}{resumed}) into "
        f"{args.out} + {index.name} + {meta.name}"
    )
    if report.no_face:
        print(f"no face found in {len(report.no_face)} photos: {_listed(report.no_face)}")
    if report.unreadable:
        print(f"unreadable: {len(report.unreadable)} photos: {_listed(list(report.unreadable))}")
    return 0


# ----------------------------------------------------------------------------- verify


def add_verify(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "verify",
        "Say whether two photos show the same person: the cosine similarity of their largest "
        "faces, and the decision at a threshold (a number, or the one a 'lafs eval' report of "
        "this model measured at a FAR).",
        """
  lafs verify a.jpg b.jpg --model exports/mobilefacenet --threshold eval_report/report.json@1e-3
  lafs verify a.jpg b.jpg --model exports/mobilefacenet --threshold 0.3134
  lafs verify a.png b.png --model exports/mobilefacenet --aligned
""",
    )
    p.add_argument("a", help="first photo")
    p.add_argument("b", help="second photo")
    _add_model_options(p)
    _add_input_options(p)
    p.add_argument(
        "--threshold",
        help="a cosine similarity, or REPORT.json@FAR (e.g. report.json@1e-3; "
        "report.json@lfw@1e-3 for one set) from 'lafs eval' of this model",
    )
    p.set_defaults(func=_run_verify)


def _face_line(name: str, face: Any, count: int) -> str:
    x0, y0, x1, y1 = (round(float(v)) for v in face.box)
    score = "" if face.score != face.score else f", score {face.score:.3f}"  # NaN: aligned
    more = f" (largest of {count})" if count > 1 else ""
    return f"{name}: face at ({x0}, {y0}, {x1}, {y1}){score}{more}"


def _run_verify(args: argparse.Namespace) -> int:
    embedder = _embedder(args, threshold=args.threshold)
    result = embedder.verify(args.a, args.b, aligned=bool(args.aligned))
    print(_face_line(args.a, result.faces[0], result.counts[0]))
    print(_face_line(args.b, result.faces[1], result.counts[1]))
    flip = "on" if embedder.flip else "off"
    print(f"similarity: {result.similarity:.4f} (cosine; flip test {flip}; {embedder.backend})")
    if result.threshold is None:
        print("decision: none (give --threshold REPORT.json@1e-3, or a similarity)")
        return 0
    print(f"threshold: {result.threshold.describe()}")
    print(f"decision: {'same person' if result.same else 'different people'}")
    return 0


# ----------------------------------------------------------------------------- search


def add_search(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "search",
        "Find the k most similar gallery faces of every probe face (cosine similarity; exact "
        "search in chunks, or a faiss index when installed). GALLERY and PROBE are embeddings "
        "files of 'lafs embed' or folders / .rec files (embedded with --model). When both are "
        "the same, each face's own row is left out.",
        """
  lafs search lfw.npy lfw.npy -k 5
  lafs search gallery.npy ../shared/data/celeba-raw-mini --model exports/mobilefacenet
  lafs search ../shared/data/faces-mini/identities ../shared/data/faces-mini/identities \\
      --model exports/mobilefacenet --out matches.csv
""",
    )
    p.add_argument("gallery", help="embeddings file (.npy) or folder / .rec of photos")
    p.add_argument("probe", help="embeddings file (.npy) or folder / .rec of photos")
    _add_model_options(p, required=False)
    _add_input_options(p)
    p.add_argument("-k", "--top-k", dest="k", type=int, default=5, help="neighbours per probe")
    p.add_argument(
        "--index", default="auto", choices=("auto", "exact", "faiss"), help="search method"
    )
    p.add_argument(
        "--threshold",
        help="keep only matches at or above this similarity (a number or REPORT.json@FAR)",
    )
    p.add_argument("--workers", type=int, default=0, help="processes reading and detecting")
    p.add_argument("--out", help="write every probe's matches to this .csv")
    p.add_argument("--show", type=int, default=20, help="probes printed (all go to --out; -1: all)")
    p.set_defaults(func=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    from lafslib.inference.matches import open_embeddings, search_report, write_matches

    embedder = None
    needs_model = any(not str(s).endswith(".npy") for s in (args.gallery, args.probe))
    if needs_model:
        if not args.model:
            raise ValueError("--model is needed to embed a folder or .rec (or give .npy files)")
        embedder = _embedder(args)
    gallery = open_embeddings(args.gallery, embedder, args.aligned, args.workers)
    probe = (
        gallery
        if _same_source(args.gallery, args.probe)
        else open_embeddings(args.probe, embedder, args.aligned, args.workers)
    )
    result = search_report(gallery, probe, args.k, args.index, args.threshold, args.device,
                           self_search=probe is gallery)  # fmt: skip
    limit = len(probe) if args.show < 0 else args.show
    for line in result.lines(limit):
        print(line)
    for line in result.summary():
        print(line)
    if args.out:
        write_matches(args.out, result)
        print(f"matches: {args.out}")
    return 0


def _same_source(a: str, b: str) -> bool:
    from pathlib import Path

    return Path(a).resolve() == Path(b).resolve()
