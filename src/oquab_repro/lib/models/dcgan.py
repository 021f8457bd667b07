"""DCGAN (Radford et al., 2016; thesis Appendix C): the generator/discriminator pair of §5.3.3.

The thesis uses 64×64 images: the generator maps 100-d noise through transposed 4×4 convolutions
with 8gf → 4gf → 2gf → gf → 3 channels (batch norm, ReLU, tanh out); the discriminator mirrors it
with df → 2df → 4df → 8df → 1 channels (LeakyReLU, batch norm, sigmoid). The number of doubling
blocks follows the image side (``log2(side) − 2``), so the mini profile's 32×32 images use the
same code with one block fewer (4gf → 2gf → gf → 3).
"""

from __future__ import annotations

import math

import torch
from torch import nn

NOISE_DIM = 100


def _blocks(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if image_size < 8 or 2 ** (n + 2) != image_size:
        raise ValueError(f"DCGAN image size must be a power of two ≥ 8, got {image_size}")
    return n


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02), zero biases."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """Noise ``(N, 100)`` → images ``(N, 3, S, S)`` in [-1, 1]."""

    def __init__(self, gf: int, image_size: int, noise_dim: int = NOISE_DIM):
        super().__init__()
        n = _blocks(image_size)
        widths = [gf * 2 ** (n - 1 - i) for i in range(n)]  # e.g. 8gf, 4gf, 2gf, gf for 64×64
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(noise_dim, widths[0], 4, 1, 0, bias=False),  # 1×1 → 4×4
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.noise_dim = noise_dim
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), self.noise_dim, 1, 1))


class Discriminator(nn.Module):
    """Images ``(N, 3, S, S)`` → one logit per image (the sigmoid lives in the loss, for stability)."""

    def __init__(self, df: int, image_size: int):
        super().__init__()
        n = _blocks(image_size)
        widths = [df * 2**i for i in range(n)]  # df, 2df, 4df, 8df for 64×64
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False), nn.Flatten(0)]  # 4×4 → 1
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
