"""One process or many: torchrun environment detection, gloo on CPU, nccl on GPU."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Imported before any process group exists, on purpose: its functions take
# ``group=group.WORLD`` as a default argument, evaluated at import. Imported after
# init_process_group (as PartialFC's lazy import did), that default pins the WORLD group for
# the life of the interpreter: destroy_process_group cannot free it, gloo's worker threads
# outlive it, and one that drops a finished collective's tensors during interpreter shutdown
# needs the GIL there and aborts the process ("terminate called without an active
# exception"). Imported here, the default is None (the current default group).
import torch.distributed.nn.functional  # noqa: F401

from lafslib.losses.collectives import all_gather_rows

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup",
    "teardown",
    "barrier",
    "all_reduce_mean",
    "all_reduce_max",
    "all_gather_rows",
    "broadcast_error",
    "wrap_ddp",
    "resolve_device",
]


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (logging and checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one rank exists."""
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when available, else ``cpu``."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={name} but CUDA is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) when present.

    The backend is nccl for CUDA devices and gloo otherwise. Without torchrun variables this is
    a single process and no process group is created.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, dev)


def cleanup() -> None:
    """Destroy the process group if one exists (no barrier: :func:`teardown` with
    ``clean=False``)."""
    teardown(clean=False)


def teardown(clean: bool = True) -> None:
    """End this rank's part of the job: wait for every rank at a barrier (no rank tears gloo
    down while another still talks to it), then destroy the process group.

    Args:
        clean: False after an error on this rank: no barrier (the other ranks may never
            reach it).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean and dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()
    # free the modules that still hold the group (DDP's reducer, in reference cycles) now, so
    # its worker threads are joined here and not during interpreter shutdown
    gc.collect()


def barrier() -> None:
    """Synchronise ranks (no-op on one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor across ranks (identity on one process)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def all_reduce_max(value: torch.Tensor) -> torch.Tensor:
    """Maximum of a tensor across ranks (identity on one process)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def broadcast_error(message: str | None) -> str | None:
    """Rank 0's error message (or None) on every rank, so a refusal on rank 0 stops all ranks
    with the same message instead of leaving them waiting in a collective."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return message


def wrap_ddp(
    module: torch.nn.Module, info: DistInfo, find_unused_parameters: bool = False
) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when the job has several ranks, else itself."""
    if not info.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )
