"""The model families of the workloads, built from named options.

Every family takes the input shape and number of classes of its dataset, then keyword
options (``activation``, ``dropout``, ``batch_norm``, ``width``, ``depth`` where they make
sense). Activations come from ``optimizers.activations`` by name; dropout and batch
normalisation are this repository's layers (``optimizers.layers``), not torch.nn's.
Weights keep PyTorch's default initialisation, drawn from the global generator, which the
trainer seeds per trial.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optimizers.activations import build_activation
from optimizers.layers import BatchNorm1d, BatchNorm2d, Dropout
from services.workloads.datasets import noisy_quadratic_curvature


class QuadraticModel(nn.Module):
    """The parameters θ of the noisy quadratic model, initialised θ ~ N(0, I).

    ``forward(x)`` returns the residuals ``√h ⊙ (θ − x)`` so that the workload's loss
    ``½ Σ r²`` is the quadratic ``½ Σ_i h_i (θ_i − x_i)²``.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        (dim,) = input_shape
        self.theta = nn.Parameter(torch.randn(dim))
        curvature = torch.as_tensor(noisy_quadratic_curvature(dim), dtype=torch.float32)
        self.register_buffer("sqrt_curvature", curvature.sqrt())

    def forward(self, x: Tensor) -> Tensor:
        return self.sqrt_curvature * (self.theta - x)


class MLP(nn.Module):
    """Flatten → [Linear → BatchNorm1d? → activation → Dropout?] × depth → Linear.

    With batch norm the hidden linear layers have no bias (the norm's β replaces it).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: int,
        depth: int,
        activation: str,
        dropout: float,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        in_features = math.prod(input_shape)
        for _ in range(depth):
            layers.append(nn.Linear(in_features, width, bias=not batch_norm))
            if batch_norm:
                layers.append(BatchNorm1d(width))
            layers.append(build_activation(activation))
            if dropout > 0:
                layers.append(Dropout(dropout))
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class MNIST1DConvNet(nn.Module):
    """The convolutional baseline of the MNIST-1D paper (Greydanus 2020, "Scaling down Deep
    Learning", ``ConvBase``): three strided 1-D convolutions of ``width`` channels (kernel 5
    stride 2, then kernel 3 stride 2, twice; padding 1), each followed by BatchNorm1d? and the
    activation, then Dropout? and one linear layer to the classes. Input (N, L) sequences.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: int,
        activation: str,
        dropout: float,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        (length,) = input_shape
        layers: list[nn.Module] = []
        in_channels = 1
        for kernel in (5, 3, 3):
            layers.append(
                nn.Conv1d(in_channels, width, kernel, stride=2, padding=1, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(BatchNorm1d(width))
            layers.append(build_activation(activation))
            length = _conv_out(length, kernel, stride=2, padding=1)
            in_channels = width
        layers.append(nn.Flatten())
        if dropout > 0:
            layers.append(Dropout(dropout))
        layers.append(nn.Linear(width * length, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.unsqueeze(1))


class ConvNet(nn.Module):
    """A small image CNN (the shape of PyTorch's MNIST example): two blocks of
    Conv3×3 → BatchNorm2d? → activation → MaxPool2, with ``width`` then ``2·width`` channels,
    then Flatten → Dropout? → Linear(128) → activation → Dropout? → Linear to the classes.
    Input (N, C, H, W) images.
    """

    hidden_features = 128

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: int,
        activation: str,
        dropout: float,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        in_channels, height, breadth = input_shape
        layers: list[nn.Module] = []
        for out_channels in (width, 2 * width):
            layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(BatchNorm2d(out_channels))
            layers += [build_activation(activation), nn.MaxPool2d(2)]
            in_channels, height, breadth = out_channels, height // 2, breadth // 2
        layers.append(nn.Flatten())
        if dropout > 0:
            layers.append(Dropout(dropout))
        layers += [
            nn.Linear(in_channels * height * breadth, self.hidden_features),
            build_activation(activation),
        ]
        if dropout > 0:
            layers.append(Dropout(dropout))
        layers.append(nn.Linear(self.hidden_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class BasicBlock(nn.Module):
    """Two Conv3×3 → BatchNorm2d? layers with an identity shortcut; where the block halves the
    resolution the shortcut subsamples and zero-pads the new channels (He et al. 2016's
    option A, parameter-free)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, activation: str, batch_norm: bool
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=not batch_norm
        )
        self.norm1 = BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.act1 = build_activation(activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batch_norm)
        self.norm2 = BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.act2 = build_activation(activation)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act2(out + shortcut)


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. 2016 ("Deep Residual Learning for Image Recognition",
    §4.2): Conv3×3(width) → 3 stages of n basic blocks with width, 2·width, 4·width channels
    (stride 2 at the start of stages 2 and 3) → global average pool → Dropout? → Linear.
    ``depth = 6n + 2`` (20, 32, 44, 56, 110); ``width = 16`` is the paper's network
    (ResNet-20: 0.27 M parameters).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: int,
        depth: int,
        activation: str,
        dropout: float,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2 with n >= 1 (20, 32, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        in_channels = input_shape[0]
        stem: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            stem.append(BatchNorm2d(width))
        stem.append(build_activation(activation))
        self.stem = nn.Sequential(*stem)
        blocks: list[nn.Module] = []
        channels = width
        for stage in range(3):
            out_channels = width * 2**stage
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride, activation, batch_norm))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.blocks(self.stem(x)).mean(dim=(2, 3))
        return self.head(self.dropout(features))
