"""Top-k search of probe embeddings in a gallery, by cosine similarity.

Exact search multiplies blocks of probes by blocks of the gallery with torch and keeps a
running top-k, so memory stays bounded (``probe_chunk x gallery_chunk`` scores) whatever the
gallery's size, and a memory-mapped gallery of millions of rows is streamed from disk. With
``faiss`` installed, ``index="faiss"`` searches an inverted-file index instead (approximate,
for galleries beyond what exact search serves in time); ``"auto"`` takes it above
:data:`FAISS_ABOVE` gallery rows when faiss is importable.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import torch

__all__ = ["FAISS_ABOVE", "search", "search_exact", "search_faiss"]

FAISS_ABOVE = 5_000_000


def _block(array: np.ndarray, start: int, stop: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(array[start:stop], dtype=np.float32)).to(device)


@torch.no_grad()
def search_exact(
    gallery: np.ndarray,
    probes: np.ndarray,
    k: int = 5,
    exclude: np.ndarray | None = None,
    probe_chunk: int = 1024,
    gallery_chunk: int = 65536,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine similarity of unit rows), in chunks.

    Args:
        gallery: (G, D) unit rows (float32/float16; a memory map is read block by block).
        probes: (P, D) unit rows.
        k: neighbours per probe (at most G).
        exclude: (P,) gallery row each probe must not match (itself, in a self-search), or -1.
        probe_chunk: probe rows per block.
        gallery_chunk: gallery rows per block.
        device: where the products run.

    Returns:
        ``(scores (P, k) float32, indices (P, k) int64)``, best first; ties keep the lower
        gallery index first. Slots beyond the gallery hold -inf and -1.
    """
    if gallery.ndim != 2 or probes.ndim != 2 or gallery.shape[1] != probes.shape[1]:
        raise ValueError(
            f"gallery {gallery.shape} and probes {probes.shape} must be (N, D) of one width"
        )
    dev = torch.device(device)
    n_gal, n_pro = len(gallery), len(probes)
    k = max(1, int(k))
    best_s = torch.full((n_pro, k), -math.inf)
    best_i = torch.full((n_pro, k), -1, dtype=torch.int64)
    ex = None if exclude is None else torch.as_tensor(np.asarray(exclude), dtype=torch.int64)
    for g0 in range(0, n_gal, gallery_chunk):
        gal = _block(gallery, g0, g0 + gallery_chunk, dev)
        for p0 in range(0, n_pro, probe_chunk):
            pro = _block(probes, p0, p0 + probe_chunk, dev)
            sims = pro @ gal.T  # (p, g)
            if ex is not None:
                local = ex[p0 : p0 + probe_chunk].to(dev) - g0
                hit = (local >= 0) & (local < gal.shape[0])
                rows = torch.nonzero(hit).squeeze(1)
                sims[rows, local[rows]] = -math.inf
            kk = min(k, gal.shape[0])
            s, i = torch.topk(sims, kk, dim=1)
            cand_s = torch.cat([best_s[p0 : p0 + probe_chunk], s.cpu()], dim=1)
            cand_i = torch.cat([best_i[p0 : p0 + probe_chunk], i.cpu() + g0], dim=1)
            # stable order: higher score first, then lower gallery index
            key_i = torch.where(cand_i < 0, torch.iinfo(torch.int64).max, cand_i)
            order = torch.argsort(key_i, dim=1, stable=True)
            cand_s, cand_i = cand_s.gather(1, order), cand_i.gather(1, order)
            order = torch.argsort(-cand_s, dim=1, stable=True)[:, :k]
            best_s[p0 : p0 + probe_chunk] = cand_s.gather(1, order)
            best_i[p0 : p0 + probe_chunk] = cand_i.gather(1, order)
    best_i[torch.isinf(best_s)] = -1
    return best_s.numpy().astype(np.float32), best_i.numpy()


def search_faiss(
    gallery: np.ndarray,
    probes: np.ndarray,
    k: int = 5,
    exclude: np.ndarray | None = None,
    nprobe: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k with a faiss inverted-file index (``IVF{nlist},Flat`` on inner
    products, ``nlist`` about ``sqrt(G)``), trained on at most 64 rows per list, ``nprobe``
    lists searched per probe.

    Returns the same as :func:`search_exact`.
    """
    try:
        import faiss
    except ImportError:
        from lafslib.errors import LafsUserError

        raise LafsUserError(
            'the faiss index needs the faiss-cpu package: pip install "lafslib[search]" (or search '
            "exactly: --index exact)"
        ) from None
    dim, n_gal = gallery.shape[1], len(gallery)
    nlist = max(1, min(int(math.sqrt(n_gal)), n_gal // 39 or 1))
    index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    train = np.sort(rng.choice(n_gal, size=min(n_gal, 64 * nlist), replace=False))
    index.train(np.ascontiguousarray(gallery[train], dtype=np.float32))
    for g0 in range(0, n_gal, 262144):
        index.add(np.ascontiguousarray(gallery[g0 : g0 + 262144], dtype=np.float32))
    index.nprobe = min(nprobe, nlist)
    extra = 0 if exclude is None else 1
    scores, indices = index.search(np.ascontiguousarray(probes, dtype=np.float32), k + extra)
    if exclude is not None:
        keep = indices != np.asarray(exclude)[:, None]
        scores = np.stack([s[m][:k] for s, m in zip(scores, keep)])
        indices = np.stack([i[m][:k] for i, m in zip(indices, keep)])
    scores = np.where(indices < 0, -np.inf, scores).astype(np.float32)
    return scores, indices.astype(np.int64)


def search(
    gallery: np.ndarray,
    probes: np.ndarray,
    k: int = 5,
    exclude: np.ndarray | None = None,
    index: str = "auto",
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k gallery rows per probe: exact (:func:`search_exact`) or faiss
    (:func:`search_faiss`).

    Args:
        gallery: (G, D) unit rows (see :func:`search_exact`).
        probes: (P, D) unit rows.
        k: neighbours per probe.
        exclude: (P,) gallery row each probe must not match, or -1.
        index: ``exact``, ``faiss``, or ``auto`` (faiss beyond :data:`FAISS_ABOVE` rows when
            installed).
        device: where exact search runs.
    """
    if index not in ("auto", "exact", "faiss"):
        raise ValueError(f"index must be auto, exact or faiss, got {index!r}")
    use_faiss = index == "faiss" or (
        index == "auto"
        and len(gallery) > FAISS_ABOVE
        and importlib.util.find_spec("faiss") is not None
    )
    if use_faiss:
        return search_faiss(gallery, probes, k, exclude)
    return search_exact(gallery, probes, k, exclude, device=device)
