"""Devices, one place: which device a job runs on (``auto``: the GPU SLURM assigned, else the CPU),
its name for provenance and cost records, and a synchronize for timing on any device."""

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
