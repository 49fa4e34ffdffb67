"""Tiny linear base classifiers on 1×4×4 inputs, shared by the ensemble tests, and a wrapper that
runs out of memory above a batch size, shared by the out-of-memory back-off tests."""

import torch
from torch import nn


def tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        # scaled weights make decisions noise-dependent (the rules then disagree on many
        # samples) while the biases keep some images certifiable at σ = 0.25
        model[1].weight.mul_(3.0)
        model[1].bias.copy_(torch.randn(3))
    return model.eval()


def caching_allocator_error(size: int) -> Exception:
    """The error torch's CUDA caching allocator raises when an allocation fails."""
    return torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {size} samples' activations")


def cudnn_workspace_error(size: int) -> Exception:
    """The plain RuntimeError a cuDNN convolution raises when its workspace allocation fails."""
    return RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")


class OutOfMemoryAbove(nn.Module):
    """``base`` that raises an out-of-memory error (by default as the CUDA caching allocator
    raises it) on any batch of more than ``limit`` inputs; records the batch sizes it classified."""

    def __init__(self, base: nn.Module, limit: int, error=caching_allocator_error):
        super().__init__()
        self.base, self.limit, self.error, self.batches = base, limit, error, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit:
            raise self.error(len(x))
        self.batches.append(len(x))
        return self.base(x)
