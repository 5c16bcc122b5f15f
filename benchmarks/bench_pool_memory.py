"""Pools of millions of records at flat memory: seconds to the first pretraining step and the
peak PSS of the whole process tree (main process + DataLoader workers), for `.rec` pools of
10k and 1M records with an NPZ landmark sidecar.

Usage: python benchmarks/bench_pool_memory.py [--sizes 10000 1000000] [--workers 4] [--steps 30]
           [--baseline DIR] [--baseline-pass-max N] [--work DIR]

Each pool repeats one real face (`../shared/data/celeba-112`, re-encoded as a ~3 KB JPEG) in
the insightface layout (100 images per identity) with its 5 landmarks in `landmarks5.npz`.
Two measurements per pool, each in a fresh process whose tree is sampled every 0.5 s (sum of
`Pss` in `/proc/PID/smaps` over the process and its descendants; also without the mappings of
shared libraries and of the Python executable, whose share moves with the number of other
processes on the machine that map them: that figure is stable on a shared machine):

- `lafs pretrain` (demo recipe, LAFS views, `data.num_workers` workers, 30 steps): seconds from
  the start of the command to its first optimizer step (`metrics.jsonl`), and peak PSS;
- a full pass: the pool opened as `lafs pretrain` opens it (`open_dataset`, sidecar found
  beside it), read by a DataLoader with the same workers until every record has been decoded
  once (shuffled batches of 256); peak PSS, and PSS at the end of the pass.

`--baseline DIR` runs the same measurements with another checkout of lafslib (e.g. the code
before this change: `git archive <commit> lafslib | tar -x -C DIR`), side by side in one run;
its full pass only for pools of at most `--baseline-pass-max` records (a pass over 1M records
takes long on a small machine).
The pools (a few GB for 1M records) are written under `--work` and deleted afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED_DATA, markdown_table, publish_result  # noqa: E402

DEMO = ROOT / "recipes" / "demo" / "pretrain_demo.yaml"
PER_IDENTITY = 100
MIB = 1 << 20


# ----------------------------------------------------------------------------- PSS sampling


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _pss(pid: int) -> tuple[int, int]:
    """Bytes of PSS of one process: all of it, and without the code of shared libraries and of
    the Python executable (the pages that other processes on the machine share, so that their
    number moves that share; the data files a process maps, like a memory-mapped sidecar, stay
    counted)."""
    total = own = 0
    exe = os.path.realpath(f"/proc/{pid}/exe")
    library = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line.startswith("Pss:"):
                kib = int(line.split()[1]) * 1024
                total += kib
                own += 0 if library else kib
            elif "-" in line.split(" ", 1)[0] and not line[0].isupper():
                path = line.split(maxsplit=5)[5].strip() if len(line.split()) > 5 else ""
                library = ".so" in Path(path).name or path == exe
    return total, own


def tree_pss(pid: int) -> tuple[int, int]:
    """Bytes of PSS of process ``pid`` and all its descendants (total, without libraries)."""
    total = own = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            t, o = _pss(p)
        except (OSError, ValueError, IndexError):
            continue
        total, own = total + t, own + o
        stack += _children(p)
    return total, own


class PssMonitor(threading.Thread):
    """Samples the PSS of a process tree every ``period`` seconds until stopped."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, int, int]] = []  # (time, total, without libraries)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pss, own = tree_pss(self.pid)
            if pss:
                self.samples.append((time.time(), pss, own))
            self._stop_event.wait(self.period)

    def peak(self, since: float = 0.0, until: float = float("inf")) -> tuple[int, int]:
        """Largest total and without-libraries PSS sampled between two times."""
        inside = [(p, o) for t, p, o in self.samples if since <= t <= until] or [(0, 0)]
        return max(p for p, _ in inside), max(o for _, o in inside)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# ----------------------------------------------------------------------------- pools


def one_face() -> tuple[bytes, np.ndarray]:
    """One real aligned face as a ~3 KB JPEG and its (5, 2) landmarks."""
    from PIL import Image

    from lafslib.landmarks.store import load_landmarks

    root = SHARED_DATA / "celeba-112"
    table = load_landmarks(root / "landmarks5.csv")
    key = next(iter(table))
    buf = io.BytesIO()
    Image.open(root / "images" / key).convert("RGB").save(buf, format="JPEG", quality=60)
    return buf.getvalue(), np.asarray(table[key], dtype=np.float32)


def build_pool(folder: Path, n: int, jpeg: bytes, points: np.ndarray) -> Path:
    """``folder/pool.rec`` (insightface layout, n images) and ``folder/landmarks5.npz``."""
    from lafslib.data.recordio import IRHeader, RecordWriter, pack_record
    from lafslib.landmarks.store import save_landmarks

    folder.mkdir(parents=True, exist_ok=True)
    identities = -(-n // PER_IDENTITY)
    first_id = n + 1
    rec = folder / "pool.rec"
    with RecordWriter(rec) as w:
        w.write(0, pack_record(IRHeader(2, np.array([first_id, first_id + identities]))))
        for key in range(1, n + 1):
            w.write(key, pack_record(IRHeader(0, float((key - 1) // PER_IDENTITY), key), jpeg))
        for c in range(identities):
            rng = np.array([1 + c * PER_IDENTITY, min(n, (c + 1) * PER_IDENTITY) + 1])
            w.write(first_id + c, pack_record(IRHeader(2, rng, first_id + c)))
    keys = np.arange(1, n + 1, dtype=np.int64)
    save_landmarks(folder / "landmarks5.npz", keys, np.broadcast_to(points, (n, 5, 2)))
    return rec


# ----------------------------------------------------------------------------- measurements


def _env(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "2"}


def _watch(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, PssMonitor, str]:
    t0 = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        monitor = PssMonitor(proc.pid)
        monitor.start()
        rc = proc.wait()
        monitor.stop()
    text = log.read_text()
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}):\n{text[-3000:]}")
    return t0, monitor, text


def measure_pretrain(code: Path, rec: Path, work: Path, workers: int, steps: int) -> dict:
    """`lafs pretrain` on the pool: seconds to the first step, peak PSS of the tree."""
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = {
        "run.output_dir": run_dir,
        "run.log_every": 1,
        "run.checkpoint_every": 1000,
        "run.max_steps": steps,
        "data.train": rec,
        "data.num_workers": workers,
        "views.kind": "lafs",
        "views.local_views": 4,
    }
    cmd = [sys.executable, "-m", "lafslib.cli", "pretrain", str(DEMO)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    t0, monitor, _ = _watch(cmd, _env(code), work / "pretrain.log")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = min(r["time"] for r in rows if r["step"] == 1)
    shutil.rmtree(run_dir, ignore_errors=True)
    peak, peak_own = monitor.peak(since=first)  # the workers run: no fork in flight
    return {
        "first_step_s": first - t0,
        "peak_pss_mib": peak / MIB,
        "peak_own_pss_mib": peak_own / MIB,
    }


def measure_pass(code: Path, rec: Path, work: Path, workers: int) -> dict:
    """A full pass over the pool by DataLoader workers: peak and final PSS of the tree."""
    cmd = [sys.executable, __file__, "--child-pass", str(rec), "--workers", str(workers)]
    _, monitor, text = _watch(cmd, _env(code), work / "pass.log")
    result = json.loads(text.strip().splitlines()[-1])
    # from the first batch (no fork in flight) to the end of the pass, not the teardown
    peak, peak_own = monitor.peak(result["first_batch_at"], result["held_until"])
    end, end_own = monitor.peak(result["pass_end"], result["held_until"])
    return {
        **result,
        "peak_pss_mib": peak / MIB,
        "end_pss_mib": end / MIB,
        "peak_own_pss_mib": peak_own / MIB,
        "end_own_pss_mib": end_own / MIB,
    }


def _small(sample: dict[str, Any]) -> tuple[int, float, float]:
    """What a worker sends back: the index, the image mean and the landmark sum."""
    return sample["index"], float(sample["image"].mean()), float(sample["landmarks"].sum())


def child_pass(rec: Path, workers: int, batch: int = 256) -> None:
    """Read every record of the pool once with ``workers`` DataLoader workers; print JSON."""
    import torch
    from torch.utils.data import DataLoader

    from lafslib.data import open_dataset

    t0 = time.perf_counter()
    ds = open_dataset(rec, transform=_small)
    n = len(ds)
    order = np.random.default_rng(0).permutation(n).astype(np.int32)
    batches = [order[lo : lo + batch] for lo in range(0, n, batch)]  # views: no copy
    loader = DataLoader(
        ds, batch_sampler=_BatchSampler(batches), num_workers=workers, prefetch_factor=2
    )
    seen = np.zeros(n, dtype=bool)
    first = first_at = None
    batches_left = iter(loader)  # not exhausted below: the workers stay alive for the last samples
    for _ in range(len(loader)):
        index, _, landmark_sum = next(batches_left)
        if first is None:
            first, first_at = time.perf_counter() - t0, time.time()
        seen[index.numpy()] = True
        assert bool(torch.isfinite(landmark_sum).all())
    total, pass_end = time.perf_counter() - t0, time.time()
    time.sleep(2.0)  # the PSS after the pass, workers alive, sampled meanwhile
    assert seen.all(), f"{int((~seen).sum())} records never read"
    out = {"records": n, "first_batch_s": first, "pass_s": total, "pass_end": pass_end,
           "first_batch_at": first_at}  # fmt: skip
    print(json.dumps({**out, "held_until": time.time()}))


class _BatchSampler:
    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches = batches

    def __iter__(self):
        for b in self.batches:
            yield b.tolist()

    def __len__(self) -> int:
        return len(self.batches)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--baseline", type=Path, default=None, help="another lafslib checkout")
    parser.add_argument("--baseline-pass-max", type=int, default=None, help="records")
    parser.add_argument("--work", type=Path, default=None, help="folder for the pools")
    parser.add_argument("--child-pass", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_pass is not None:
        child_pass(args.child_pass, args.workers)
        return
    codes = {"this change": ROOT}
    if args.baseline is not None:
        codes["before"] = args.baseline.resolve()
    jpeg, points = one_face()
    work = Path(tempfile.mkdtemp(prefix="lafs-pool-", dir=args.work))
    results: dict[str, dict[str, Any]] = {name: {} for name in codes}
    try:
        for n in args.sizes:
            t0 = time.perf_counter()
            rec = build_pool(work / f"pool{n}", n, jpeg, points)
            gib = rec.stat().st_size / (1 << 30)
            print(
                f"pool of {n:,} records: {gib:.2f} GiB, built in {time.perf_counter() - t0:.0f} s"
            )
            for name, code in codes.items():
                row = {"pretrain": measure_pretrain(code, rec, work, args.workers, args.steps)}
                limit = args.baseline_pass_max if name == "before" else None
                if limit is None or n <= limit:
                    row["pass"] = measure_pass(code, rec, work, args.workers)
                row["rec_gib"] = gib
                results[name][str(n)] = row
                print(name, n, json.dumps(row))
            shutil.rmtree(work / f"pool{n}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    publish(results, args, len(jpeg))


def publish(results: dict[str, dict[str, Any]], args: argparse.Namespace, jpeg_bytes: int) -> None:
    small, large = str(min(args.sizes)), str(max(args.sizes))

    def both(r: dict[str, float], key: str) -> str:
        return f"{r[key + '_pss_mib']:,.0f} ({r[key + '_own_pss_mib']:,.0f})"

    rows = []
    for name, by_n in sorted(results.items()):
        for n, r in by_n.items():
            p, f = r["pretrain"], r.get("pass")
            passed = [both(f, "peak"), both(f, "end"), round(f["pass_s"])] if f else ["-"] * 3
            rows.append(
                [name, f"{int(n):,}", round(p["first_step_s"], 1), both(p, "peak"), *passed]
            )
    table = markdown_table(
        ["code", "records", "first step s", "pretrain peak PSS MiB", "full pass peak PSS MiB",
         "PSS after the pass MiB", "pass s"], rows)  # fmt: skip
    mine = results["this change"]

    def delta(part: str, key: str) -> float:
        return mine[large][part][key] - mine[small][part][key]

    d_pass, d_pre = delta("pass", "peak_own_pss_mib"), delta("pretrain", "peak_own_pss_mib")
    ratio = mine[large]["pretrain"]["first_step_s"] / mine[small]["pretrain"]["first_step_s"]
    verdict = "met" if d_pass <= 64 and d_pre <= 64 and ratio <= 1.5 else "not met"
    load = os.getloadavg()[0]
    notes = (
        f"`.rec` pools of one real face (a {jpeg_bytes:,}-byte JPEG of `celeba-112`) repeated, "
        f"{PER_IDENTITY} images per identity, 5 landmarks per record in `landmarks5.npz`; "
        f"{args.workers} DataLoader workers. *first step*: seconds from starting `lafs pretrain` "
        f"(demo recipe, LAFS views, {args.steps} steps) to its first optimizer step; *pretrain "
        "peak PSS*: the peak over that run of the PSS summed over the process and its workers; "
        "*full pass*: the pool opened as pretraining opens it and read by the workers until "
        "every record was decoded once. PSS sampled every 0.5 s once the workers run (from the "
        "first step or batch: while a worker forks, reading the parent's and then the child's "
        "PSS counts shared pages twice), in parentheses without the "
        "code of shared libraries and of the Python executable (their share of PSS moves with "
        "the number of other processes mapping them: on a shared machine, tens of MiB from one "
        f"run to the next). Load average at the end of the run: {load:.1f} on "
        f"{os.cpu_count()} cores, so the seconds are slow and noisy. "
        f"Goal ({int(large):,} vs {int(small):,} records, this change, PSS without libraries): "
        f"peak PSS at most 64 MiB more (full pass: {d_pass:+.0f} MiB, pretrain: {d_pre:+.0f} "
        f"MiB) and first step at most 1.5x ({ratio:.2f}x): **{verdict}**."
    )
    data = {"results": results, "jpeg_bytes": jpeg_bytes, "workers": args.workers,
            "steps": args.steps, "per_identity": PER_IDENTITY}  # fmt: skip
    publish_result("pool_memory", "Pools of millions of records: memory and start-up", table,
                   data, notes)  # fmt: skip


if __name__ == "__main__":
    main()
