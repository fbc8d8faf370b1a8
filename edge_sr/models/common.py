"""Small building blocks shared by model families."""

from __future__ import annotations

from torch import nn


def make_act(name: str, channels: int) -> nn.Module:
    """Activation by name: prelu (per channel), relu, lrelu (0.2 / 0.1 as in the literature), linear."""
    if name == "prelu":
        return nn.PReLU(num_parameters=channels)
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "lrelu":
        return nn.LeakyReLU(0.1, inplace=False)
    if name == "lrelu02":
        return nn.LeakyReLU(0.2, inplace=False)
    if name in ("linear", "identity"):
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; choose from prelu, relu, lrelu, lrelu02, linear")
