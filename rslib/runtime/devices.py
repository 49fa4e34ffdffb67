"""Devices, one place: which device a job runs on (``auto``: the GPU SLURM assigned, else the CPU),
its name for provenance and cost records, a synchronize for timing on any device, and which errors
mean that the device ran out of memory (the loops that halve their batch then)."""

from __future__ import annotations

import torch


def device_name(dev) -> str:
    """``torch.cuda.get_device_name`` on CUDA, else the device type (``cpu``)."""
    import torch

    dev = torch.device(dev)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return dev.type


def synchronize(dev) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. Timers call it before reading the clock."""
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → the first CUDA device if one is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: What cuDNN and cuBLAS put in the plain ``RuntimeError`` they raise when allocating their own
#: workspace or handle fails: torch raises ``torch.OutOfMemoryError`` only for its caching
#: allocator's failures, but a convolution or matrix product that needs workspace memory on a
#: nearly full GPU fails with these instead, and a smaller batch cures both.
LIBRARY_ALLOCATION_FAILURES = ("CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says the device ran out of memory: ``torch.OutOfMemoryError``, or a
    ``RuntimeError`` naming one of :data:`LIBRARY_ALLOCATION_FAILURES`. Other CUDA errors (an
    illegal address, ``CUDNN_STATUS_EXECUTION_FAILED``) are not: retrying them could hide a fault."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(name in str(error) for name in LIBRARY_ALLOCATION_FAILURES)


def free_cached_memory(dev) -> None:
    """Return the CUDA caching allocator's free blocks to the device (after an out-of-memory error,
    before a retry with a smaller batch); a no-op on the CPU."""
    if torch.device(dev).type == "cuda":
        torch.cuda.empty_cache()
