"""Shared small networks and hypothesis settings."""

from __future__ import annotations

import os
from typing import Iterator

import torch
from hypothesis import HealthCheck, settings
from torch import nn

settings.register_profile(
    "macattr",
    deadline=None,
    max_examples=int(os.environ.get("MACATTR_HYPOTHESIS_EXAMPLES", "20")),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("macattr")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def conv_net(seed: int, channels: int = 6, depth: int = 3, activation: type = nn.Tanh) -> nn.Sequential:
    """A plain image-to-image conv net, float64, (N, 3, H, W) → (N, 3, H, W)."""
    torch.manual_seed(seed)
    layers: list = [nn.Conv2d(3, channels, 3, padding=1), activation()]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), activation()]
    layers.append(nn.Conv2d(channels, 3, 3, padding=1))
    return nn.Sequential(*layers).double()


class ResidualNet(nn.Module):
    """Conv head, two residual blocks with a skip, conv tail: every path crosses ``head`` and ``tail``."""

    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(), nn.Conv2d(channels, channels, 1))
            for _ in range(2)
        )
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        for block in self.blocks:
            h = h + block(h)
        return self.tail(h)


def residual_net(seed: int) -> ResidualNet:
    torch.manual_seed(seed)
    return ResidualNet().double()


class Broken(Exception):
    """A batch that cannot be read."""


def failing_at(batches: list, at: int) -> Iterator:
    """``batches`` one by one, raising ``Broken`` instead of batch ``at``."""
    for index, batch in enumerate(batches):
        if index == at:
            raise Broken(f"batch {at} is unreadable")
        yield batch


def pytest_terminal_summary(terminalreporter) -> None:
    """How many documentation blocks ran, and which did not and why."""
    import sys

    module = sys.modules.get("test_docs_blocks")
    if module is None or not (module.RAN or module.SKIPPED):
        return
    terminalreporter.write_line(f"documentation blocks: {len(module.RAN)} ran, {len(module.SKIPPED)} not run")
    for line in module.SKIPPED:
        terminalreporter.write_line(f"  not run: {line}")
