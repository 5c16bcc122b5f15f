"""``lafs search`` as a library call: open the two sides, check they come from one model,
search, and report the matches (per probe: the k best gallery faces with their similarity)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lafslib.errors import DataError
from lafslib.inference.store import Embeddings, load_embeddings

__all__ = ["SearchResult", "open_embeddings", "search_report", "write_matches"]


def open_embeddings(
    source: str | os.PathLike[str],
    embedder: Any | None = None,
    aligned: bool | None = None,
    workers: int = 0,
) -> Embeddings:
    """An embeddings file (``.npy`` of ``lafs embed``), or a folder / ``.rec`` embedded now
    with ``embedder``.

    Raises:
        ValueError: a folder without an embedder, or a file embedded by another model than
            ``embedder``'s.
    """
    from lafslib.evaluation.identity import describe_identity, same_model

    if str(source).endswith(".npy"):
        emb = load_embeddings(source)
        recorded = emb.meta.get("model_id")
        mine = None if embedder is None else embedder.identity
        if recorded and mine and not same_model(recorded, mine):
            raise DataError(
                f"{source}: embedded by {describe_identity(recorded)}, not by "
                f"{describe_identity(mine)} (--model); embed both sides with one model"
            )
        return emb
    if embedder is None:
        raise ValueError(f"{source}: a folder or .rec needs --model to embed it")
    from lafslib.inference.collection import embed_in_memory

    return embed_in_memory(source, embedder, aligned, workers)


@dataclass
class SearchResult:
    """Matches of every probe row.

    Attributes:
        gallery: the gallery side.
        probe: the probe side.
        scores: (P, k) similarities, best first (-inf: no match).
        indices: (P, k) gallery rows (-1: no match).
        threshold: the threshold applied (None: none).
        self_search: the probe is the gallery (each row's own match left out).
    """

    gallery: Embeddings
    probe: Embeddings
    scores: np.ndarray
    indices: np.ndarray
    threshold: Any = None
    self_search: bool = False

    def _name(self, side: Embeddings, row: int) -> str:
        face = int(side.faces[row])
        return side.paths[row] + (f"#{face}" if face else "")

    def lines(self, limit: int) -> list[str]:
        """One line per probe (the first ``limit``): ``probe -> match (score), ...``."""
        out = []
        for p in range(min(limit, len(self.probe))):
            hits = [
                f"{self._name(self.gallery, int(i))} ({s:.4f})"
                for s, i in zip(self.scores[p], self.indices[p])
                if i >= 0
            ]
            out.append(f"{self._name(self.probe, p)} -> {', '.join(hits) or 'no match'}")
        if limit < len(self.probe):
            out.append(f"... {len(self.probe) - limit} more probes")
        return out

    def rank1_identity(self) -> tuple[int, int] | None:
        """``(probes whose best match has their identity, probes with an identity present in
        the gallery)``, identities being parent folders; None when either side has none."""
        gal, pro = self.gallery.labels(), self.probe.labels()
        if not any(gal) or not any(pro):
            return None
        known = set(gal)
        counted = [p for p in range(len(pro)) if pro[p] in known]
        hits = sum(
            1 for p in counted if self.indices[p, 0] >= 0 and gal[self.indices[p, 0]] == pro[p]
        )
        return hits, len(counted)

    def summary(self) -> list[str]:
        """Closing lines: sizes, threshold, rank-1 identity agreement."""
        k = self.scores.shape[1]
        lines = [
            f"searched {len(self.probe)} probe faces in {len(self.gallery)} gallery faces "
            f"(top {k}{', own row left out' if self.self_search else ''})"
        ]
        if self.threshold is not None:
            lines.append(f"threshold: {self.threshold.describe()}")
        rank1 = self.rank1_identity()
        if rank1 is not None and rank1[1]:
            hits, total = rank1
            lines.append(
                f"rank-1 identity (parent folder) match: {hits}/{total} ({100 * hits / total:.2f}%)"
            )
        return lines


def search_report(
    gallery: Embeddings,
    probe: Embeddings,
    k: int = 5,
    index: str = "auto",
    threshold: Any = None,
    device: str = "cpu",
    self_search: bool = False,
) -> SearchResult:
    """Search ``probe`` in ``gallery`` (:func:`~lafslib.inference.search.search`).

    Args:
        gallery: the gallery side.
        probe: the probe side (embedded by the same model: recorded identities must agree).
        k: matches per probe.
        index: ``auto``, ``exact`` or ``faiss``.
        threshold: matches below it are dropped (a number, ``REPORT.json@FAR`` of the same
            model, or a Threshold).
        device: where exact search runs.
        self_search: ``probe`` is ``gallery``: each row's own match is left out.

    Raises:
        DataError: the sides come from different models or have different widths.
    """
    from lafslib.evaluation.identity import describe_identity, same_model
    from lafslib.inference.search import search
    from lafslib.inference.thresholds import load_threshold

    ga, pa = gallery.meta.get("model_id"), probe.meta.get("model_id")
    if ga and pa and not same_model(ga, pa):
        raise DataError(
            f"gallery embedded by {describe_identity(ga)} but probe by {describe_identity(pa)}: "
            "embed both with one model"
        )
    if gallery.vectors.shape[1] != probe.vectors.shape[1]:
        raise DataError(
            f"gallery rows are {gallery.vectors.shape[1]}-d but probe rows "
            f"{probe.vectors.shape[1]}-d"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    exclude = np.arange(len(probe)) if self_search else None
    scores, indices = search(gallery.vectors, probe.vectors, k, exclude, index, device)
    resolved = None if threshold is None else load_threshold(threshold, ga or pa)
    if resolved is not None:
        below = scores < resolved.value
        scores, indices = np.where(below, -np.inf, scores), np.where(below, -1, indices)
    return SearchResult(gallery, probe, scores, indices, resolved, self_search)


def write_matches(path: str | os.PathLike[str], result: SearchResult) -> Path:
    """Write ``probe, probe_face, rank, gallery, gallery_face, similarity`` rows (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["probe", "probe_face", "rank", "gallery", "gallery_face", "similarity"])
        for p in range(len(result.probe)):
            for rank, (s, i) in enumerate(zip(result.scores[p], result.indices[p]), 1):
                if i < 0:
                    continue
                writer.writerow(
                    [
                        result.probe.paths[p],
                        int(result.probe.faces[p]),
                        rank,
                        result.gallery.paths[i],
                        int(result.gallery.faces[i]),
                        f"{float(s):.6f}",
                    ]
                )
    os.replace(tmp, path)
    return path
