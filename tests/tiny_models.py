"""Tiny linear base classifiers on 1×4×4 inputs, shared by the ensemble tests."""

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
