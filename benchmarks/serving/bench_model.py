"""The benchmark's models: the pytorch-predict template's architecture at two sizes, with one set of
weights per size shared by every server (each server loads the same file)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

#: features -> hidden -> hidden -> classes
SIZES = {"tiny": (64, 256, 10), "wide": (1024, 4096, 1024)}


class Classifier(nn.Module):
    """The same layers, under the same names, as the template's Classifier, so weights load in both."""

    def __init__(self, features: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def make_weights(size: str, path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(Classifier(*SIZES[size]).state_dict(), path)
    return path


def load_from_env() -> Classifier:
    """For the peer servers: BENCH_SIZE and BENCH_WEIGHTS say which model."""
    model = Classifier(*SIZES[os.environ["BENCH_SIZE"]])
    model.load_state_dict(torch.load(os.environ["BENCH_WEIGHTS"], map_location="cpu", weights_only=True))
    return model.eval()
