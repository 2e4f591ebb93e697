"""Helpers shared by several test modules."""
import torch
from torch import nn


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and a head with unit-scale logits (the default head is
    initialised near zero, which would make any comparison vacuous)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
        head = model.decoder.head if hasattr(model, "decoder") else model.head
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.05)
        head.bias.copy_(torch.randn(head.bias.shape, generator=gen))
    return model.eval()
