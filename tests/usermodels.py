"""User model functions for ``model: tests.usermodels:<function>`` (tests/test_models_custom.py)."""

from __future__ import annotations

from torch import Tensor, nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(16, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def small_cnn(num_classes: int, dropout: float) -> nn.Module:
    """The documented signature: the function puts the dropout before its own head, the attribute ``head``."""
    return SmallCNN(num_classes, dropout)


class _Net(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out = nn.Linear(4, num_classes)  # no head/fc/classifier attribute: the last Linear is the head

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))


def tiny_net(num_classes: int) -> nn.Module:
    """``f(num_classes)``: hpo puts Dropout(dropout) before the head, the last Linear."""
    return _Net(num_classes)


def not_a_model(num_classes: int, dropout: float) -> str:
    return "a string"


NOT_CALLABLE = 3
