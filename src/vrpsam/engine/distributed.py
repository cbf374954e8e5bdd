"""Optional data parallelism: a thin layer over ``torch.distributed`` that is a no-op in a single process.

Launched with ``torchrun`` (environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), :func:`init_from_env` joins the process group: NCCL when the
work runs on CUDA, gloo otherwise, so everything also works on CPU-only machines. Without those
variables (a plain ``python`` or ``vrpsam`` call) every helper behaves as for one process of rank 0.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..errors import InputError

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def is_distributed() -> bool:
    """Whether a process group is up (``init_from_env`` joined one, or the caller did)."""
    return dist.is_available() and dist.is_initialized()


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in _ENV)


def init_from_env(device: str | torch.device = "cpu") -> bool:
    """Join the process group described by torchrun's variables; return whether running distributed.

    ``device``: where this process computes. For CUDA the backend is NCCL and the process is bound to
    ``cuda:LOCAL_RANK``; otherwise gloo. Does nothing (returns False) outside torchrun, and nothing
    new when a group is already up.
    """
    if is_distributed():
        return True
    if not launched_by_torchrun():
        return False
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank_ = int(os.environ["RANK"])
    except ValueError as exc:
        raise InputError(f"torchrun environment: RANK/WORLD_SIZE must be integers ({exc})") from None
    if world <= 1:
        return False
    if not dist.is_available():
        raise InputError("distributed launch: this torch build has no torch.distributed")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank_, world_size=world)
    return True


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0, and in a single process: the one that prints and writes files."""
    return rank() == 0


def process_device(device: str | torch.device) -> torch.device:
    """The device this process should use: a bare ``"cuda"`` becomes ``cuda:LOCAL_RANK``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank())
    return device


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place, and return it (unchanged in a single process).

    The tensor may live on any device: it is moved to where the backend needs it (CUDA for NCCL,
    CPU for gloo) and the result copied back.
    """
    if not is_distributed():
        return tensor
    backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    work = tensor if tensor.device == backend_device else tensor.to(backend_device)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if any."""
    if is_distributed():
        dist.destroy_process_group()
